"""Store benchmark: ingest vs raw sqlite3, series latency at scale, bytes per creator-year.

Prints figures; it is not a test. ``python bench/store.py`` runs in well under five minutes on two
cores; ``--quick`` shrinks everything for a smoke run.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from monitor.model import METRICS, CoreData, Creator, DailyPoint, Variant
from monitor.store import FetchRecord, Store, migrate

T0 = datetime(2025, 12, 11, 2, 0, tzinfo=UTC)
V = Variant()
BODY = (Path(__file__).parent.parent / "tests" / "data" / "core_data_success_30d.json").read_text()


def response(n: int, days: int = 30) -> CoreData:
    """A parsed 30-point response for creator ``n`` (deterministic values)."""
    start = date(2025, 11, 11)
    points = tuple(
        DailyPoint(
            date_key=start + timedelta(days=i),
            imp=30_000 + n + i,
            read=3_000 + n + i,
            engage=400 + i,
            cpm=800.0 + i,
            cpe=70.0 + i,
            cpv=15.0 + i / 10,
            cpuv=None,
            third_user_num=0,
        )
        for i in range(days)
    )
    return CoreData(summary=points[-1], daily=points)


def creators(count: int) -> list[Creator]:
    return [Creator(f"{n:024x}", f"creator {n}") for n in range(count)]


def record(cid: int, n: int) -> FetchRecord:
    return FetchRecord(
        cid, V, started_at=T0, due_at=T0, latency_ms=900, http_status=200, code=0,
        billed=True, data=response(n), raw_body=BODY,
    )  # fmt: skip


async def fresh_store(path: Path, count: int) -> tuple[Store, dict[str, int]]:
    url = f"sqlite+aiosqlite:///{path}"
    await migrate.upgrade(url)
    store = Store.open(url, clock=lambda: T0)
    return store, await store.sync_creators(creators(count))


async def ingest_per_call(path: Path, count: int) -> float:
    store, ids = await fresh_store(path, count)
    try:
        began = time.perf_counter()
        for n, c in enumerate(creators(count)):
            r = record(ids[c.user_id], n)
            await store.record_fetches([FetchRecord(
                r.creator_id, r.variant, started_at=r.started_at, due_at=r.due_at,
                latency_ms=r.latency_ms, http_status=r.http_status, code=r.code, billed=r.billed,
                error=None, data=r.data, raw_body=r.raw_body,
            )])  # fmt: skip
        return count / (time.perf_counter() - began)
    finally:
        await store.close()


async def ingest_bulk(path: Path, count: int, batch: int) -> float:
    store, ids = await fresh_store(path, count)
    try:
        recs = [record(ids[c.user_id], n) for n, c in enumerate(creators(count))]
        began = time.perf_counter()
        for start in range(0, count, batch):
            await store.record_fetches(recs[start : start + batch])
        return count / (time.perf_counter() - began)
    finally:
        await store.close()


def _raw_rows(ids: dict[str, int], count: int) -> Iterator[tuple[int, int, DailyPoint]]:
    for n, c in enumerate(creators(count)):
        for point in response(n).daily:
            yield ids[c.user_id], n + 1, point


async def ingest_raw(path: Path, count: int) -> float:
    """The same rows through plain sqlite3 executemany, one transaction: the floor."""
    store, ids = await fresh_store(path, count)
    await store.close()
    ts = T0.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    variant = ("DAILY_NOTE", "PHOTO_TEXT_AND_VIDEO", "DAY_30", "ALL")
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute("PRAGMA synchronous=NORMAL")
        began = time.perf_counter()
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO fetches (id, creator_id, business, note_type, date_type, advertise, "
            "due_at, started_at, latency_ms, http_status, code, billed, points) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, 900, 200, 0, 1, 30)",
            ((n + 1, ids[c.user_id], *variant, ts, ts) for n, c in enumerate(creators(count))),
        )
        conn.executemany(
            f"INSERT INTO daily_metrics (creator_id, business, note_type, date_type, advertise, "
            f"date_key, {', '.join(METRICS)}, fetch_id, updated_at) "
            f"VALUES (?, ?, ?, ?, ?, ?, {', '.join('?' * len(METRICS))}, ?, ?)",
            (
                (cid, *variant, p.date_key.isoformat(), *(getattr(p, m) for m in METRICS), fid, ts)
                for cid, fid, p in _raw_rows(ids, count)
            ),
        )
        conn.executemany(
            "INSERT INTO raw_responses (fetch_id, received_at, body) VALUES (?, ?, ?)",
            ((n + 1, ts, BODY) for n in range(count)),
        )
        conn.execute("COMMIT")
        return count / (time.perf_counter() - began)


def build_history(path: Path, count: int, days: int) -> None:
    """``count`` creators x ``days`` daily points, written fast and in key order."""
    variant = ("DAILY_NOTE", "PHOTO_TEXT_AND_VIDEO", "DAY_30", "ALL")
    ts = T0.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    first = date(2025, 12, 10) - timedelta(days=days - 1)
    keys = [(first + timedelta(days=d)).isoformat() for d in range(days)]
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO creators (id, user_id, name, tags, active, created_at, updated_at) "
            "VALUES (?, ?, ?, '[]', 1, ?, ?)",
            ((n + 1, f"{n:024x}", f"creator {n}", ts, ts) for n in range(count)),
        )
        conn.executemany(
            "INSERT INTO daily_metrics (creator_id, business, note_type, date_type, advertise, "
            "date_key, imp, read, engage, third_user_num, cpm, cpe, cpv, cpuv, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?, ?, NULL, ?)",
            (
                (n + 1, *variant, key, 30_000 + d, 3_000 + d, 400, 800.5, 70.25, 15.125, ts)
                for n in range(count)
                for d, key in enumerate(keys)
            ),
        )
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


async def series_latency(path: Path, count: int, samples: int) -> list[float]:
    async with Store.open(f"sqlite+aiosqlite:///{path}") as store:
        await store.series(1, V, since=date(2025, 9, 12))  # warm the pool, like a daemon would
        rng = random.Random(7)
        timings = []
        for _ in range(samples):
            cid = rng.randint(1, count)
            began = time.perf_counter()
            points = await store.series(cid, V, since=date(2025, 9, 12))
            timings.append((time.perf_counter() - began) * 1000)
            assert len(points) == 90, len(points)
        return timings


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny sizes for a smoke run")
    args = parser.parse_args()
    responses, big, days, batch = (500, 200, 730, 100) if args.quick else (10_000, 10_000, 730, 500)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        raw = await ingest_raw(root / "raw.db", responses)
        per_call = await ingest_per_call(root / "call.db", responses)
        bulk = await ingest_bulk(root / "bulk.db", responses, batch)

        await migrate.upgrade(f"sqlite+aiosqlite:///{root / 'big.db'}")
        began = time.perf_counter()
        build_history(root / "big.db", big, days)
        built = time.perf_counter() - began
        timings = await series_latency(root / "big.db", big, 200)
        size = (root / "big.db").stat().st_size
        with closing(sqlite3.connect(root / "big.db")) as conn:
            (rows,) = conn.execute("SELECT count(*) FROM daily_metrics").fetchone()

    median, p95 = statistics.median(timings), statistics.quantiles(timings, n=20)[18]
    creator_years = big * days / 365
    print(f"(a) ingest of {responses:,} responses x 30 points (+ raw body), SQLite file, WAL")
    print(f"    {'path':<42}{'responses/s':>12}{'points/s':>12}{'vs raw':>9}")
    for name, rate in (
        ("raw sqlite3.executemany, one transaction", raw),
        (f"Store.record_fetches, {batch} per transaction", bulk),
        ("Store.record_fetches, one fetch per transaction", per_call),
    ):
        print(f"    {name:<42}{rate:>12,.0f}{rate * 30:>12,.0f}{raw / rate:>8.1f}x")
    print(
        f"(b) Store.series(90 days), {rows:,} rows ({big:,} creators x {days} days; built in "
        f"{built:.0f} s), 200 random creators"
    )
    print(f"    median {median:.2f} ms   p95 {p95:.2f} ms")
    print(
        f"(c) {size / creator_years:,.0f} bytes per creator-year (file {size / 2**20:,.0f} MiB, "
        f"{size / rows:.0f} bytes per daily row incl. date_key index)"
    )


if __name__ == "__main__":
    asyncio.run(main())
