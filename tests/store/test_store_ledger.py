"""The store's shared state on both backends: daily ledger, bucket row, schedule, leases, status;
and a concurrent reader on SQLite that must never see half a fetch."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from contextlib import closing
from datetime import date, timedelta
from pathlib import Path

from support.store import (
    CREATORS,
    T0,
    FakeClock,
    make_series,
    schedule_rows,
)

from monitor.model import Business, Creator, Variant
from monitor.store import FetchRecord, Store, migrate

V = Variant()
VC = Variant(business=Business.COOPERATE_NOTE)


async def test_schedule_due_and_broken(store: Store, clock: FakeClock) -> None:
    ids = await store.sync_creators(CREATORS)
    a, b = ids[CREATORS[0].user_id], ids[CREATORS[1].user_id]
    await store.schedule_new([(a, V, T0), (b, V, T0), (a, VC, T0)])
    # a fetch served it and moved it on (the store's only writer of a known due time)
    await store.record_fetches(
        [FetchRecord(b, V, started_at=T0, code=0, next_due_at=T0 - timedelta(hours=1))]
    )
    await store.schedule_new([(b, V, T0 + timedelta(days=9))])  # kept its time (below)
    await store.mark_broken(a, VC, at=T0, reason="400: invalid parameters")

    rows = await schedule_rows(store)
    assert [(r.user_id, r.variant, r.next_due_at) for r in rows] == [
        (CREATORS[1].user_id, V, T0 - timedelta(hours=1)),
        (CREATORS[0].user_id, VC, T0),  # ties by key: COOPERATE_NOTE before DAILY_NOTE
        (CREATORS[0].user_id, V, T0),
    ]
    assert (rows[1].broken_at, rows[1].broken_reason) == (T0, "400: invalid parameters")

    # a creator that leaves the config drops out of the schedule, keeping its rows
    await store.sync_creators([CREATORS[0]])
    assert {r.user_id for r in await schedule_rows(store)} == {CREATORS[0].user_id}


async def test_status_rows(store: Store) -> None:
    ids = await store.sync_creators(CREATORS)
    a = ids[CREATORS[0].user_id]
    await store.record_fetches([FetchRecord(
        a, V, started_at=T0, due_at=T0, latency_ms=900, http_status=200, code=0, billed=True,
        error=None, data=make_series(date(2025, 11, 1), 30), raw_body=None,
        next_due_at=T0 + timedelta(hours=24),
    )])  # fmt: skip
    await store.record_fetches([FetchRecord(
        a, VC, started_at=T0, due_at=T0, latency_ms=None, http_status=None, code=None,
        billed=False, error="TransportError: ReadTimeout", data=None, raw_body=None,
    )])  # fmt: skip
    rows = await store.status_rows()
    assert [
        (r.user_id, r.variant, r.last_success_at, r.last_error, r.consecutive_failures,
         r.next_due_at, r.rows_stored, r.latest_date_key)
        for r in rows
    ] == [
        (CREATORS[1].user_id, None, None, None, 0, None, 0, None),
        (CREATORS[0].user_id, VC, None, "TransportError: ReadTimeout", 1, T0, 30, "2025-11-30"),
        (CREATORS[0].user_id, V, T0, None, 0, T0 + timedelta(hours=24), 30, "2025-11-30"),
    ]  # fmt: skip


async def test_a_reader_never_sees_half_a_fetch(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/h.db"
    await migrate.upgrade(url)
    creators = [Creator(f"{n:024x}", f"c{n}") for n in range(40)]
    stop = threading.Event()
    torn: list[tuple[int, int, int, int]] = []
    reads = 0

    def reader() -> None:
        nonlocal reads
        with closing(sqlite3.connect(tmp_path / "h.db")) as conn:
            while not stop.is_set():
                # one statement = one snapshot: every visible fetch must be complete
                torn.extend(
                    conn.execute(
                        "SELECT f.id, f.points, "
                        "(SELECT count(*) FROM daily_metrics d WHERE d.fetch_id = f.id), "
                        "(SELECT count(*) FROM raw_responses r WHERE r.fetch_id = f.id) "
                        "FROM fetches f WHERE f.points != "
                        "(SELECT count(*) FROM daily_metrics d WHERE d.fetch_id = f.id) "
                        "OR NOT EXISTS (SELECT 1 FROM raw_responses r WHERE r.fetch_id = f.id)"
                    ).fetchall()
                )
                reads += 1

    async with Store.open(url) as opened:
        ids = await opened.sync_creators(creators)
        thread = threading.Thread(target=reader)
        thread.start()
        try:
            for n, c in enumerate(creators):
                await opened.record_fetches(
                    [
                        FetchRecord(
                            ids[c.user_id], V, started_at=T0, code=0, billed=True,
                            data=make_series(date(2025, 11, 1), 30, read0=n), raw_body="{}",
                        )
                    ]
                )  # fmt: skip
        finally:
            stop.set()
            await asyncio.to_thread(thread.join)
    assert torn == []
    assert reads > 0
    with closing(sqlite3.connect(tmp_path / "h.db")) as conn:
        assert conn.execute("SELECT count(*), sum(points) FROM fetches").fetchone() == (40, 1200)
