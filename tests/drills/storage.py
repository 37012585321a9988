"""Storage faults at the store level: the disk fills up, another writer holds the lock, the file
turns read-only. Each write under a fault fails whole with one clear ``StoreError`` line or
succeeds whole; nothing committed before is lost; the outbox is intact and drains once after.

The writes are the production ones: a fetch through ``fetch.Fetcher`` (gate, simulator, record,
hold) and alert transitions through ``commit_transition``. A paid answer the fault refused is
held and must be stored, once, when the fault clears.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import SecretStr
from sqlalchemy import event
from support.receiver import Receiver

from drills.tally import Tally, integrity, query
from monitor.config import NotifyConfig, parse_config
from monitor.errors import StoreError
from monitor.model import AlertState, Creator, FetchResult, Phase, Severity, Variant
from monitor.notify.sender import Notifier
from monitor.policy.budget import BudgetPolicy
from monitor.service.fetching.fetch import Fetcher
from monitor.service.fetching.gate import BudgetGate
from monitor.service.fetching.slot import Run, Slot
from monitor.service.fetching.spill import Spill
from monitor.store import FetchRecord, Store, migrate
from monitor.store.outbox import NewMessage
from monitor.upstream.client import JustOneClient, parse_core_data
from monitor.upstream.simulator import SimKnobs, Simulator

T0 = datetime(2025, 12, 11, 2, 0, tzinfo=UTC)
USER = "5c3bf7f7000000000602fd63"
SHANGHAI = ZoneInfo("Asia/Shanghai")
DATA = Path(__file__).resolve().parent.parent / "data"
FAULTS = ("disk_full", "locked", "read_only")


def sample() -> FetchResult:
    return parse_core_data((DATA / "core_data_success_30d.json").read_text(encoding="utf-8"))


async def record(store: Store, creator_id: int, *, pad: int = 0) -> int:
    """One successful fetch; ``pad`` grows the raw body so that a full disk shows."""
    result = sample()
    raw = result.raw_body + " " * pad
    return (
        await store.record_fetches(
            [
                FetchRecord(
                    creator_id,
                    Variant(),
                    started_at=T0,
                    due_at=T0,
                    latency_ms=result.latency_ms,
                    http_status=200,
                    code=0,
                    billed=True,
                    error=None,
                    data=result.data,
                    raw_body=raw,
                )
            ]
        )
    )[0]


def alert(creator_id: int, rule: str) -> AlertState:
    return AlertState(
        rule=rule,
        creator_id=creator_id,
        scope=USER,
        severity=Severity.WARNING,
        state=Phase.FIRING,
        pending_since=T0,
        fired_at=T0,
        hits=1,
        firing_sent=True,
        last_notified_at=T0,
        summary=f"{rule} fired",
    )


def message(title: str) -> NewMessage:
    return NewMessage(channel="ops", event="firing", severity="warning", title=title, body=title)


def snapshot(path: Path) -> dict[str, Any]:
    """What must survive a fault: the committed rows, by table."""
    return {
        "fetches": query(path, "SELECT id, code, points FROM fetches ORDER BY id"),
        "points": query(path, "SELECT count(*) FROM daily_metrics")[0][0],
        "raw": query(path, "SELECT fetch_id FROM raw_responses ORDER BY fetch_id"),
        "alerts": query(path, "SELECT id, rule, state FROM alerts ORDER BY id"),
        "outbox": query(path, "SELECT id, title FROM notifications ORDER BY id"),
        "ledger": query(path, "SELECT day, calls FROM budget_days ORDER BY day"),
    }


# --------------------------------------------------------------------------- the faults


def _limit_pages(store: Store, pages: int) -> None:
    # PRAGMA max_page_count is per connection: set it on every connection the pool opens
    @event.listens_for(store._engine.sync_engine, "connect")
    def _small_disk(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA max_page_count={pages}")
        finally:
            cursor.close()


@contextlib.contextmanager
def read_only(path: Path) -> Iterator[None]:
    """The database and its WAL become unwritable (chmod; root needs ``chattr +i``)."""
    files = [p for p in (path, path.with_name(path.name + "-wal")) if p.exists()]
    if os.geteuid() != 0:
        modes = {p: p.stat().st_mode for p in files}
        for p in files:
            p.chmod(0o444)
        try:
            yield
        finally:
            for p, mode in modes.items():
                p.chmod(mode)
        return
    chattr = shutil.which("chattr")
    if chattr is None:
        raise RuntimeError("running as root without chattr: cannot make a file read-only")
    subprocess.run([chattr, "+i", *map(str, files)], check=True)
    try:
        yield
    finally:
        subprocess.run([chattr, "-i", *map(str, files)], check=True)


def can_make_read_only() -> bool:
    return os.geteuid() != 0 or shutil.which("chattr") is not None


@contextlib.contextmanager
def other_writer(path: Path) -> Iterator[None]:
    """Another process-like writer holds SQLite's write lock for the duration."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        yield
        conn.execute("ROLLBACK")
    finally:
        conn.close()


