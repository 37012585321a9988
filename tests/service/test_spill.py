"""Paid answers the database refuses are held, spilled and stored once (service.fetching.spill),
on SQLite and PostgreSQL: the spill file round-trips, a replay after a crash before the file went
stores nothing twice, and a Fetcher whose write is refused stops buying calls (retries included)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import sqlite3
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
from pydantic import SecretStr
from sqlalchemy.engine import make_url
from support.daemon import daemon_config
from support.sim import creator_id

from monitor.config import parse_config
from monitor.errors import StoreError, WritesRefused
from monitor.model import (
    Creator,
    FollowerPoint,
    ListedNote,
    Note,
    NotePage,
    NoteStats,
    Variant,
)
from monitor.policy.budget import BudgetPolicy
from monitor.service.fetching.fetch import Fetcher
from monitor.service.fetching.gate import BudgetGate
from monitor.service.fetching.slot import Ending, Run, Slot
from monitor.service.fetching.spill import SUFFIX, Spill, spill_path
from monitor.service.fetching.spill_line import (
    decode,
    encode,
)
from monitor.store import FetchRecord, Store, migrate
from monitor.upstream.client import JustOneClient, parse_core_data
from monitor.upstream.simulator import SimKnobs, Simulator

DATA = Path(__file__).parent.parent / "data"
T0 = datetime(2025, 12, 11, 2, 0, tzinfo=UTC)


async def _scalar(store: Store, url: str, sql: str) -> Any:
    """One value read outside the store (sqlite3 / asyncpg), as a user would look."""
    if url.startswith("sqlite"):
        with contextlib.closing(sqlite3.connect(make_url(url).database or "")) as db:
            return db.execute(sql).fetchone()[0]
    conn = await asyncpg.connect(_dsn(url))
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


def _dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://")


@contextlib.asynccontextmanager
async def writes_locked(url: str) -> AsyncIterator[None]:
    """Another session holds the write lock: SQLite ``BEGIN IMMEDIATE`` (every write waits),
    PostgreSQL ``LOCK TABLE fetches IN EXCLUSIVE MODE`` (fetch records wait, the ledger not)."""
    if url.startswith("sqlite"):
        db = sqlite3.connect(make_url(url).database or "", isolation_level=None)
        db.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            db.execute("ROLLBACK")
            db.close()
        return
    conn = await asyncpg.connect(_dsn(url))
    try:
        async with conn.transaction():
            await conn.execute("LOCK TABLE fetches IN EXCLUSIVE MODE")
            yield
    finally:
        await conn.close()


def _records(creator: int, count: int) -> list[FetchRecord]:
    sample = parse_core_data((DATA / "core_data_success_30d.json").read_text(encoding="utf-8"))
    return [
        FetchRecord(
            creator_id=creator,
            variant=Variant(),
            started_at=T0 + timedelta(minutes=n),
            due_at=T0,
            latency_ms=sample.latency_ms,
            http_status=200,
            code=0,
            billed=True,
            data=sample.data,
            raw_body=sample.raw_body,
            next_due_at=T0 + timedelta(days=1),
            attempt_id=f"{n:032x}",
            billed_day="2025-12-11" if n == 0 else None,
            billed_slot=T0 if n == 0 else None,
        )
        for n in range(count)
    ]


def test_a_record_survives_the_spill_format() -> None:
    (record,) = _records(7, 1)
    assert decode(encode(record)) == record


def test_a_line_spilled_without_its_quarter_hour_counts_in_the_calls_own() -> None:
    (record,) = _records(7, 1)
    late = replace(record, started_at=T0 + timedelta(minutes=20, seconds=7), billed_slot=None)
    body = json.loads(encode(late))
    del body["billed_slot"]  # an earlier version's line
    assert decode(json.dumps(body)).billed_slot == T0 + timedelta(minutes=15)


def test_the_spill_file_sits_beside_the_database(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/history.db"
    assert spill_path(url, None, {}) == tmp_path / f"history.db{SUFFIX}"
    pg = "postgresql+asyncpg://u:pw@db.example:5432/cm"
    spilled = spill_path(pg, None, {"STATE_DIRECTORY": str(tmp_path)})
    assert spilled == tmp_path / "creator-monitor" / "pending-db.example-5432-cm.jsonl"
    assert spill_path(url, tmp_path / "x.jsonl", {}) == tmp_path / "x.jsonl"


async def test_a_replay_after_a_crash_before_the_file_went_stores_nothing_twice(
    db_url: str, tmp_path: Path
) -> None:
    await migrate.upgrade(db_url)
    path = tmp_path / "spill" / "pending.jsonl"
    path.parent.mkdir()
    async with Store.open(db_url, clock=lambda: T0) as store:
        ids = await store.sync_creators([Creator(creator_id(1))])
        spill = Spill(path)
        for record in _records(ids[creator_id(1)], 3):
            spill.keep(record, StoreError("database x: database is locked"))
        assert spill.waiting
        assert len(path.read_text().splitlines()) == 3
        refusal = spill.refusal()  # what the health check and the commands say meanwhile
        assert isinstance(refusal, WritesRefused)
        assert "3 paid answers held in" in str(refusal)
        kept = tmp_path / "copy.jsonl"
        shutil.copy(path, kept)

        stored = await spill.replay(store)
        assert len(stored) == 3
        assert not path.exists()
        assert not spill.waiting
        # the process died after the commit, before the file went: the next start replays it
        shutil.copy(kept, path)
        again = Spill(path)
        assert again.waiting
        await again.replay(store)
        assert not path.exists()

        fetches = await _scalar(store, db_url, "SELECT count(*) FROM fetches")
        distinct = await _scalar(store, db_url, "SELECT count(DISTINCT attempt_id) FROM fetches")
        points = await _scalar(store, db_url, "SELECT count(*) FROM daily_metrics")
        billed = await _scalar(store, db_url, "SELECT sum(billed) FROM budget_days")
        due = await _scalar(store, db_url, "SELECT max(next_due_at) FROM schedule")
    assert (fetches, distinct, points, billed) == (3, 3, 30, 1)
    assert str(due).startswith("2025-12-12")


async def _fetcher(
    url: str, sim: Simulator, store: Store, token: str, spill: Spill, stack: AsyncExitStack
) -> tuple[Fetcher, dict[str, int]]:
    document = daemon_config(
        sim.base_url,
        url,
        [creator_id(n) for n in range(3)],
        budget={"calls_per_minute": 600, "burst": 5},
        schedule={"retry_attempts": 2, "retry_base": "1s", "retry_max": "2s"},
    )
    document["storage"]["busy_timeout"] = "1s"
    config = parse_config(document)
    client = await stack.enter_async_context(
        JustOneClient(base_url=config.api.base_url, token=SecretStr(token))
    )
    gate = await BudgetGate.open(
        BudgetPolicy.from_config(config), store, clock=lambda: datetime.now(UTC)
    )
    ids = await store.sync_creators([c.creator() for c in config.creators])
    fetcher = Fetcher(
        config, client, store, gate, None, clock=lambda: datetime.now(UTC), spill=spill
    )
    return fetcher, ids


def _slot(user: str, ids: dict[str, int]) -> Slot:
    now = datetime.now(UTC)
    return Slot(user, ids[user], Creator(user), Variant(), timedelta(days=1), now)


async def _after_first_call(sim: Simulator, url: str, run: Any) -> Run:
    """Start ``run``, take the write lock once the upstream has the call, return how it
    ended: its answer held."""
    task = asyncio.get_running_loop().create_task(run)
    while sim.counters().calls == 0:
        await asyncio.sleep(0.01)
    async with writes_locked(url):
        ended: Run = await task
    assert ended.ending is Ending.HELD
    assert ended.held is not None
    return ended


async def test_a_refused_write_holds_the_answer_and_no_call_follows(
    db_url: str, tmp_path: Path, token: str
) -> None:
    await migrate.upgrade(db_url)
    path = tmp_path / "pending.jsonl"
    sim_knobs = SimKnobs(latency_ms=400)
    async with (
        Simulator(sim_knobs) as sim,
        Store.open(db_url, busy_timeout=timedelta(seconds=1)) as store,
        AsyncExitStack() as stack,
    ):
        spill = Spill(path)
        fetcher, ids = await _fetcher(db_url, sim, store, token, spill, stack)
        # a retryable answer whose record is refused: the retry loop stops, buys nothing more
        retried = creator_id(0)
        sim.force_code(retried, 301)
        held = await _after_first_call(sim, db_url, fetcher.run(_slot(retried, ids)))
        assert held.held is not None
        assert held.held.code == 301
        assert sim.counters().calls == 1
        assert spill.waiting
        # the next creator: no call while answers wait
        refused = await fetcher.run(_slot(creator_id(1), ids))
        assert refused.ending is Ending.REFUSED
        assert "paid answers held in" in refused.reason
        assert sim.counters().calls == 1
        sim.clear_forced(retried)

        stored = await spill.replay(store)
        assert len(stored) == 1
        # a paid success under the lock: held with its data, spilled, stored by the next process
        sim.reset_counters()
        held = await _after_first_call(sim, db_url, fetcher.run(_slot(creator_id(2), ids)))
        assert held.held is not None
        assert held.held.data is not None
        assert spill.where() == str(path)  # spilled
        assert len(path.read_text().splitlines()) == 1
        await Spill(path).replay(store)
        rows = await _scalar(store, db_url, "SELECT count(*) FROM fetches WHERE code = 0")
        points = await _scalar(store, db_url, "SELECT count(*) FROM daily_metrics")
        ledger_billed = await _scalar(store, db_url, "SELECT sum(billed) FROM budget_days")
        counters = sim.counters()
    assert counters.calls == counters.billed == 1
    assert (rows, points) == (1, 30)
    assert ledger_billed == 1  # the billed count refused after the call came with the answer
    assert not path.exists()


def test_a_follower_a_note_and_an_unreadable_answer_survive_the_spill_file() -> None:
    """Every source's answer is held like core_data's: the file keeps its source and its rows."""
    fans = Variant.for_source("fans")
    note = Note("0123456789abcdef01234567", "冬季好物 <b>", date(2025, 12, 1), True, True, "Acme")
    records = [
        FetchRecord(
            1,
            fans,
            T0,
            code=0,
            billed=True,
            followers=(FollowerPoint(date(2025, 12, 1), 10), FollowerPoint(date(2025, 12, 2), 12)),
            attempt_id="a1",
        ),
        FetchRecord(
            1,
            Variant.for_source("notes"),
            T0,
            code=0,
            billed=True,
            note_page=NotePage(2, (ListedNote(note, NoteStats(100, None, 3)),), total=9),
            attempt_id="a2",
        ),
        FetchRecord(
            1,
            fans,
            T0,
            code=0,
            billed=True,
            error="unreadable follower history: list is str",
            raw_body='{"code":0,"data":{"list":"x"}}',
            unreadable_params={"userId": "u", "dateType": "DAY_30"},
            attempt_id="a3",
        ),
    ]
    for record in records:
        assert decode(encode(record)) == record
