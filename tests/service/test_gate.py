"""The one gate (``BudgetGate``) on both backends: every decision is one locked transaction on the
stored budget, so several meters (processes, instances) spend one bucket, one 60 s window and
one daily ledger; the day is counted in the configured zone, whatever zone it was counted in."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import pytest_asyncio
from support.store import (
    T0,
    FakeClock,
)

from monitor.errors import AccountBlocked, BudgetError, QuotaExceeded, StoreError
from monitor.policy.budget import BudgetPolicy
from monitor.service.fetching.gate import ACCOUNT_HYSTERESIS, BudgetGate
from monitor.store import Store, migrate

SHANGHAI = ZoneInfo("Asia/Shanghai")
NEW_YORK = ZoneInfo("America/New_York")


def _budget(
    per_minute: int = 10, burst: int = 5, daily: int = 1000, zone: ZoneInfo = SHANGHAI
) -> BudgetPolicy:
    return BudgetPolicy(calls_per_minute=per_minute, burst=burst, daily_calls=daily, zone=zone)


@pytest_asyncio.fixture
async def others(db_url: str, store: Store, clock: FakeClock) -> AsyncIterator[list[Store]]:
    """Two more stores on the same (migrated) database: two more processes."""
    opened = [Store.open(db_url, clock=clock) for _ in range(2)]
    try:
        yield opened
    finally:
        for s in opened:
            await s.close()


async def _meters(stores: list[Store], budget: BudgetPolicy, clock: FakeClock) -> list[BudgetGate]:
    return [await BudgetGate.open(budget, s, clock=clock) for s in stores]


async def _try(gate: BudgetGate, *, probe: bool = False) -> str:
    """``sent``, or the cap that refused the call now."""
    try:
        await gate.acquire(probe=probe, wait=False)
    except BudgetError as exc:
        return exc.cap
    gate.answered()
    return "sent"


async def test_three_processes_never_exceed_the_burst_nor_the_minute(
    store: Store, others: list[Store], clock: FakeClock
) -> None:
    meters = await _meters([store, *others], _budget(per_minute=10, burst=5), clock)
    outcomes = await asyncio.gather(*(_try(m) for m in meters * 4))
    assert outcomes.count("sent") == 5
    assert set(outcomes) - {"sent"} == {"calls_per_minute"}
    assert (await meters[0].reading()).calls_today == 5
    sent = [0] * 5
    for step in range(1, 200):
        clock.now = T0 + timedelta(seconds=step)
        if await _try(meters[step % 3]) == "sent":
            sent.append(step)
    # never more than 10 in any closed 60 s window (61 s with the daemon's margin), whoever sent
    assert max(sum(1 for t in sent if s <= t <= s + 60) for s in sent) == 10
    assert (await meters[1].reading()).calls_today == len(sent)


async def test_the_daily_cap_holds_across_processes_and_names_when_it_frees(
    store: Store, others: list[Store], clock: FakeClock
) -> None:
    meters = await _meters([store, *others], _budget(per_minute=600, burst=50, daily=7), clock)
    outcomes = await asyncio.gather(*(_try(m) for m in meters * 5))
    assert outcomes.count("sent") == 7
    assert set(outcomes) - {"sent"} == {"daily_calls"}
    with pytest.raises(BudgetError) as refused:
        await meters[2].acquire()
    # T0 is 10:00 in Shanghai on 2025-12-11: the cap frees up at the next local midnight
    assert refused.value.until == datetime(2025, 12, 12, tzinfo=SHANGHAI)
    assert str(refused.value) == (
        "daily_calls (7) used up for 2025-12-11 (Asia/Shanghai); "
        "frees up at 2025-12-12 00:00 Asia/Shanghai"
    )
    assert await store.ledger_label("2025-12-11") == (7, 0)
    assert meters[2].day_exhausted(T0)


async def test_a_zone_change_cannot_open_a_fresh_day(store: Store, clock: FakeClock) -> None:
    shanghai = await BudgetGate.open(_budget(daily=3, per_minute=600, burst=10), store, clock=clock)
    assert [await _try(shanghai) for _ in range(4)] == ["sent"] * 3 + ["daily_calls"]
    # the same instant is 2025-12-10 in New York: a fresh label, but the same calls
    new_york = await BudgetGate.open(
        _budget(daily=3, per_minute=600, burst=10, zone=NEW_YORK), store, clock=clock
    )
    assert await _try(new_york) == "daily_calls"
    assert (await new_york.reading()).calls_today == 3
    # New York's day ends at 05:00 UTC on the 11th: from then on its fresh day has room
    clock.now = datetime(2025, 12, 11, 5, 0, tzinfo=NEW_YORK)
    assert (await new_york.reading()).calls_today == 0
    assert await _try(new_york) == "sent"


async def test_a_pause_seen_by_one_process_pauses_all_and_one_probe_goes(
    store: Store, others: list[Store], clock: FakeClock
) -> None:
    budget = _budget()
    first, *rest = await _meters([store, *others], budget, clock)
    assert await _try(first) == "sent"
    await first.feedback(AccountBlocked("no balance", code=601), billed=False)
    assert first.state.pause_code == 601
    clock.advance(timedelta(seconds=1))
    paused = r"^calls paused: insufficient account balance \(code 601\)"
    with pytest.raises(BudgetError, match=paused):
        await rest[0].acquire()
    await rest[1].refresh()
    assert rest[1].hard_pause(clock()) is not None

    clock.now = T0 + budget.probe_every
    probes = await asyncio.gather(*(_try(m, probe=True) for m in [first, *rest] * 2))
    assert probes.count("sent") == 1
    await rest[1].feedback(None, billed=True)
    assert rest[1].state.pause_code is None
    assert await store.ledger_label("2025-12-11") == (2, 1)
    assert await _try(rest[0]) == "sent"


async def test_a_quota_pause_refuses_with_the_midnight_it_ends(
    store: Store, clock: FakeClock
) -> None:
    gate = await BudgetGate.open(_budget(), store, clock=clock)
    assert await _try(gate) == "sent"
    await gate.feedback(QuotaExceeded("quota", code=303), billed=False)
    with pytest.raises(BudgetError) as refused:
        await gate.acquire()
    assert refused.value.cap == "quota"
    assert refused.value.until == datetime(2025, 12, 12, tzinfo=SHANGHAI)
    assert "frees up at 2025-12-12 00:00 Asia/Shanghai" in str(refused.value)


async def test_status_reads_the_budget_without_writing(store: Store, clock: FakeClock) -> None:
    gate = await BudgetGate.open(_budget(), store, clock=clock)
    await gate.reading()
    assert await store.load_budget_state() is None  # opening and reading wrote nothing
    assert await _try(gate) == "sent"
    row = await store.load_budget_state()
    assert row is not None
    assert row.tokens == pytest.approx(4.0)


async def test_a_pause_whose_write_is_refused_still_holds_and_is_stored_later(
    tmp_path: Path, clock: FakeClock
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/h.db"
    await migrate.upgrade(url)
    async with Store.open(url, clock=clock, busy_timeout=timedelta(milliseconds=50)) as store:
        gate = await BudgetGate.open(_budget(), store, clock=clock)
        assert await _try(gate) == "sent"
        holder = sqlite3.connect(tmp_path / "h.db", isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        try:
            with pytest.raises(StoreError):
                await gate.feedback(QuotaExceeded("quota", code=303), billed=False)
            # the pause holds in this process although the database did not take it
            assert gate.hard_pause(clock()) is not None
        finally:
            holder.rollback()
            holder.close()
        with pytest.raises(BudgetError) as refused:
            await gate.acquire()
        assert refused.value.cap == "quota"
        await gate.persist()  # the next transaction that commits writes the pause
        other = await BudgetGate.open(_budget(), store, clock=clock)
        with pytest.raises(BudgetError, match="daily quota exceeded"):
            await other.acquire()


async def test_a_late_success_does_not_end_a_pause_and_a_short_end_stays_one_alert(
    store: Store, clock: FakeClock
) -> None:
    """Calls on the wire when the balance ran out: a success sent before the 601 comes back
    after it and leaves the pause alone; a pause that ends and comes back within the
    hysteresis shows to the account rules as never having ended."""
    budget = _budget()
    gate = await BudgetGate.open(budget, store, clock=clock)
    early = await gate.acquire(wait=False)
    late = await gate.acquire(wait=False)
    clock.advance(timedelta(seconds=1))
    await gate.feedback(AccountBlocked("no balance", code=601), billed=False, sent_at=late.sent_at)
    assert gate.state.pause_code == 601
    clock.advance(timedelta(milliseconds=100))
    await gate.feedback(None, billed=True, sent_at=early.sent_at)
    assert gate.state.pause_code == 601  # sent before the pause: says nothing of it
    assert (await gate.account()).pause_code == 601

    await gate.probe_now()  # ``resume``: the probe is due now, not in 15 minutes
    probe = await gate.acquire(probe=True, wait=False)
    await gate.feedback(None, billed=True, sent_at=probe.sent_at)
    assert gate.state.pause_code is None
    clock.advance(ACCOUNT_HYSTERESIS / 2)
    assert (await gate.account()).pause_code == 601  # ended moments ago: not told yet
    clock.advance(ACCOUNT_HYSTERESIS)
    assert (await gate.account()).pause_code is None


async def test_a_call_that_never_reached_a_server_gives_its_count_back(
    store: Store, clock: FakeClock
) -> None:
    gate = await BudgetGate.open(_budget(), store, clock=clock)
    ticket = await gate.acquire(wait=False)
    assert await store.ledger_label(ticket.day.label) == (1, 0)
    await gate.release(ticket)
    gate.answered()
    assert await store.ledger_label(ticket.day.label) == (0, 0)
    assert (await gate.account()).used_today == 0


async def test_a_caller_cancelled_while_its_call_is_counted_leaves_nothing_counted(
    store: Store, clock: FakeClock
) -> None:
    """A stop cancels the fetches still waiting at the gate. One cancelled while its spend is
    being written (the commit may already be done) must not leave a call counted that never
    went, nor one on the wire: cancelled at every point of the spend, nothing stays."""
    gate = await BudgetGate.open(_budget(per_minute=6000, burst=500), store, clock=clock)
    for step in range(60):
        caller = asyncio.ensure_future(gate.acquire())
        await asyncio.sleep(step * 0.0002)
        caller.cancel()
        (got,) = await asyncio.gather(caller, return_exceptions=True)
        if not isinstance(got, BaseException):  # let go before the cancel came: it never went
            await gate.release(got)
            gate.answered()
        assert gate.on_the_wire == 0, step
        assert (await gate.account()).used_today == 0, step
