"""Own cost per fetch: the daemon's CPU per paid call against an instant upstream, beside the
bare minimum measured in the same run (a keep-alive httpx GET, ``json.loads``, a 30-row upsert
and a commit), on SQLite and on PostgreSQL.

Two figures:

- in-process: the production fetch path (``app.fetch_parts``: gate, client, store, rules,
  outbox) and ``Fetcher.run`` for one creator after the other, CPU of this process;
- whole process: ``creator-monitor run`` as a subprocess with every creator due at once, its CPU
  (every thread: the event loop, the SQLite threads, start-up excluded) per successful fetch,
  read from ``/proc`` while the fetches are counted in the database.

The simulator runs in a subprocess so its CPU is not counted. Prints figures; it is not a test.
``python bench/owncost.py [--fetches N] [--no-pg] [--no-daemon]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import httpx

from monitor.app import fetch_parts
from monitor.config import Config, load_config
from monitor.model import Variant
from monitor.service.fetching.slot import Slot
from monitor.store import migrate

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
PATH = "/api/xiaohongshu-pgy/api/pgy/kol/data/core_data/v1"
UPSERT = (
    "INSERT INTO m (creator, date_key, imp, read, engage, cpm) VALUES ({}) "
    "ON CONFLICT (creator, date_key) DO UPDATE SET imp = excluded.imp, read = excluded.read, "
    "engage = excluded.engage, cpm = excluded.cpm"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_simulator() -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "monitor", "simulate", "--port", str(port), "--latency", "0"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        except OSError:
            time.sleep(0.05)
        else:
            return proc, f"http://127.0.0.1:{port}"
    proc.kill()
    raise SystemExit("the simulator did not start")


def user(n: int) -> str:
    return f"5c3bf7f7{n:016x}"


def config_for(
    base_url: str, db_url: str, count: int, folder: Path, *, in_flight: int = 8
) -> Config:
    return load_config(config_file(base_url, db_url, count, folder, in_flight=in_flight))


def config_file(
    base_url: str, db_url: str, count: int, folder: Path, *, in_flight: int = 8
) -> Path:
    creators = "\n".join(f'[[creators]]\nuser_id = "{user(n)}"' for n in range(count))
    text = f"""
[api]
base_url = "{base_url}"
[budget]
calls_per_minute = 10000
burst = 1000
daily_calls = 10000000
[storage]
url = "{db_url}"
[schedule]
max_in_flight = {in_flight}
retry_attempts = 0
grace = "1s"
[defaults]
every = "24h"
[[rules]]
name = "engagement-floor"
kind = "threshold"
metric = "engage"
op = "<"
value = 50
{creators}
"""
    path = folder / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def _cpu_seconds(pid: int) -> float:
    """utime + stime of every thread of ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _stored(db: Path) -> int:
    """Successful fetches stored so far (read like any other reader: WAL, no lock held)."""
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            return int(conn.execute("SELECT count(*) FROM fetches WHERE code = 0").fetchone()[0])
    except sqlite3.OperationalError:
        return 0


