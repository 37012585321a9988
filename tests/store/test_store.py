"""The store on both backends: fetches and points written whole, upserts, reads, errors."""

from __future__ import annotations

import asyncio
import sqlite3
from contextlib import closing
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import text
from support.store import (
    CREATORS,
    T0,
    FakeClock,
    load_sample,
    make_series,
    revise,
    schedule_rows,
)

from monitor.errors import SchemaOutOfDate, StoreError
from monitor.model import CoreData, DateType, Variant
from monitor.policy.budget import BudgetPolicy
from monitor.service.fetching.budget_view import ledger_day
from monitor.store import FetchRecord, Store, migrate

GATE_BUDGET = BudgetPolicy(
    calls_per_minute=30, burst=5, daily_calls=10, zone=ZoneInfo("Asia/Shanghai")
)

V30 = Variant()
V90 = Variant(date_type=DateType.DAY_90)


async def _rows(store: Store, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    """Plain SQL over the store's own engine: what a user with ``sqlite3``/``psql`` would see."""
    async with store._read() as conn:
        return [tuple(r) for r in await conn.execute(text(sql), params)]


async def _ok(store: Store, cid: int, data: CoreData, body: str | None = None, **kw: Any) -> int:
    return (
        await store.record_fetches(
            [
                FetchRecord(
                    cid,
                    kw.pop("variant", V30),
                    started_at=kw.pop("started_at", T0),
                    due_at=kw.pop("due_at", None),
                    latency_ms=850,
                    http_status=200,
                    code=0,
                    billed=True,
                    error=None,
                    data=data,
                    raw_body=body,
                    **kw,
                )
            ]
        )
    )[0]


async def test_sample_is_stored_whole(store: Store, data_dir: Path) -> None:
    ids = await store.sync_creators(CREATORS)
    core, body = load_sample(data_dir, "core_data_success_30d.json")
    fetch_id = await _ok(store, ids[CREATORS[0].user_id], core, body, due_at=T0)

    got = await _rows(
        store,
        "SELECT read, imp, engage, cpm, cpuv, third_user_num, fetch_id FROM daily_metrics "
        "WHERE date_key = '2025-12-10'",
    )
    assert got == [(7100, 118751, 478, 253.89259879916804, None, 0, fetch_id)]
    assert await _rows(
        store, "SELECT count(*), min(date_key), max(date_key) FROM daily_metrics"
    ) == [(30, "2025-11-11", "2025-12-10")]
    fetch = await _rows(
        store,
        "SELECT business, note_type, date_type, advertise, latency_ms, http_status, code, "
        "billed, error, points FROM fetches WHERE id = :id",
        id=fetch_id,
    )
    assert fetch == [
        ("DAILY_NOTE", "PHOTO_TEXT_AND_VIDEO", "DAY_30", "ALL", 850, 200, 0, True, None, 30)
    ]
    assert await store.raw_body(fetch_id) == body


async def test_same_response_twice_gives_the_same_rows(store: Store, data_dir: Path) -> None:
    cid = (await store.sync_creators(CREATORS))[CREATORS[0].user_id]
    core, body = load_sample(data_dir, "core_data_success_30d.json")
    await _ok(store, cid, core, body)
    first = await _rows(
        store,
        "SELECT date_key, imp, read, engage, cpm, cpe, cpv FROM daily_metrics ORDER BY date_key",
    )
    second_id = await _ok(store, cid, core, body, started_at=T0 + timedelta(hours=12))
    again = await _rows(
        store,
        "SELECT date_key, imp, read, engage, cpm, cpe, cpv FROM daily_metrics ORDER BY date_key",
    )
    assert again == first
    assert len(again) == 30
    assert await _rows(store, "SELECT DISTINCT fetch_id FROM daily_metrics") == [(second_id,)]


async def test_revised_past_value_updates_and_missing_days_stay(store: Store) -> None:
    cid = (await store.sync_creators(CREATORS))[CREATORS[0].user_id]
    start = date(2025, 11, 1)
    await _ok(store, cid, make_series(start, 30))
    # next day: the window moved on, one old day is revised, three days are missing
    later = revise(
        make_series(start + timedelta(days=1), 30, read0=1001, skip=frozenset({3, 4, 5})),
        date(2025, 11, 10),
        read=4242,
    )
    await _ok(store, cid, later, started_at=T0 + timedelta(days=1))

    rows = dict(await _rows(store, "SELECT date_key, read FROM daily_metrics"))
    assert len(rows) == 31  # 30 old days + 1 new, none lost
    assert rows["2025-11-10"] == 4242  # revised
    assert rows["2025-11-01"] == 1000  # older than the new window: untouched
    assert rows["2025-11-05"] == 1004  # missing from the second response: kept as it was
    assert rows["2025-12-01"] == 1030  # the new day


async def test_cost_zero_is_stored_as_null(store: Store, data_dir: Path) -> None:
    cid = (await store.sync_creators(CREATORS))[CREATORS[1].user_id]
    core, body = load_sample(data_dir, "core_data_success_no_price.json")
    await _ok(store, cid, core, body)
    got = await _rows(
        store,
        "SELECT count(*), count(cpm), count(cpe), count(cpv), count(cpuv), min(read) "
        "FROM daily_metrics",
    )
    assert got[0][:5] == (len(core.daily), 0, 0, 0, 0)
    assert got[0][5] is not None


async def test_client_parser_and_store_agree(store: Store, data_dir: Path) -> None:
    client = pytest.importorskip("monitor.upstream.client")
    body = (data_dir / "core_data_success_30d.json").read_text(encoding="utf-8")
    result = client.parse_core_data(body)
    cid = (await store.sync_creators(CREATORS))[CREATORS[0].user_id]
    await _ok(store, cid, result.data, result.raw_body)
    ((read,),) = await _rows(store, "SELECT read FROM daily_metrics WHERE date_key = '2025-12-10'")
    assert read == 7100


async def test_failures_count_up_and_success_resets(store: Store, data_dir: Path) -> None:
    cid = (await store.sync_creators(CREATORS))[CREATORS[0].user_id]
    for n in range(3):
        await store.record_fetches(
            [
                FetchRecord(
                    cid,
                    V30,
                    started_at=T0 + timedelta(minutes=n),
                    due_at=T0,
                    latency_ms=None,
                    http_status=200,
                    code=301,
                    billed=False,
                    error="collection failed",
                    data=None,
                    raw_body='{"code":301}',
                    keep_raw=False,
                )
            ]
        )
    (row,) = await schedule_rows(store)
    assert (row.consecutive_failures, row.last_code, row.last_error) == (
        3,
        301,
        "collection failed",
    )
    assert row.last_success_at is None
    assert row.next_due_at == T0
    assert await _rows(store, "SELECT count(*) FROM raw_responses") == [(0,)]

    core, body = load_sample(data_dir, "core_data_success_30d.json")
    await _ok(store, cid, core, body, started_at=T0 + timedelta(minutes=9))
    (row,) = await schedule_rows(store)
    assert (row.consecutive_failures, row.last_code, row.last_error) == (0, 0, None)
    assert row.last_success_at == T0 + timedelta(minutes=9)
    assert row.last_attempt_at == T0 + timedelta(minutes=9)
    assert await _rows(store, "SELECT code, points FROM fetches ORDER BY id") == [
        (301, 0),
        (301, 0),
        (301, 0),
        (0, 30),
    ]


async def test_a_failed_write_leaves_nothing_behind(store: Store) -> None:
    with pytest.raises(StoreError) as caught:
        await _ok(store, 999, make_series(date(2025, 11, 1), 30), "{}")  # no such creator
    assert "\n" not in str(caught.value)
    for table in ("fetches", "daily_metrics", "raw_responses", "schedule"):
        assert await _rows(store, f"SELECT count(*) FROM {table}") == [(0,)]


async def test_bulk_batch_with_repeats_keeps_the_latest(store: Store) -> None:
    ids = await store.sync_creators(CREATORS)
    a, b = ids[CREATORS[0].user_id], ids[CREATORS[1].user_id]
    start = date(2025, 11, 1)
    records = [
        FetchRecord(a, V30, started_at=T0, data=make_series(start, 30), code=0, billed=True),
        FetchRecord(b, V30, started_at=T0, code=500, error="upstream error"),
        FetchRecord(
            a, V30, started_at=T0 + timedelta(seconds=1), data=make_series(start, 30, read0=5)
        ),
        FetchRecord(b, V30, started_at=T0 + timedelta(seconds=2), code=301, error="retry"),
    ]
    fetch_ids = await store.record_fetches(records)
    assert fetch_ids == sorted(fetch_ids)
    assert await _rows(store, "SELECT min(read), count(*), min(fetch_id) FROM daily_metrics") == [
        (5, 30, fetch_ids[2])
    ]
    rows = {r.creator_id: r for r in await schedule_rows(store)}
    assert (rows[a].consecutive_failures, rows[b].consecutive_failures) == (0, 2)
    assert rows[b].last_error == "retry"


async def test_series_history_export_and_latest_view(store: Store, clock: FakeClock) -> None:
    ids = await store.sync_creators(CREATORS)
    a, b = ids[CREATORS[0].user_id], ids[CREATORS[1].user_id]
    await _ok(store, a, make_series(date(2025, 11, 1), 30))
    await _ok(store, a, make_series(date(2025, 9, 3), 90, read0=7), variant=V90)
    await _ok(store, b, make_series(date(2025, 11, 2), 30, read0=50))

    series = await store.series(a, V30, since=date(2025, 11, 29))
    assert [(v, p.date_key, p.read, p.cpe) for v, p in series] == [
        (V30, date(2025, 11, 29), 1028, None),
        (V30, date(2025, 11, 30), 1029, None),
    ]
    assert len(await store.series(a)) == 120
    assert {v for v, _ in await store.series(a)} == {V30, V90}

    history = await store.history_rows(CREATORS[0].user_id, since=date(2025, 11, 30), variant=V30)
    assert history == [
        {
            "user_id": CREATORS[0].user_id,
            "name": "Lilyy",
            "business": "DAILY_NOTE",
            "note_type": "PHOTO_TEXT_AND_VIDEO",
            "date_type": "DAY_30",
            "advertise": "ALL",
            "date_key": "2025-11-30",
            "imp": 10290,
            "read": 1029,
            "engage": 102,
            "cpm": 12.5,
            "cpe": None,
            "cpv": 0.5,
            "cpuv": None,
            "third_user_num": 0,
            "fetch_id": 1,
            "updated_at": clock.now,
        }
    ]
    assert await store.history_rows("0" * 24) == []

    exported = [row async for row in store.export_rows(since=date(2025, 12, 1))]
    assert [(r["user_id"], r["date_type"], r["date_key"]) for r in exported] == [
        (CREATORS[0].user_id, "DAY_90", "2025-12-01"),
        (CREATORS[1].user_id, "DAY_30", "2025-12-01"),
    ]
    latest = await _rows(
        store,
        "SELECT name, date_type, date_key, read FROM latest_metrics ORDER BY name, date_type",
    )
    assert latest == [
        ("Bo", "DAY_30", "2025-12-01", 79),
        ("Lilyy", "DAY_30", "2025-11-30", 1029),
        ("Lilyy", "DAY_90", "2025-12-01", 96),
    ]


async def test_export_streams_and_can_stop_early(store: Store) -> None:
    cid = (await store.sync_creators(CREATORS))[CREATORS[0].user_id]
    await _ok(store, cid, make_series(date(2024, 1, 1), 3000))
    stream = store.export_rows()
    seen = []
    async for row in stream:
        seen.append(row["date_key"])
        if len(seen) == 5:
            break
    await stream.aclose()  # type: ignore[attr-defined]
    assert seen == ["2024-01-01", "2024-01-02", "2024-01-03", "2024-01-04", "2024-01-05"]
    assert sum([1 async for _ in store.export_rows()]) == 3000


async def test_sync_creators_keeps_leavers_inactive(store: Store, clock: FakeClock) -> None:
    ids = await store.sync_creators(CREATORS)
    assert set(ids) == {c.user_id for c in CREATORS}
    clock.advance(timedelta(hours=1))
    renamed = CREATORS[0].__class__(CREATORS[0].user_id, "Lily Y", ("fitness",))
    again = await store.sync_creators([renamed])
    assert again == {renamed.user_id: ids[renamed.user_id]}
    rows = await _rows(store, "SELECT user_id, name, tags, active FROM creators ORDER BY id")
    assert rows == [
        (CREATORS[0].user_id, "Lily Y", '["fitness"]', True),
        (CREATORS[1].user_id, "Bo", '["food"]', False),
    ]
    assert await store.find_creator(CREATORS[1].user_id) == ids[CREATORS[1].user_id]
    assert await store.find_creator("f" * 24) is None
    back = await store.sync_creators(CREATORS)
    assert back == ids  # a returning creator keeps its id and history


async def test_times_are_utc_iso_text_in_sqlite(tmp_path: Path, clock: FakeClock) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/h.db"
    await migrate.upgrade(url)
    async with Store.open(url, clock=clock) as opened:
        cid = (await opened.sync_creators(CREATORS))[CREATORS[0].user_id]
        local = datetime(2025, 12, 11, 10, 17, 58, 460419).astimezone(UTC)
        await opened.schedule_new([(cid, V30, local)])
        with pytest.raises(StoreError):  # naive: refused
            await opened.mark_broken(cid, V30, at=datetime(2025, 12, 11), reason="400")
    with closing(sqlite3.connect(tmp_path / "h.db")) as conn:
        assert conn.execute("SELECT created_at FROM creators").fetchone() == (
            "2025-12-11T02:00:00.000000Z",
        )
        (due,) = conn.execute("SELECT next_due_at FROM schedule").fetchone()
        assert due == local.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        assert conn.execute(
            "SELECT count(*) FROM creators, json_each(creators.tags) "
            "WHERE json_each.value = 'tier-a'"
        ).fetchone() == (1,)
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)