def _fault(kind: str, path: Path) -> contextlib.AbstractContextManager[None]:
    """The fault around the writes; a full disk is set up on the store's connections instead."""
    if kind == "locked":
        return other_writer(path)
    if kind == "read_only":
        return read_only(path)
    return contextlib.nullcontext()


# --------------------------------------------------------------------------- the drill


Attempt = Callable[[], Awaitable[object]]
DRILL_TOKEN = "drill-T0ken-4b9e1c7a2f"


def _now() -> datetime:
    return datetime.now(UTC)


async def fetcher(store: Store, sim: Simulator, client: JustOneClient, spill: Spill) -> Fetcher:
    """The daemon's own fetch path on ``store``: budget, simulator, record, hold."""
    document = {
        "api": {"base_url": sim.base_url},
        "budget": {"calls_per_minute": 600, "burst": 10, "daily_calls": 1000},
        "storage": {"url": "sqlite+aiosqlite:///unused.db"},
        "schedule": {"retry_attempts": 0},
    }
    config = parse_config(document)
    gate = await BudgetGate.open(BudgetPolicy.from_config(config), store, clock=_now)
    return Fetcher(config, client, store, gate, None, clock=_now, spill=spill)


async def spend(store: Store, moment: datetime) -> None:
    """One call counted by the gate at ``moment`` (its ledger and bucket writes)."""
    budget = BudgetPolicy(calls_per_minute=600, burst=100, daily_calls=100, zone=SHANGHAI)
    gate = await BudgetGate.open(budget, store, clock=lambda: moment)
    await gate.acquire(wait=False)
    gate.answered()


def _slot(creator_id: int) -> Slot:
    return Slot(USER, creator_id, Creator(USER, "Lilyy"), Variant(), timedelta(days=1), _now())


async def _attempts(
    store: Store, creator_id: int, round_no: int, fetch: Fetcher
) -> dict[str, Attempt]:
    return {
        "fetch": lambda: fetch.run(_slot(creator_id), reschedule=True),
        "alert+outbox": lambda: store.commit_transition(
            alert(creator_id, f"during-{round_no}"),
            [message(f"during {round_no}")],
            now=T0,
            expect=None,
        ),
        "gate spend": lambda: spend(store, T0 + timedelta(days=1 + round_no)),
    }


async def one_fault(
    kind: str, directory: Path, receiver: Receiver, tally: Tally, round_no: int
) -> None:
    """Seed, break, write under the fault, check nothing was lost, clear, check it recovers."""
    path = directory / f"{kind}-{round_no}.db"
    url = f"sqlite+aiosqlite:///{path}"
    await migrate.upgrade(url)
    async with Store.open(url, clock=lambda: T0) as store:
        ids = await store.sync_creators([Creator(USER, "Lilyy")])
        creator_id = ids[USER]
        await record(store, creator_id)
        await store.commit_transition(
            alert(creator_id, "before"), [message("before")], now=T0, expect=None
        )
        await spend(store, T0)
    before = snapshot(path)
    spill = Spill(path.with_name(path.name + ".pending.jsonl"))
    async with (
        Simulator(SimKnobs(latency_ms=5)) as sim,
        JustOneClient(base_url=sim.base_url, token=SecretStr(DRILL_TOKEN)) as client,
    ):
        errors = await _under_fault(
            kind, path, url, creator_id, round_no, tally, sim, client, spill
        )
        tally.faults += 1
        for text in errors:
            if "\n" in text or "database " not in text:
                tally.notes.append(f"{kind}: unclear error {text!r}")
        if not errors:
            tally.notes.append(f"{kind}: no write failed under the fault")
        after = snapshot(path)
        _compare(kind, before, after, tally)
        await _recovers(url, path, creator_id, receiver, tally, kind, sim, client, spill)


