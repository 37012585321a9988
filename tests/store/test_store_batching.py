"""The store's batched paths on both backends: answers that finish together share one commit
(and all fall back to the hold when it fails), a creator's rule inputs come in one read, and
SQLite statements run in one trip to aiosqlite's thread."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import date, timedelta
from typing import Any

import aiosqlite
import pytest
import pytest_asyncio
from sqlalchemy import event, text
from support.store import CREATORS, T0, FakeClock, make_series

from monitor.errors import StoreError
from monitor.model import AlertState, DateType, Phase, Severity, Variant
from monitor.store import FetchRecord, Store, migrate
from monitor.store.ledger import BudgetRow, LedgerDay, count_ledger

V30 = Variant()
V90 = Variant(date_type=DateType.DAY_90)


def _answer(creator_id: int, n: int, variant: Variant = V30) -> FetchRecord:
    return FetchRecord(
        creator_id,
        variant,
        started_at=T0 + timedelta(seconds=n),
        http_status=200,
        code=0,
        billed=True,
        data=make_series(date(2025, 11, 1), 30, read0=n),
        raw_body="{}",
        attempt_id=f"attempt-{n}",
    )


def _count_commits(store: Store) -> list[int]:
    commits = [0]

    @event.listens_for(store._engine.sync_engine, "commit")
    def _on_commit(_conn: Any) -> None:
        commits[0] += 1

    return commits


async def test_answers_that_finish_together_share_one_commit(store: Store) -> None:
    ids = await store.sync_creators(CREATORS)
    a, b = (ids[c.user_id] for c in CREATORS)
    commits = _count_commits(store)
    answers = [_answer(a, 1), _answer(b, 2), _answer(a, 3, V90), _answer(b, 4, V90)]
    fetch_ids = await asyncio.gather(*(store.record_fetch(r) for r in answers))
    assert commits[0] == 1
    assert len(set(fetch_ids)) == 4
    async with store._read() as conn:
        rows = (await conn.execute(text("SELECT id, attempt_id FROM fetches"))).all()
        points = await conn.scalar(text("SELECT count(*) FROM daily_metrics"))
    assert dict(rows) == {fid: r.attempt_id for fid, r in zip(fetch_ids, answers, strict=True)}
    assert points == 4 * 30
    # one after the other, each is a group of its own
    await store.record_fetch(_answer(a, 5))
    await store.record_fetch(_answer(b, 6))
    assert commits[0] == 3


async def test_a_failed_group_fails_every_answer_in_it(store: Store) -> None:
    ids = await store.sync_creators(CREATORS)
    a = ids[CREATORS[0].user_id]
    answers = [_answer(a, 1), _answer(999, 2), _answer(a, 3, V90)]  # 999: no such creator
    results = await asyncio.gather(
        *(store.record_fetch(r) for r in answers), return_exceptions=True
    )
    assert all(isinstance(r, StoreError) for r in results)  # each caller holds its own answer
    async with store._read() as conn:
        assert await conn.scalar(text("SELECT count(*) FROM fetches")) == 0
    # the next group is written as usual
    assert await store.record_fetch(_answer(a, 4)) > 0


async def test_a_cancelled_caller_still_has_its_answer_stored(store: Store) -> None:
    ids = await store.sync_creators(CREATORS)
    a = ids[CREATORS[0].user_id]
    waiting = asyncio.ensure_future(store.record_fetch(_answer(a, 1)))
    await asyncio.sleep(0)  # handed over
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await store.close()  # waits for the group already handed over
    async with store._read() as conn:
        assert await conn.scalar(text("SELECT count(*) FROM fetches")) == 1


async def test_rule_inputs_match_the_reads_one_by_one(store: Store, clock: FakeClock) -> None:
    ids = await store.sync_creators(CREATORS)
    a, b = (ids[c.user_id] for c in CREATORS)
    await store.record_fetches([_answer(a, 1), _answer(a, 2, V90), _answer(b, 3)])
    scope = CREATORS[0].user_id
    firing = AlertState(
        rule="low",
        scope=scope,
        severity=Severity.WARNING,
        state=Phase.FIRING,
        creator_id=a,
        variant=V30.label,
        fired_at=T0,
    )
    old = AlertState(
        rule="low",
        scope=scope,
        severity=Severity.WARNING,
        state=Phase.RESOLVED,
        creator_id=a,
        variant=V90.label,
        resolved_at=T0,
    )
    newer = AlertState(
        rule="low",
        scope=scope,
        severity=Severity.INFO,
        state=Phase.RESOLVED,
        creator_id=a,
        variant=V90.label,
        resolved_at=T0 + timedelta(hours=1),
    )
    for alert in (firing, old, newer):
        assert await store.commit_transition(alert, [], now=T0, expect=None)
    since = date(2025, 11, 10)
    inputs = await store.rule_inputs(a, scope, [V30, V90], since, ["low", "other"])
    for variant in (V30, V90):
        one_by_one = tuple(p for _, p in await store.series(a, variant, since))
        assert inputs.series[variant] == one_by_one
        assert one_by_one  # the day cut left some
        for rule in ("low", "other"):
            alone = await store.load_alert(rule, scope, variant.label)
            assert inputs.alert(rule, variant.label) == alone
    assert inputs.alert("low", V90.label) is not None
    assert inputs.alert("low", V90.label).severity is Severity.INFO  # the newest resolved one
    nothing = await store.rule_inputs(b, CREATORS[1].user_id, [V90], since, [])
    assert nothing.series == {V90: ()}
    assert nothing.alerts == {}


@pytest_asyncio.fixture
async def sqlite_store(sqlite_url: str, clock: FakeClock) -> AsyncIterator[Store]:
    """The aiosqlite trips are SQLite's alone: this test runs there, not skipped on PostgreSQL."""
    await migrate.upgrade(sqlite_url)
    async with Store.open(sqlite_url, clock=clock) as opened:
        yield opened


