"""Drill 5: the real BudgetGate (over a real SQLite ledger) and the cadence under wall-clock steps,
with true time measured apart: no burst in any real minute, no stall, no lost ledger day, no
slot served twice for one due time."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from drills.clock import JUMP_AT, START, budget, clock_drill, run
from monitor.service.fetching.gate import BudgetGate
from monitor.store import Store, migrate

pytestmark = pytest.mark.drills

FORWARD = timedelta(days=1)
BACK = -timedelta(hours=1)


async def test_a_steady_clock_is_the_baseline(tmp_path: Path) -> None:
    steady = await run(tmp_path, budget(), jump=timedelta(0), jump_at=1e12, duration=600)
    assert steady.max_in_minute() == 30
    assert steady.ledger == {"2025-12-11": len(steady.sends)}
    # 30 in each of the ten minutes, and the one the last wait let go at 600 s
    assert len(set(steady.served)) == len(steady.served) == 301
    assert steady.longest_gap() < 15


async def test_a_day_forward_loses_no_ledger_day_and_serves_each_due_once(
    tmp_path: Path,
) -> None:
    forward = await run(tmp_path, budget(), jump=FORWARD, jump_at=JUMP_AT, duration=600)
    # 23:45 + 5 min + a day is the next quota day: the calls split, none is dropped
    assert sum(forward.ledger.values()) == len(forward.sends)
    assert list(forward.ledger) == ["2025-12-11", "2025-12-12"]
    assert forward.ledger["2025-12-11"] == len([t for t in forward.sends if t < JUMP_AT])
    assert len(set(forward.served)) == len(forward.served)


async def test_a_day_forward_sends_no_burst(tmp_path: Path) -> None:
    # the bucket and the window move with the step: the real minute around it holds 30, not 34
    forward = await run(tmp_path, budget(), jump=FORWARD, jump_at=JUMP_AT, duration=600)
    assert forward.max_in_minute() == 30
    assert forward.longest_gap() < 15


async def test_an_hour_back_sends_no_burst_and_counts_the_wall_clock_day(tmp_path: Path) -> None:
    back = await run(tmp_path, budget(), jump=BACK, jump_at=JUMP_AT, duration=600)
    assert back.max_in_minute() <= 30
    assert back.ledger == {"2025-12-11": len(back.sends)}
    assert len(set(back.served)) == len(back.served)


async def test_an_hour_back_does_not_stall_due_work(tmp_path: Path) -> None:
    back = await run(tmp_path, budget(), jump=BACK, jump_at=JUMP_AT, duration=600)
    assert back.backlog_at_end > 0  # work was due all along...
    assert back.longest_gap() < 15  # ...and the budget kept sending it at its pace


async def test_a_restart_after_the_clock_went_back_is_not_frozen(tmp_path: Path) -> None:
    """The stored state is stamped an hour ahead of the wall clock the next start reads."""
    url = f"sqlite+aiosqlite:///{tmp_path}/restart.db"
    await migrate.upgrade(url)
    ahead = START + timedelta(hours=1)
    store = Store.open(url, clock=lambda: ahead)
    b = budget()
    first = await BudgetGate.open(b, store, clock=lambda: ahead)
    for _ in range(5):  # spend the burst at the later time
        await first.acquire()
    store2 = Store.open(url, clock=lambda: START)
    second = await BudgetGate.open(b, store2, clock=lambda: START)
    # the empty bucket refills from now on (2 s a token), not an hour from now
    assert second.state.refilled_at == START
    assert b.acquire_delay(second.state, START) == pytest.approx(2.0)
    await store.close()
    await store2.close()


async def test_the_drill_tallies_zero(tmp_path: Path) -> None:
    tally, _runs = await clock_drill(tmp_path, minutes=10)
    assert (tally.lost, tally.duplicates, tally.leaks, tally.budget_breaches) == (0, 0, 0, 0)
    assert tally.notes == []
