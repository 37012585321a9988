"""The composition root of ``creator-monitor run``: build everything on an AsyncExitStack, run
the jobs, answer signals and systemd, and shut down in reverse order.

Owns lifecycle only: what a fetch or an alert does lives in service.fetch, service.alerting and
notify. Beside it: the start-up migration (``migration``), the interval jobs' scheduler
(``jobs``), the housekeeping jobs (``upkeep``) and how the daemon runs (``options``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import logging
import signal
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from datetime import timedelta

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from monitor.app import fetch_parts
from monitor.config import (
    Config,
    collector_paused,
    load_config,
    resolve_token,
    startup_problems,
)
from monitor.daemon import upkeep
from monitor.daemon.jobs import schedule_jobs, shift_jobs, tracked
from monitor.daemon.migration import migrate_on_start
from monitor.daemon.options import Options, system_clock
from monitor.errors import ConfigError, MonitorError, NotifyError
from monitor.notify.gate import delivery_gate
from monitor.notify.sender import Notifier
from monitor.ops.systemd import Notifier as SystemdNotifier
from monitor.ops.systemd import watchdog_interval, watchdog_loop
from monitor.ops.telemetry import HttpEndpoint, Telemetry, serve
from monitor.ops.wallclock import WallJumps
from monitor.policy import concurrency
from monitor.policy.budget import Budget, daily_left
from monitor.policy.rules import ACCOUNT_WIDE_CODES
from monitor.service.alerting.evaluation import Alerting
from monitor.service.fetching import cluster
from monitor.service.fetching.dispatch import Dispatcher, finish_or_cancel
from monitor.service.fetching.gate import ACCOUNT_HYSTERESIS, Meter
from monitor.service.fetching.reach import Reach, upstream_host
from monitor.service.fetching.slot_loading import load_slots, write_new_slots
from monitor.service.fetching.spill import Hold
from monitor.store import Store
from monitor.upstream.client import JustOneClient
from monitor.validation import raise_all

log = logging.getLogger(__name__)


class Daemon:
    """One running monitor process."""

    def __init__(self, config: Config, options: Options | None = None) -> None:
        self.config = config
        self.options = options or Options()
        self.identity = cluster.Identity.new(self.options.clock())
        self.instance = self.identity.id
        self._heartbeat: asyncio.Task[None] | None = None
        self._scheduler: AsyncIOScheduler
        self._stop = asyncio.Event()
        self.store: Store
        self.client: JustOneClient
        self.meter: Meter
        self.dispatcher: Dispatcher
        self.notifier: Notifier
        self.alerting: Alerting
        self.hold: Hold
        self.telemetry = Telemetry(refresh=self._refresh_telemetry)
        self.endpoint: HttpEndpoint | None = None
        self._sd = SystemdNotifier(self.options.environ)
        self.reach = Reach(upstream_host(config.api.base_url))
        #: account evaluations run one at a time, whether the tick or a pause transition asks
        self._account_lock = asyncio.Lock()
        self._account_tasks: set[asyncio.Task[None]] = set()
        #: scheduler jobs running now (``jobs.tracked``): a stop lets them end
        self._job_tasks: set[asyncio.Task[object]] = set()
        #: drains failed in a row (``_drain`` logs the first and the recovery)
        self._drains_failed = 0
        #: writing the schedule rows of series new at this start, after READY
        self._writing: asyncio.Task[None] | None = None

    def request_stop(self) -> None:
        self._stop.set()

    async def run(self) -> int:
        """Run until SIGTERM/SIGINT (or ``options.until``); 0 on an orderly stop."""
        sd = self._sd
        async with AsyncExitStack() as stack:
            stack.callback(sd.close)
            # what ``check`` checks beside the config (console tokens, templates), with its
            # code, before the database is touched; the API token is read by fetch_parts,
            # after the one-instance lock
            raise_all(startup_problems(self.config, self.options.environ, api_token=False))
            await migrate_on_start(self.config.storage.url, self.options.clock, self._sd)
            await self._build(stack)
            scheduler = self._scheduler = self._schedule_jobs()
            scheduler.start()
            stack.callback(lambda: scheduler.shutdown(wait=False))
            self._install_signals(stack)
            await self._start_watchdog(stack, sd)
            dispatching = asyncio.get_running_loop().create_task(self._dispatch(), name="dispatch")
            stack.push_async_callback(_cancel, dispatching)
            sd.ready(self.summary())
            self._writing = asyncio.get_running_loop().create_task(
                self._write_new_slots(), name="new schedule rows"
            )
            log.info(
                "running: %d series, budget %d/min and %d/day; instance %s",
                len(self.dispatcher.slots),
                self.config.budget.calls_per_minute,
                self.config.budget.daily_calls,
                self.instance,
            )
            await self._wait_for_stop()
            sd.stopping("stopping: finishing in-flight calls")
            # no round half way through a claim or a store probe may start a cycle after this
            await _cancel(dispatching)
            await self._shutdown(scheduler)
        return 0

    async def _write_new_slots(self) -> None:
        """The schedule rows of series new at this start (``slot_loading.write_new_slots``)."""
        try:
            written = await write_new_slots(self.dispatcher.slots, self.store)
        except MonitorError as exc:
            log.warning(
                "the first due times of new series are not all stored (%s); each fetch "
                "stores its own, and the next start places the rest again",
                exc,
            )
            return
        except Exception:  # a bug must not surface only as a crash at the stop
            log.exception("storing the first due times of new series failed")
            return
        if written:
            log.info("stored the first due times of %d new series", written)

    async def _build(self, stack: AsyncExitStack) -> None:
        # 100,000 creators make a million objects that live as long as the process: the
        # collector would walk them again and again while they are built (half a second)
        with collector_paused():
            clock = self.options.clock
            config = self.config
            sizer = concurrency.InFlightSizer.from_config(config)
            parts = await stack.enter_async_context(
                fetch_parts(
                    config,
                    clock=clock,
                    sleep=self.options.sleep,
                    monotonic=self.options.monotonic,
                    environ=self.options.environ,
                    sole_instance=True,
                    alerting=True,
                    observe=self._observe,
                    on_latency=sizer.observe,
                    max_connections=concurrency.pool_size(config),
                )
            )
            self.store, self.meter, fetcher = parts.store, parts.meter, parts.fetcher
            self.client = parts.client
            self.hold = parts.hold
            assert parts.alerting is not None
            self.alerting = parts.alerting
            # an account-wide error (601 …) and its end are told within seconds, not at the tick
            self.meter.on_pause_change = self._pause_changed
            # on a database of its own, the new series' schedule rows are written after READY
            # (``_write_new_slots``); other instances claim work from those rows: not then
            slots = await load_slots(config, self.store, clock(), write_new=self.store.shared)
            claims = None
            if self.store.shared:
                claims = cluster.Claims(self.store, self.instance, config.schedule.lease)
            self.dispatcher = Dispatcher(
                config, fetcher, self.store, slots, clock=clock, claims=claims, sizer=sizer
            )
            await self.dispatcher.evaluate_stored(parts.replayed)
            self._start_heartbeat(stack)
            self.notifier = self._make_notifier(config)
            stack.callback(lambda: self.notifier.close())  # noqa: PLW0108 - a reload swaps it
            if config.http.listen:
                from monitor.web.server import console_mount

                self.endpoint = await serve(
                    config.http.listen,
                    self.telemetry,
                    self._healthy,
                    health_timeout=self.options.health_timeout,
                    mount=await console_mount(config, stack, self.options.environ, clock),
                )
                stack.push_async_callback(self.endpoint.close)
        # what start-up read and dropped (rows, dicts of 100,000 entries) is free, but glibc
        # keeps the pages: hand them back to the system (a C library without the call: no-op)
        with contextlib.suppress(OSError, AttributeError, TypeError):
            ctypes.CDLL(None).malloc_trim(0)

    def _start_heartbeat(self, stack: AsyncExitStack) -> None:
        """The ``instances`` row and, on a shared database, the renewal of this instance's
        leases: every third of ``schedule.lease`` (at most every 30 s, for ``status``)."""
        every = min(self.config.schedule.lease / 3, timedelta(seconds=30))
        self._heartbeat = asyncio.get_running_loop().create_task(
            cluster.keep_alive(
                self.store,
                self.identity,
                self.options.clock,
                every=every,
                lease=self.config.schedule.lease,
                sleep=self.options.sleep,
            ),
            name="heartbeat",
        )
        stack.push_async_callback(_cancel, self._heartbeat)

    def _make_notifier(self, config: Config) -> Notifier:
        notifier = Notifier.from_config(
            self.store,
            config,
            owner=self.instance,
            environ=self.options.environ,
            gate=delivery_gate(config),
        )
        # a dead channel must not silence the others: run, say so once, dead-letter its messages
        for name, problem in notifier.problems.items():
            log.error(
                "channel %r: %s; its messages are dead-lettered until the config is fixed",
                name,
                problem,
            )
        return notifier

    def _schedule_jobs(self) -> AsyncIOScheduler:
        opts = self.options
        job = functools.partial(tracked, running=self._job_tasks, stop=self._stop)
        return schedule_jobs(
            drain=job(self._drain),
            account=job(self._evaluate_account),
            prune=job(self._prune),
            digest=job(self._digest),
            reports=job(self._reports),
            drain_every=opts.drain_every,
            evaluate_every=opts.evaluate_every,
            report_every=opts.report_every,
        )

    async def _dispatch(self) -> None:
        """Start due cycles, then nap until the next due time or a finished cycle.

        A loop of its own rather than an APScheduler job: it waits with ``options.sleep``, so
        the whole schedule runs on an injected clock in tests, and it wakes as soon as a slot
        in the pool frees up instead of on the next interval.
        """
        # APScheduler times its jobs by the system's wall clock, whatever ``options.clock`` is
        jumps = WallJumps(system_clock, time.monotonic)
        while not self._stop.is_set():
            step = jumps.check()
            if step:
                shift_jobs(self._scheduler, step)
            try:
                await self.dispatcher.step()
            except MonitorError as exc:  # the database refused a claim: try again next round
                log.error("dispatch failed: %s", exc)
            except Exception:  # a bug must not stop all fetching silently: log, keep going
                log.exception("dispatch failed")
            if self.options.until is not None and self.options.until():
                self.request_stop()
                return
            await self.dispatcher.nap(self.options.sleep, self.options.tick)

    async def _drain(self) -> None:
        """One drain; a failure is logged when drains start failing and once when they work
        again, not at every interval (a database locked for 40 s was 8 ERROR lines)."""
        try:
            await self.notifier.drain(self.options.clock())
        except MonitorError as exc:
            if not self._drains_failed:
                log.error("outbox drain failed: %s (said once until a drain works again)", exc)
            self._drains_failed += 1
            return
        if self._drains_failed:
            log.info("outbox drain working again after %d failed drain(s)", self._drains_failed)
            self._drains_failed = 0

    async def _evaluate_account(self) -> int:
        self._sd.status(self.summary())
        async with self._account_lock:
            try:
                account = await self.meter.account()
                return await self.alerting.evaluate_account(account)
            except MonitorError as exc:
                log.error("account rules not evaluated: %s", exc)
                return 0

    def _pause_changed(self, before: int | None, after: int | None) -> None:
        """The meter saw an account-wide pause begin or end: evaluate the account rules now,
        and send what they queued now (the drain would otherwise wait for its interval)."""
        if before not in ACCOUNT_WIDE_CODES and after not in ACCOUNT_WIDE_CODES:
            return  # a 302 slow-down is no account alert
        # an end is told once it held for ACCOUNT_HYSTERESIS (the meter shows the pause until
        # then): a pause that comes back within seconds stays one alert
        delay = 0.0 if after in ACCOUNT_WIDE_CODES else ACCOUNT_HYSTERESIS.total_seconds() + 0.1
        task = asyncio.get_running_loop().create_task(self._account_now(delay), name="account-now")
        self._account_tasks.add(task)
        task.add_done_callback(self._account_tasks.discard)

    async def _account_now(self, delay: float = 0.0) -> None:
        if delay > 0:
            await self.options.sleep(delay)
        if await self._evaluate_account():
            await self._drain()

    def _observe(self, code: int | str, billed: bool) -> None:
        """One upstream call ended: count it, stamp a success (code 0), follow reachability."""
        now = self.options.clock()
        self.telemetry.record_call(code, billed)
        if code == 0:
            self.telemetry.set_last_success(now)
        self.reach.observe(code != "transport", now)

    async def _refresh_telemetry(self) -> None:
        """Before each scrape: the gauges the daemon owns (counters are counted as calls end)."""
        gauge = await self.meter.gauge()
        self.telemetry.set_budget(
            tokens_left=gauge.tokens,
            daily_calls_left=daily_left(gauge.calls_today, gauge.daily_calls),
        )
        self.telemetry.set_paused(gauge.pause_code if gauge.paused else None)
        self.telemetry.set_inflight(self.meter.on_the_wire)
        self.telemetry.set_oldest_overdue(self.dispatcher.oldest_overdue(self.options.clock()))
        counts = await self.store.outbox_counts()
        self.telemetry.set_outbox(depth=counts["pending"], dead_letters=counts["dead"])

    async def _digest(self) -> None:
        await upkeep.queue_digest(self.config, self.store, self.options.clock)

    async def _reports(self) -> None:
        await upkeep.queue_reports(self.config, self.store, self.options.clock, self.instance)

    async def _prune(self) -> None:
        await upkeep.prune(self.config, self.store, self.options.clock)

    async def _healthy(self) -> bool:
        # a real write (the budget row, unchanged): a database that only reads is not healthy;
        # a StoreError raised here becomes the one-line reason in the 503 body
        if self._stop.is_set():
            return True
        await self.meter.persist()
        if self.hold.waiting:  # paid answers still wait for the database
            raise self.hold.refusal()
        if (unreachable := self.reach.problem()) is not None:
            raise MonitorError(unreachable)
        return True

    async def _start_watchdog(self, stack: AsyncExitStack, sd: SystemdNotifier) -> None:
        interval = watchdog_interval(self.options.environ)
        if interval is None:
            return
        task = asyncio.get_running_loop().create_task(watchdog_loop(sd, interval, lambda: True))

        async def cancel() -> None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

        stack.push_async_callback(cancel)

    def _install_signals(self, stack: AsyncExitStack) -> None:
        loop = asyncio.get_running_loop()
        handlers: dict[signal.Signals, Callable[[], object]] = {
            signal.SIGTERM: self.request_stop,
            signal.SIGINT: self.request_stop,
            signal.SIGHUP: lambda: loop.create_task(self.reload()),
        }
        for sig, handler in handlers.items():
            try:
                loop.add_signal_handler(sig, handler)
            except (NotImplementedError, RuntimeError):  # not the main thread (tests)
                continue
            stack.callback(loop.remove_signal_handler, sig)

    async def reload(self) -> bool:
        """SIGHUP: load the config again; an invalid one is logged and the old one kept."""
        path = self.options.config_path
        if path is None:
            log.warning("reload ignored: no config file")
            return False
        self._sd.reloading("reloading the config")
        try:
            config = load_config(path)
            raise_all(startup_problems(config, self.options.environ, api_token=False))
            token = resolve_token(config, self.options.environ)  # a renewed token_file
            notifier = self._make_notifier(config)  # channel URLs must work before we switch
        except (ConfigError, NotifyError) as exc:
            log.error("reload rejected, keeping the running config: %s", exc)
            self._sd.ready(f"reload rejected; {self.summary()}")
            return False
        await upkeep.start_new_reports(
            self.config, config, self.store, self.options.clock, self.instance
        )
        self.config = config
        self.client.use_token(token)
        self.meter.use_token(token.get_secret_value())
        if self.meter.token_changed():
            log.info("the API token changed since the account pause began: trying it now")
        self.meter.with_budget(Budget.from_config(config))
        self.alerting.reconfigure(config)
        self.notifier.close()
        self.notifier = notifier
        slots = await load_slots(config, self.store, self.options.clock())
        self.dispatcher.reconfigure(config, slots)
        log.info("config reloaded: %d series", len(slots))
        self._sd.ready(self.summary())
        return True

    async def _wait_for_stop(self) -> None:
        await self._stop.wait()

    async def _shutdown(self, scheduler: AsyncIOScheduler) -> None:
        """Calls on the wire get ``schedule.grace``; then at most 5 s each for the new series'
        schedule rows (else the next start places them again), owed rules and a running job,
        and 10 s for the outbox: under systemd's TimeoutStopSec=60 at the default grace."""
        scheduler.pause()
        self.dispatcher.stop_accepting()
        cancelled = await self.dispatcher.wait_idle(self.config.schedule.grace.total_seconds())
        if cancelled:
            log.warning("stopped with %d calls abandoned after the grace period", cancelled)
        if self._writing is not None:
            await finish_or_cancel([self._writing], 5)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                await self.dispatcher.evaluate_owed_now()
        owed = self.dispatcher.owed_creators()
        if owed:
            log.warning(
                "stopped with the rules of %d creators not run (the database refused them); "
                "they run at each one's next fetch",
                owed,
            )
        # a drain or a report half way through ends, or is cut short before the store closes
        await finish_or_cancel(set(self._job_tasks), 5)
        for task in list(self._account_tasks):  # an end still in its hysteresis: told next start
            await _cancel(task)
        if self._heartbeat is not None:
            await _cancel(self._heartbeat)
        with contextlib.suppress(MonitorError):  # leases given back now, not at their expiry
            await self.store.retire_instance(self.instance)
        with contextlib.suppress(MonitorError, TimeoutError):
            # a flush: groups still waiting for group_wait or group_interval go now
            await asyncio.wait_for(
                self.notifier.drain(self.options.clock(), flush=True), timeout=10
            )
        log.info("stopped")

    def summary(self) -> str:
        """The one-line STATUS systemd shows."""
        pause = self.meter.hard_pause(self.options.clock())
        return (
            f"{len(self.dispatcher.slots)} series, {self.meter.on_the_wire} calls in flight, "
            f"{self.dispatcher.completed} fetches done" + (f"; {pause}" if pause else "")
        )


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def run_daemon(config: Config, options: Options) -> int:
    return asyncio.run(Daemon(config, options).run())