async def test_prune_raw_drops_only_old_bodies(store: Store, clock: FakeClock) -> None:
    cid = (await store.sync_creators(CREATORS))[CREATORS[0].user_id]
    old = await _ok(store, cid, make_series(date(2025, 11, 1), 30), "old body")
    clock.advance(timedelta(days=40))
    new = await _ok(store, cid, make_series(date(2025, 11, 2), 30), "new body")
    assert await store.prune_raw(clock.now - timedelta(days=30)) == 1
    assert (await store.raw_body(old), await store.raw_body(new)) == (None, "new body")
    assert await _rows(store, "SELECT count(*) FROM fetches") == [(2,)]


async def test_check_schema_says_what_to_run(db_url: str) -> None:
    async with Store.open(db_url) as opened:
        with pytest.raises(SchemaOutOfDate) as caught:
            await opened.check_schema()
        assert "run: creator-monitor db upgrade" in str(caught.value)
        await migrate.upgrade(db_url)
        await opened.check_schema()


async def test_unreachable_database_is_one_line_without_password() -> None:
    url = "postgresql+asyncpg://monitor:s3cr3t-pw@127.0.0.1:1/history"
    async with Store.open(url) as opened:
        with pytest.raises(StoreError) as caught:
            await opened.ledger_label("2025-12-11")
    message = str(caught.value)
    assert "s3cr3t-pw" not in message
    assert "s3cr3t-pw" not in repr(caught.value)
    assert message.startswith("database postgresql+asyncpg://monitor:***@127.0.0.1:1/history: ")
    assert "\n" not in message
    assert "s3cr3t-pw" not in repr(opened)


