"""Storage faults under the running daemon (in-process, real time, against the simulator): the
disk fills up, the file turns read-only, another writer holds the lock. Counts what was lost,
what the upstream was asked (and billed) while nothing could be stored, and whether it recovers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import event
from support.receiver import Receiver
from support.wait import until

from drills.storage import read_only, snapshot
from drills.tally import Tally, dump, integrity, query
from monitor.config import parse_config
from monitor.daemon import Daemon
from monitor.daemon.options import Options
from monitor.store import migrate
from monitor.upstream.simulator import CallRecord, SimKnobs, Simulator

FAULTS = ("disk_full", "read_only", "locked")
#: how long each fault lasts: a lock must outlast the store's 5 s busy timeout to be a refusal
HOLD = {"disk_full": 3.0, "read_only": 3.0, "locked": 6.5}
HOOK_SECRET = "St0rageH00kPath"
CREATORS = [f"5c3bf7f7{n:016x}" for n in range(6)]
EVERY_S = 2.0
#: how long a call the gate let go may take to reach the simulator (a loaded host)
ON_THE_WIRE = 0.3


@dataclass
class DrillOutcome:
    """What one fault did: calls the upstream saw while writes were refused, and the logs."""

    kind: str
    calls_during: list[CallRecord] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def billed_during(self) -> int:
        return sum(r.billed for r in self.calls_during)

    def most_calls_per_series(self) -> int:
        return max(Counter(r.user_id for r in self.calls_during).values(), default=0)


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@contextlib.contextmanager
def _captured() -> Iterator[_Lines]:
    handler, logger = _Lines(), logging.getLogger("monitor")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


def _document(base_url: str, db: Path, hook: str) -> dict[str, Any]:
    return {
        "api": {"base_url": base_url, "timeout": "5s"},
        "budget": {"calls_per_minute": 120, "burst": 5, "daily_calls": 100000},
        "storage": {"url": f"sqlite+aiosqlite:///{db}"},
        "schedule": {"max_in_flight": 4, "retry_attempts": 1, "retry_base": "1s", "grace": "5s"},
        "defaults": {"every": f"{EVERY_S:g}s"},
        "channels": [{"name": "hook", "url": hook}],
        "notify": {"group_wait": "1s", "group_interval": "1s"},
        "rules": [
            {
                "name": "engaged",
                "kind": "threshold",
                "metric": "engage",
                "op": ">",
                "value": 0,
                "group_by": ["rule", "creator"],  # one message per creator, matched one by one
            }
        ],
        "creators": [{"user_id": u} for u in CREATORS],
    }


@contextlib.asynccontextmanager
async def _fault(kind: str, daemon: Daemon, path: Path) -> AsyncIterator[None]:
    if kind == "read_only":
        with read_only(path):
            yield
        return
    if kind == "locked":
        async with _other_writer(path):
            yield
        return
    # a full disk: no new page may be added (what the file holds can still be rewritten)
    pages = int(str(query(path, "PRAGMA page_count")[0][0]))
    engine = daemon.store._engine  # the drill reaches in: the fault lives on its connections

    def small_disk(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA max_page_count={pages}")
        finally:
            cursor.close()

    event.listen(engine.sync_engine, "connect", small_disk)
    await engine.dispose()  # pooled connections are replaced by ones with the limit
    try:
        yield
    finally:
        event.remove(engine.sync_engine, "connect", small_disk)
        await engine.dispose()


@contextlib.asynccontextmanager
async def _other_writer(path: Path) -> AsyncIterator[None]:
    """``other_writer`` without blocking the event loop while it waits for the lock: the daemon
    in this same loop may be inside a write transaction that must finish first."""

    def take() -> sqlite3.Connection:
        conn = sqlite3.connect(path, isolation_level=None, timeout=30, check_same_thread=False)
        conn.execute("BEGIN IMMEDIATE")
        return conn

    conn = await asyncio.to_thread(take)
    try:
        yield
    finally:
        conn.execute("ROLLBACK")
        conn.close()


def _settled(path: Path) -> bool:
    fetched = query(path, "SELECT count(DISTINCT creator_id) FROM daily_metrics")[0][0]
    waiting = query(path, "SELECT count(*) FROM notifications WHERE status != 'sent'")[0][0]
    alerts = query(path, "SELECT count(*) FROM alerts")[0][0]
    return fetched == len(CREATORS) and alerts == len(CREATORS) and waiting == 0


async def daemon_storage_drill(
    directory: Path, token: str, kind: str, *, hold: float | None = None
) -> tuple[Tally, DrillOutcome]:
    """Run the daemon, break the store for ``hold`` seconds, clear it, check what survived."""
    tally, outcome = Tally(f"daemon storage: {kind}"), DrillOutcome(kind)
    path = directory / f"daemon-{kind}.db"
    await migrate.upgrade(f"sqlite+aiosqlite:///{path}")
    async with Simulator(SimKnobs(seed=3, latency_ms=20)) as sim, Receiver() as receiver:
        hook = receiver.url(f"/hooks/{HOOK_SECRET}")
        config = parse_config(_document(sim.base_url, path, hook))
        options = Options(tick=0.5, drain_every=0.5, environ={"JUSTONEAPI_TOKEN": token})
        daemon = Daemon(config, options)
        with _captured() as logs:
            running = asyncio.get_running_loop().create_task(daemon.run())
            try:
                await until(lambda: _settled(path), 20, "the first round of fetches")
                before = snapshot(path)
                fetches_before = len(before["fetches"])
                async with _fault(kind, daemon, path):
                    began = time.monotonic()
                    started = len(sim.counters().log)
                    held = HOLD[kind] if hold is None else hold
                    await asyncio.sleep(held)
                    # a call the gate let go before the fault may reach the simulator after it
                    # began (the daemon shares this event loop, which the fault's set-up blocks)
                    outcome.calls_during = [
                        r for r in sim.counters().log[started:] if r.monotonic > began + ON_THE_WIRE
                    ]
                outcome.errors = list(logs.lines)
                recovered = sim.counters().calls
                # the store backoff doubles while the fault lasts, so its last pause (and the
                # wait before the first write goes through) grows with the hold
                await until(
                    lambda: sim.counters().calls >= recovered + len(CREATORS) and _settled(path),
                    20 + held,
                    "fetches after the fault cleared",
                )
            finally:
                daemon.request_stop()
                code = await asyncio.wait_for(running, timeout=20)
        _score(tally, outcome, path, before, fetches_before, receiver, code)
        # every fetch the upstream saw (billed or not) has its fetches row, once; every balance
        # reading (the daemon's at start) its balance_readings row
        (rows,) = query(path, "SELECT count(*) FROM fetches")[0]
        calls = sim.counters().by_endpoint.get("core", 0)
        tally.lose(max(0, calls - int(rows)), f"{kind}: calls without their fetches row")
        tally.duplicate(max(0, int(rows) - calls), f"{kind}: more fetches rows than calls")
        (readings,) = query(path, "SELECT count(*) FROM balance_readings")[0]
        asked = sim.counters().by_endpoint.get("balance", 0)
        tally.lose(max(0, asked - int(readings)), f"{kind}: balance readings not stored")
        tally.leak([*logs.lines, dump(path)], [token, hook, HOOK_SECRET], "logs and database")
    return tally, outcome


def _score(
    tally: Tally,
    outcome: DrillOutcome,
    path: Path,
    before: dict[str, Any],
    fetches_before: int,
    receiver: Receiver,
    code: int,
) -> None:
    tally.faults += 1
    if code != 0:
        tally.notes.append(f"{outcome.kind}: the daemon exited {code}")
    if not outcome.errors:
        tally.notes.append(f"{outcome.kind}: no error was logged while writes were refused")
    for line in outcome.errors:
        if "\n" in line or "database" not in line:
            tally.notes.append(f"{outcome.kind}: unclear error {line[:120]!r}")
    after = snapshot(path)
    # the ledger's counts grow after the fault; a day may not vanish and a count may not drop
    ledger = dict(after["ledger"])
    tally.lose(
        sum(1 for day, calls in before["ledger"] if int(ledger.get(day, -1)) < int(calls)),
        f"{outcome.kind}: a ledger day went back",
    )
    for table, rows in before.items():
        if table == "ledger":
            continue
        now = after[table]
        if isinstance(rows, int):
            tally.rows_checked += rows
            tally.lose(max(0, rows - now), f"{outcome.kind}: {table} shrank")
            continue
        tally.rows_checked += len(rows)
        tally.lose(len([r for r in rows if r not in now]), f"{outcome.kind}: {table} rows gone")
    verdict = integrity(path)
    if verdict != "ok":
        tally.lose(1, f"{outcome.kind}: integrity_check says {verdict}")
    if len(after["fetches"]) <= fetches_before:
        tally.lose(1, f"{outcome.kind}: nothing was recorded after the fault cleared")
    titles = Counter(str(body["title"]) for body in receiver.bodies())
    stored = [str(t) for _id, t in after["outbox"]]
    tally.lose(len([t for t in stored if t not in titles]), f"{outcome.kind}: never delivered")
    tally.duplicate(sum(n - 1 for n in titles.values() if n > 1), f"{outcome.kind}: sent twice")
    # calls sent while nothing could be stored: billed ones are money spent on lost data
    lost_calls = len(outcome.calls_during)
    if lost_calls:
        tally.notes.append(
            f"{outcome.kind}: {lost_calls} upstream calls ({outcome.billed_during} billed) "
            f"while writes were refused, up to {outcome.most_calls_per_series()} per series"
        )
