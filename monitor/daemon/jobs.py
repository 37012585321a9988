"""The daemon's interval jobs on APScheduler: when each runs, how a stop waits for one that is
running, and how they keep their pace when the wall clock is stepped."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from monitor.ops.wallclock import describe

#: the daemon's lines keep the one logger name they are known by
log = logging.getLogger("monitor.daemon")

Job = Callable[[], Awaitable[None]]


def schedule_jobs(
    *,
    drain: Job,
    account: Job,
    prune: Job,
    digest: Job,
    reports: Job,
    balance: Job,
    drain_every: float,
    evaluate_every: float,
    report_every: float,
    balance_tick: float,
) -> AsyncIOScheduler:
    """The scheduler of the daemon's jobs (not started): the outbox drain, the account rules,
    pruning, the daily digest, the scheduled reports and the balance reading (which looks
    every ``balance_tick`` seconds whether a reading is due: ``[account] balance_every``)."""
    scheduler = AsyncIOScheduler(timezone=UTC)
    common = {"max_instances": 1, "coalesce": True, "misfire_grace_time": None}
    scheduler.add_job(drain, "interval", seconds=drain_every, id="drain", **common)
    scheduler.add_job(account, "interval", seconds=evaluate_every, id="account", **common)
    scheduler.add_job(prune, "interval", hours=6, id="prune", **common)
    scheduler.add_job(digest, "interval", seconds=evaluate_every, id="digest", **common)
    scheduler.add_job(balance, "interval", seconds=balance_tick, id="balance", **common)
    scheduler.add_job(
        reports,
        "interval",
        seconds=report_every,
        id="reports",
        # a period that ended while the daemon was down is sent soon after start-up
        next_run_time=datetime.now(UTC) + timedelta(seconds=3),
        **common,
    )
    return scheduler


def tracked(
    func: Callable[[], Awaitable[object]],
    *,
    running: set[asyncio.Task[object]],
    stop: asyncio.Event,
) -> Job:
    """``func`` as a job whose run a stop waits for: APScheduler's shutdown cancels a
    coroutine job still running (a drain half way through a send) and logs a traceback.
    The job's task is in ``running`` while it runs; ``stop`` is set once the daemon stops."""

    @functools.wraps(func)
    async def job() -> None:
        task = asyncio.current_task()
        if task is not None:
            running.add(task)
        try:
            await func()
        except asyncio.CancelledError:
            if not stop.is_set():
                raise
            # the stop waited for it and then cut it short: said once, without a traceback
            log.warning("%s cut short by the stop", getattr(func, "__name__", "a job"))
        finally:
            if task is not None:
                running.discard(task)

    return job


def shift_jobs(scheduler: AsyncIOScheduler, step: timedelta) -> None:
    """Keep the interval jobs on elapsed time after the wall clock was stepped by ``step``.

    APScheduler 3 plans each run by the wall clock: after a step back of an hour the outbox
    drain, the account rules and the digest would all wait an hour; after a step forward every
    job would run at once. Moving each next run by the step keeps the pace they had.
    """
    for job in scheduler.get_jobs():
        if job.next_run_time is not None:
            job.modify(next_run_time=job.next_run_time + step)
    log.info("the wall clock was stepped %s; timers keep their pace", describe(step))