async def test_unopenable_sqlite_file_is_a_store_error(tmp_path: Path) -> None:
    (tmp_path / "dir.db").mkdir()
    async with Store.open(f"sqlite+aiosqlite:///{tmp_path}/dir.db") as opened:
        with pytest.raises(
            StoreError, match=r"^database sqlite\+aiosqlite:///.*dir\.db: unable to open"
        ):
            await opened.ledger_label("2025-12-11")
        # aiosqlite stops the worker of a failed connect without waiting for it; let it finish
        # before the test's loop closes, or it reports to a closed loop
        await asyncio.sleep(0.1)


async def test_locked_database_is_a_store_error(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/h.db"
    await migrate.upgrade(url)
    holder = sqlite3.connect(tmp_path / "h.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    try:
        async with Store.open(url, busy_timeout=timedelta(milliseconds=50)) as opened:
            with pytest.raises(StoreError, match=r"h\.db: database is locked$"):
                await opened.count_billed(ledger_day(GATE_BUDGET, T0))
            assert await opened.ledger_label("2025-12-11") == (0, 0)  # readers still read
    finally:
        holder.rollback()
        holder.close()


def test_a_database_that_cannot_be_opened_leaves_no_thread_traceback(tmp_path: Path) -> None:
    """`status` on a storage.url that names a folder (or a file this user may not open) is one
    line; aiosqlite's worker thread then answered its own stop on the event loop asyncio.run
    had closed meanwhile, and threading printed two tracebacks on stderr, about one run in
    three."""
    import asyncio
    import threading

    from monitor.errors import MonitorError

    (tmp_path / "folder").mkdir()
    url = f"sqlite+aiosqlite:///{tmp_path / 'folder'}"
    failures: list[BaseException | None] = []
    hook = threading.excepthook
    threading.excepthook = lambda args: failures.append(args.exc_value)

    async def open_once() -> None:
        async with Store.open(url) as store:
            await store.check_schema()

    try:
        for _ in range(30):
            before = set(threading.enumerate())
            with pytest.raises(MonitorError, match="unable to open database file"):
                asyncio.run(open_once())
            for thread in set(threading.enumerate()) - before:
                thread.join(5)
    finally:
        threading.excepthook = hook
    assert failures == []