def _assert_write_locked(path: str) -> None:
    """Another connection cannot take SQLite's write lock on ``path`` now."""
    other = sqlite3.connect(path, timeout=0)
    try:
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            other.execute("BEGIN IMMEDIATE")
    finally:
        other.close()


@contextmanager
def _counting_trips(worker: Any) -> Iterator[list[int]]:
    """Count the calls queued to aiosqlite's thread for ``worker`` (its connection)."""
    trips = [0]
    queue = worker._tx
    put = queue.put_nowait

    class Counting:
        def put_nowait(self, item: Any) -> None:
            trips[0] += 1
            put(item)

        def __getattr__(self, name: str) -> Any:
            return getattr(queue, name)

    worker._tx = Counting()
    try:
        yield trips
    finally:
        worker._tx = queue


@contextmanager
def _counting_every_trip(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Count the calls queued to aiosqlite's thread, on every connection."""
    trips = [0]
    run = aiosqlite.Connection._execute

    async def counted(self: aiosqlite.Connection, fn: Any, *args: Any, **kwargs: Any) -> Any:
        trips[0] += 1
        return await run(self, fn, *args, **kwargs)

    with monkeypatch.context() as patched:
        patched.setattr(aiosqlite.Connection, "_execute", counted)
        yield trips


async def test_sqlite_statements_take_one_trip_each(sqlite_store: Store) -> None:
    store = sqlite_store
    ids = await store.sync_creators(CREATORS)
    async with store._read() as conn:
        raw = await conn.get_raw_connection()
        with _counting_trips(raw.driver_connection) as trips:
            for _ in range(10):
                found = await conn.scalar(
                    text("SELECT id FROM creators WHERE user_id = :u"),
                    {"u": CREATORS[0].user_id},
                )
                assert found == ids[CREATORS[0].user_id]
    assert trips[0] == 10  # one trip per statement, the BEGIN going with the first (was four)


async def test_sqlite_spend_is_two_trips_and_holds_the_lock(
    sqlite_store: Store, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The spend's BEGIN IMMEDIATE goes with its locking read, its ledger count and bucket
    with its commit; the write lock is held from that first statement on."""
    store = sqlite_store
    day = LedgerDay("2025-11-20", T0, T0 + timedelta(days=1), T0)
    initial = BudgetRow(tokens=5.0, refilled_at=T0)
    async with store.budget_txn(day, initial, now=T0):  # seeds the row
        pass
    path = sqlite_url.split("///", 1)[1]
    with _counting_every_trip(monkeypatch) as trips:
        async with store.budget_txn(day, initial, now=T0) as txn:
            assert trips[0] == 1
            _assert_write_locked(path)
            await txn.reserve()
            await txn.save(BudgetRow(tokens=4.0, refilled_at=T0), now=T0)
            assert trips[0] == 1  # the writes wait for the commit
        assert trips[0] == 2  # one trip: the count, the bucket and the COMMIT
    assert await store.ledger_day(day) == (1, 0)
    stored = await store.load_budget_state()
    assert stored is not None
    assert stored.tokens == 4.0


async def test_sqlite_waiting_writes_keep_their_order_and_go_with_a_rollback(
    sqlite_store: Store,
) -> None:
    """A write that waits is seen by the transaction's next statement; a rollback drops it."""
    store = sqlite_store
    day = LedgerDay("2025-11-20", T0, T0 + timedelta(days=1), T0)
    async with store._write(lock_with_first_statement=True) as conn:
        await count_ledger(conn, [(day.slot, day.label)], calls=2)
        assert await conn.scalar(text("SELECT sum(calls) FROM budget_calls")) == 2

    async def counted_then_failed() -> None:
        async with store._write(lock_with_first_statement=True) as conn:
            await count_ledger(conn, [(day.slot, day.label)], calls=5)
            raise RuntimeError("rolled back")

    with pytest.raises(RuntimeError):
        await counted_then_failed()
    assert await store.ledger_day(day) == (2, 0)


async def test_sqlite_a_plain_write_holds_the_lock_before_its_first_statement(
    sqlite_store: Store, sqlite_url: str
) -> None:
    """Code may count on the lock once a write begins (migrations do): only the writes that
    ask for it take the lock with their first statement."""
    path = sqlite_url.split("///", 1)[1]
    async with sqlite_store._write():
        _assert_write_locked(path)


async def test_sqlite_a_fetch_record_is_two_trips(
    sqlite_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fetches row (whose ids the rest need) goes with the BEGIN; the points, body,
    schedule and ledger rows go with the COMMIT; no ROLLBACK trip after it."""
    store = sqlite_store
    ids = await store.sync_creators(CREATORS)
    record = _answer(ids[CREATORS[0].user_id], 1)
    record = replace(record, billed_day="2025-11-20", billed_slot=T0)
    with _counting_every_trip(monkeypatch) as trips:
        await store.record_fetch(record)
    assert trips[0] == 2
    assert len(await store.series(record.creator_id, V30)) == 30
    assert await store.raw_body(1) == "{}"
    day = LedgerDay("2025-11-20", T0, T0 + timedelta(days=1), T0)
    assert await store.ledger_day(day) == (0, 1)
