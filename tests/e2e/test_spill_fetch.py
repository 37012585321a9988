"""``creator-monitor fetch`` as a user runs it while the database refuses writes, on SQLite and
PostgreSQL: the paid answer is printed, kept in the spill file, the command exits 1; the next
``fetch --all`` sends nothing while the database still refuses, then stores the spill file first
(once) and fetches the rest. The commands run in this process (``support.cli``): what is checked
is what they print, spend and store; the lock is another connection all the same."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url
from support.cli import run_cli
from support.daemon import creators, daemon_config, write_toml

from monitor.store import migrate
from monitor.upstream.simulator import SimKnobs, Simulator

USERS = creators(3)


async def _cli(config: Path, token: str, *args: str) -> tuple[int, str, str]:
    """The command in this process, off the test's loop (which serves the simulator)."""
    done = await asyncio.to_thread(run_cli, "-c", config, *args, env={"JUSTONEAPI_TOKEN": token})
    return done.returncode, done.stdout, done.stderr


@contextlib.asynccontextmanager
async def _locked(url: str) -> AsyncIterator[None]:
    """SQLite: another connection's ``BEGIN IMMEDIATE``; PostgreSQL: ``LOCK TABLE fetches``."""
    if url.startswith("sqlite"):

        def take() -> sqlite3.Connection:
            db = sqlite3.connect(
                make_url(url).database or "", isolation_level=None, check_same_thread=False
            )
            db.execute("BEGIN IMMEDIATE")
            return db

        db = await asyncio.to_thread(take)
        try:
            yield
        finally:
            db.execute("ROLLBACK")
            db.close()
        return
    conn = await asyncpg.connect(url.replace("+asyncpg", ""))
    try:
        async with conn.transaction():
            await conn.execute("LOCK TABLE fetches IN EXCLUSIVE MODE")
            yield
    finally:
        await conn.close()


async def _rows(url: str, sql: str) -> list[tuple[Any, ...]]:
    if url.startswith("sqlite"):
        with contextlib.closing(sqlite3.connect(make_url(url).database or "")) as db:
            return db.execute(sql).fetchall()
    conn = await asyncpg.connect(url.replace("+asyncpg", ""))
    try:
        return [tuple(r) for r in await conn.fetch(sql)]
    finally:
        await conn.close()


async def test_fetch_keeps_a_paid_answer_it_cannot_store_and_the_next_fetch_stores_it(
    db_url: str, tmp_path: Path, token: str
) -> None:
    await migrate.upgrade(db_url)
    spill = tmp_path / "held" / "pending.jsonl"
    async with Simulator(SimKnobs(latency_ms=1500)) as sim:
        doc = daemon_config(sim.base_url, db_url, USERS, schedule={"retry_attempts": 0})
        doc["storage"] |= {"busy_timeout": "1s", "spill_file": str(spill)}
        config = write_toml(tmp_path / "config.toml", doc)
        fetching = asyncio.get_running_loop().create_task(_cli(config, token, "fetch", USERS[0]))
        while sim.counters().calls == 0:  # the call is on the wire: now the database refuses
            await asyncio.sleep(0.01)
        async with _locked(db_url):
            code, out, err = await fetching
            held_lines = len(spill.read_text().splitlines())
            calls_then = sim.counters().calls
            # answers wait and the database still refuses: nothing is sent
            again, _out, again_err = await _cli(config, token, "fetch", "--all")
            assert sim.counters().calls == calls_then
        assert code == 1, err
        assert "date" in out  # the metrics were printed anyway
        assert "imp" in out
        assert f"kept in {spill}" in err
        assert "stored when the database takes writes" in err
        assert held_lines == 1
        assert again == 1, again_err
        assert "no call sent" in again_err or "database" in again_err

        code, out, err = await _cli(config, token, "fetch", "--all")
        assert code == 0, err
        counters = sim.counters()
    ((rows, attempts, billed_rows),) = await _rows(
        db_url,
        "SELECT count(*), count(DISTINCT attempt_id), "
        "sum(CASE WHEN billed THEN 1 ELSE 0 END) FROM fetches",
    )
    ((ledger_billed,),) = await _rows(db_url, "SELECT sum(billed) FROM budget_days")
    assert counters.calls == rows == attempts == 1 + len(USERS)
    assert counters.billed == billed_rows == ledger_billed
    assert not spill.exists()
    for text in (out, err):
        assert token not in text
    print(f"\nfetch under a lock: calls={counters.calls}, billed={counters.billed}, rows={rows}")