async def _under_fault(
    kind: str,
    path: Path,
    url: str,
    creator_id: int,
    round_no: int,
    tally: Tally,
    sim: Simulator,
    client: JustOneClient,
    spill: Spill,
) -> list[str]:
    errors: list[str] = []
    busy = timedelta(milliseconds=200)
    store = Store.open(url, clock=lambda: T0, busy_timeout=busy)
    try:
        fetch = await fetcher(store, sim, client, spill)
        if kind == "disk_full":
            pages = int(str(query(path, "PRAGMA page_count")[0][0]))
            _limit_pages(store, pages)
            await store._engine.dispose()  # the pool's connections come back with the limit
        with _fault(kind, path):
            for name, attempt in (await _attempts(store, creator_id, round_no, fetch)).items():
                calls = sim.counters().calls
                try:
                    ended = await attempt()
                except StoreError as exc:
                    errors.append(str(exc))
                except Exception as exc:  # anything else is a finding, not a crash of the drill
                    tally.notes.append(f"{kind}/{name}: {type(exc).__name__}: {exc}")
                    tally.lose(1, f"{kind}/{name} raised {type(exc).__name__}, not StoreError")
                else:
                    if isinstance(ended, Run) and not ended.stored:  # held, or no call went
                        errors.append(ended.reason)
                        if ended.held is not None and ended.held.billed and not spill.waiting:
                            tally.lose(1, f"{kind}/{name}: a held answer is not waiting")
                if name != "fetch" and sim.counters().calls != calls:
                    tally.notes.append(f"{kind}/{name}: a call went out")
            # while anything waits, the fetch path sends nothing
            before = sim.counters().calls
            with contextlib.suppress(StoreError):
                await fetch.run(_slot(creator_id), reschedule=True)
            if spill.waiting and sim.counters().calls != before:
                tally.notes.append(f"{kind}: a call went out while writes were refused")
    finally:
        await store.close()
    return errors


def _compare(kind: str, before: dict[str, Any], after: dict[str, Any], tally: Tally) -> None:
    for table, rows in before.items():
        now = after[table]
        if isinstance(rows, int):
            tally.rows_checked += rows
            tally.lose(max(0, rows - now), f"{kind}: {table} shrank")
            continue
        tally.rows_checked += len(rows)
        missing = [r for r in rows if r not in now]
        tally.lose(len(missing), f"{kind}: {table} rows {missing}")
    # a write that failed must leave nothing behind: every alert has its message
    titles = {t for _id, t in after["outbox"]}
    for _id, rule, _state in after["alerts"]:
        expected = "before" if rule == "before" else str(rule).replace("-", " ")
        if expected not in titles:
            tally.lose(1, f"{kind}: alert {rule} committed without its outbox message")
    for fetch_id, code, points in after["fetches"]:
        if code == 0 and points != 30:
            tally.lose(1, f"{kind}: fetch {fetch_id} has {points} points, expected 30")


async def _recovers(
    url: str,
    path: Path,
    creator_id: int,
    receiver: Receiver,
    tally: Tally,
    kind: str,
    sim: Simulator,
    client: JustOneClient,
    spill: Spill,
) -> None:
    """With the fault gone: held answers are stored once, writes work, the database is sound,
    each message goes out once, and every billed call has its row."""
    async with Store.open(url, clock=lambda: T0) as store:
        assert spill.path is not None
        spilled = spill.path.read_bytes() if spill.path.exists() else b""
        await spill.replay(store)
        if spilled:  # a crash after the write, before the file went: the next start replays it
            spill.path.write_bytes(spilled)
            await Spill(spill.path).replay(store)
        fetch = await fetcher(store, sim, client, spill)
        await fetch.run(_slot(creator_id), reschedule=True)
        await store.commit_transition(
            alert(creator_id, "after"), [message("after")], now=T0, expect=None
        )
        config = NotifyConfig(backoff_base=timedelta(seconds=1))
        channels = {"ops": receiver.url(f"/{path.stem}")}
        async with Notifier(store, channels, config, owner="drill", jitter=0.0) as notifier:
            for minute in range(3):
                await notifier.drain(T0 + timedelta(minutes=minute))
        counts = await store.outbox_counts()
    check = integrity(path)
    if check != "ok":
        tally.lose(1, f"{kind}: integrity_check says {check}")
    counters = sim.counters()
    (rows,) = query(path, "SELECT count(*) FROM fetches WHERE attempt_id IS NOT NULL")[0]
    tally.rows_checked += int(rows)
    tally.lose(max(0, counters.calls - int(rows)), f"{kind}: calls without their fetches row")
    tally.duplicate(max(0, int(rows) - counters.calls), f"{kind}: a fetch stored twice")
    titles = [b["title"] for b in receiver.bodies(f"/{path.stem}")]
    expected = sorted(str(t) for _id, t in query(path, "SELECT id, title FROM notifications"))
    tally.rows_checked += len(expected)
    tally.lose(len(set(expected) - set(titles)), f"{kind}: outbox messages never delivered")
    tally.duplicate(len(titles) - len(set(titles)), f"{kind}: a message delivered twice")
    if counts.get("pending") or counts.get("dead"):
        tally.lose(counts.get("pending", 0) + counts.get("dead", 0), f"{kind}: outbox {counts}")


async def storage_drill(
    directory: Path, rounds: int = 1, faults: tuple[str, ...] = FAULTS
) -> Tally:
    tally = Tally("storage faults")
    async with Receiver() as receiver:
        for round_no in range(rounds):
            for kind in faults:
                await one_fault(kind, directory, receiver, tally, round_no)
    return tally