async def whole_process_cost(base_url: str, folder: Path, count: int) -> tuple[float, int]:
    """CPU seconds of the daemon process (every thread) per successful fetch, and the fetches
    measured: from the first sample after a tenth of them to the last one that moved."""
    db = folder / "whole.db"
    db_url = f"sqlite+aiosqlite:///{db}"
    await migrate.upgrade(db_url)
    config = config_file(base_url, db_url, count, folder, in_flight=16)
    script = Path(sys.executable).parent / "creator-monitor"
    proc = await asyncio.create_subprocess_exec(
        str(script),
        "-c",
        str(config),
        "run",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    samples: list[tuple[int, float]] = []
    try:
        deadline = time.monotonic() + 300
        warm = max(5, count // 10)
        while time.monotonic() < deadline and proc.returncode is None:
            await asyncio.sleep(0.25)
            done = _stored(db)
            samples.append((done, _cpu_seconds(proc.pid)))
            if done >= count:
                break
    finally:
        proc.terminate()
        await proc.wait()
    started = next(((n, cpu) for n, cpu in samples if n >= warm), None)
    if started is None or samples[-1][0] <= started[0]:
        raise SystemExit("the daemon stored too few fetches to measure")
    ended = samples[-1]
    return (ended[1] - started[1]) / (ended[0] - started[0]), ended[0] - started[0]


async def daemon_cost(config: Config, count: int) -> float:
    """CPU seconds per fetch through the production path (warm-up excluded)."""
    now = lambda: datetime.now(UTC)  # noqa: E731
    async with fetch_parts(config, clock=now, alerting=True) as parts:
        entries = [e.creator() for e in config.creators]
        ids = await parts.store.sync_creators(entries)
        slots = [
            Slot(
                key=c.user_id,
                creator_id=ids[c.user_id],
                creator=c,
                variant=Variant(),
                every=timedelta(days=1),
                due_at=now(),
            )
            for c in entries
        ]
        warm = max(5, count // 10)
        for slot in slots[:warm]:
            await parts.fetcher.run(slot)
        started = time.process_time()
        for slot in slots[warm:]:
            await parts.fetcher.run(slot)
        return (time.process_time() - started) / (count - warm)


async def floor_cost(
    base_url: str, count: int, store: Callable[[list[tuple[object, ...]]], Awaitable[None]]
) -> float:
    """CPU seconds per fetch for the bare minimum: GET, json.loads, 30-row upsert, commit."""
    async with httpx.AsyncClient(base_url=base_url) as client:
        started = 0.0
        warm = max(5, count // 10)
        for n in range(count):
            if n == warm:
                started = time.process_time()
            answer = await client.get(PATH, params={"token": "t", "userId": user(n)})
            body = json.loads(answer.content)
            rows = [
                (n, p["dateKey"], p["imp"], p["read"], p["engage"], p["cpm"])
                for p in body["data"]["dailyData"]
            ]
            await store(rows)
        return (time.process_time() - started) / (count - warm)


def sqlite_floor(path: Path) -> Callable[[list[tuple[object, ...]]], Awaitable[None]]:
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute(
        "CREATE TABLE m (creator INT, date_key TEXT, imp INT, read INT, engage INT, cpm REAL, "
        "PRIMARY KEY (creator, date_key))"
    )
    sql = UPSERT.format("?, ?, ?, ?, ?, ?")

    async def store(rows: list[tuple[object, ...]]) -> None:
        with db:
            db.executemany(sql, rows)

    return store


async def pg_floor(dsn: str) -> tuple[asyncpg.Connection, Callable[..., Awaitable[None]]]:
    conn = await asyncpg.connect(dsn)
    await conn.execute(
        "CREATE TABLE m (creator INT, date_key TEXT, imp INT, read INT, engage INT, "
        "cpm DOUBLE PRECISION, PRIMARY KEY (creator, date_key))"
    )
    sql = UPSERT.format("$1, $2, $3, $4, $5, $6")

    async def store(rows: list[tuple[object, ...]]) -> None:
        async with conn.transaction():
            await conn.executemany(sql, rows)

    return conn, store


async def pg_database() -> str:
    name = f"cm_bench_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(PG_ADMIN)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return name


async def drop_pg(name: str) -> None:
    admin = await asyncpg.connect(PG_ADMIN)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--fetches", type=int, default=300)
    parser.add_argument("--no-pg", action="store_true")
    parser.add_argument("--no-daemon", action="store_true", help="skip the whole-process run")
    args = parser.parse_args()
    os.environ.setdefault("JUSTONEAPI_TOKEN", "bench-token-not-secret")
    sim, base_url = start_simulator()
    rows: list[tuple[str, float, float]] = []
    whole: tuple[float, int, float] | None = None
    try:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            db_url = f"sqlite+aiosqlite:///{folder / 'history.db'}"
            await migrate.upgrade(db_url)
            floor = await floor_cost(base_url, args.fetches, sqlite_floor(folder / "floor.db"))
            cfg = config_for(base_url, db_url, args.fetches, folder)
            own = await daemon_cost(cfg, args.fetches)
            rows.append(("SQLite", own, floor))
            if not args.no_daemon:
                cost, measured = await whole_process_cost(base_url, folder, args.fetches * 4)
                whole = (cost, measured, floor)
            if not args.no_pg:
                names = [await pg_database(), await pg_database()]
                try:
                    pg_url = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{names[0]}"
                    await migrate.upgrade(pg_url)
                    conn, store = await pg_floor(f"postgresql://postgres@127.0.0.1/{names[1]}")
                    try:
                        floor = await floor_cost(base_url, args.fetches, store)
                    finally:
                        await conn.close()
                    cfg = config_for(base_url, pg_url, args.fetches, folder)
                    own = await daemon_cost(cfg, args.fetches)
                    rows.append(("PostgreSQL", own, floor))
                finally:
                    for name in names:
                        await drop_pg(name)
    finally:
        sim.terminate()
        sim.wait(timeout=10)
    print(f"own cost per fetch, {args.fetches} fetches, instant upstream (CPU ms per fetch)")
    print(f"{'backend':<12} {'daemon':>8} {'floor':>8} {'ratio':>7}")
    for backend, own, floor in rows:
        print(f"{backend:<12} {own * 1000:8.2f} {floor * 1000:8.2f} {own / floor:6.1f}x")
    if whole is not None:
        cost, measured, floor = whole
        print(
            f"whole daemon process (every thread, SQLite, {measured} fetches, 16 in flight): "
            f"{cost * 1000:.2f} ms per fetch, {cost / floor:.1f}x the floor  (target <= 6x)"
        )


if __name__ == "__main__":
    asyncio.run(main())
