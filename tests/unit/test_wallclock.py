"""Steps of the wall clock: noticed against a monotonic clock, and what moves with them (the
budget's stamps but not a 303's midnight; APScheduler's interval jobs)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from monitor.daemon.jobs import shift_jobs
from monitor.ops.wallclock import WallJumps
from monitor.policy.budget import QUOTA_EXCEEDED, BudgetPolicy

T0 = datetime(2025, 12, 11, 8, 0, tzinfo=UTC)
ZONE = ZoneInfo("Asia/Shanghai")


class Clocks:
    def __init__(self) -> None:
        self.wall = T0
        self.steady = 1000.0

    def elapse(self, seconds: float) -> None:
        self.wall += timedelta(seconds=seconds)
        self.steady += seconds


def test_a_step_is_reported_once_and_elapsed_time_is_not_a_step() -> None:
    clocks = Clocks()
    jumps = WallJumps(lambda: clocks.wall, lambda: clocks.steady)
    clocks.elapse(3600)
    assert jumps.check() == timedelta(0)
    clocks.wall -= timedelta(hours=1)
    clocks.elapse(5)
    assert jumps.check() == -timedelta(hours=1)
    assert jumps.check() == timedelta(0)
    clocks.wall += timedelta(days=1)
    assert jumps.check() == timedelta(days=1)


def test_slew_within_the_tolerance_is_not_a_step() -> None:
    clocks = Clocks()
    jumps = WallJumps(lambda: clocks.wall, lambda: clocks.steady)
    clocks.elapse(3600)
    clocks.wall += timedelta(seconds=1.8)  # an hour of the steepest NTP slew
    assert jumps.check() == timedelta(0)


def test_the_bucket_window_and_probe_move_but_a_303_keeps_its_midnight() -> None:
    budget = BudgetPolicy(calls_per_minute=30, burst=5, daily_calls=100, zone=ZONE)
    state = budget.initial(T0)
    for k in range(5):
        state = budget.spend(state, T0 + timedelta(seconds=k))
    blocked = budget.on_result(state, 601, T0 + timedelta(seconds=5))
    step = -timedelta(hours=1)
    moved = budget.shifted(blocked, step)
    assert moved.refilled_at == blocked.refilled_at + step
    assert moved.recent == tuple(t + step for t in blocked.recent or ())
    assert moved.paused_until == (blocked.paused_until or T0) + step
    # waits are the same, measured from the stepped clock
    assert budget.acquire_delay(moved, T0 + timedelta(seconds=6) + step) == budget.acquire_delay(
        blocked, T0 + timedelta(seconds=6)
    )
    quota = budget.on_result(state, QUOTA_EXCEEDED, T0 + timedelta(seconds=5))
    assert budget.shifted(quota, step).paused_until == quota.paused_until


def test_a_state_stamped_in_the_future_is_rebased_to_now() -> None:
    budget = BudgetPolicy(calls_per_minute=30, burst=5, daily_calls=100, zone=ZONE)
    later = budget.spend(budget.initial(T0 + timedelta(hours=1)), T0 + timedelta(hours=1))
    rebased = budget.rebased(later, T0)
    assert rebased.refilled_at == T0
    assert rebased.recent == (T0,)
    assert budget.rebased(rebased, T0 + timedelta(seconds=1)) == rebased  # the past: untouched


async def test_interval_jobs_keep_their_pace_after_a_step() -> None:
    scheduler = AsyncIOScheduler(timezone=UTC)
    ran: list[str] = []

    async def job() -> None:
        ran.append("drain")

    scheduler.add_job(job, "interval", seconds=3600, id="drain", coalesce=True)
    scheduler.start()
    try:
        planned = scheduler.get_job("drain").next_run_time
        # as if the clock had been an hour ahead when the job was planned: it would wait 2 h
        shift_jobs(scheduler, timedelta(hours=1))
        assert scheduler.get_job("drain").next_run_time == planned + timedelta(hours=1)
        # a step back that leaves the next run in the past runs it now, once
        shift_jobs(scheduler, -timedelta(hours=3))
        for _ in range(100):
            if ran:
                break
            await asyncio.sleep(0.02)
        assert ran == ["drain"]
        assert scheduler.get_job("drain").next_run_time > datetime.now(UTC)
    finally:
        scheduler.shutdown(wait=False)
