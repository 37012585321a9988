"""Storage faults at the store level: the disk fills up, another writer holds the lock, the file
turns read-only. Each write under a fault fails whole with one clear ``StoreError`` line or
succeeds whole; nothing committed before is lost; the outbox is intact and drains once after.
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

from receiver_support import Receiver
from sqlalchemy import event

from drills.tally import Tally, integrity, query
from monitor import migrate
from monitor.client import parse_core_data
from monitor.config import NotifyConfig
from monitor.errors import StoreError
from monitor.model import AlertState, Creator, FetchResult, Phase, Severity, Variant
from monitor.notify import Notifier
from monitor.store import Store
from monitor.store.outbox import NewMessage

T0 = datetime(2025, 12, 11, 2, 0, tzinfo=UTC)
USER = "5c3bf7f7000000000602fd63"
DATA = Path(__file__).resolve().parent.parent / "data"
FAULTS = ("disk_full", "locked", "read_only")


def sample() -> FetchResult:
    return parse_core_data((DATA / "core_data_success_30d.json").read_text(encoding="utf-8"))


async def record(store: Store, creator_id: int, *, pad: int = 0) -> int:
    """One successful fetch; ``pad`` grows the raw body so that a full disk shows."""
    result = sample()
    raw = result.raw_body + " " * pad
    return await store.record_fetch(
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


async def _attempts(store: Store, creator_id: int, round_no: int) -> dict[str, Attempt]:
    return {
        "record_fetch": lambda: record(store, creator_id, pad=400_000),
        "alert+outbox": lambda: store.apply_transition(
            alert(creator_id, f"during-{round_no}"), [message(f"during {round_no}")], now=T0
        ),
        "reserve_call": lambda: store.reserve_call(f"2025-12-{12 + round_no:02d}", 100),
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
        await store.apply_transition(alert(creator_id, "before"), [message("before")], now=T0)
        await store.reserve_call("2025-12-11", 100)
    before = snapshot(path)
    errors = await _under_fault(kind, path, url, creator_id, round_no, tally)
    tally.faults += 1
    for text in errors:
        if "\n" in text or not text.startswith("database "):
            tally.notes.append(f"{kind}: unclear error {text!r}")
    if not errors:
        tally.notes.append(f"{kind}: no write failed under the fault")
    after = snapshot(path)
    _compare(kind, before, after, tally)
    await _recovers(url, path, creator_id, receiver, tally, kind)


async def _under_fault(
    kind: str, path: Path, url: str, creator_id: int, round_no: int, tally: Tally
) -> list[str]:
    errors: list[str] = []
    busy = timedelta(milliseconds=200)
    store = Store.open(url, clock=lambda: T0, busy_timeout=busy)
    try:
        if kind == "disk_full":
            pages = int(str(query(path, "PRAGMA page_count")[0][0]))
            _limit_pages(store, pages)
        with _fault(kind, path):
            for name, attempt in (await _attempts(store, creator_id, round_no)).items():
                try:
                    await attempt()
                except StoreError as exc:
                    errors.append(str(exc))
                except Exception as exc:  # anything else is a finding, not a crash of the drill
                    tally.notes.append(f"{kind}/{name}: {type(exc).__name__}: {exc}")
                    tally.lose(1, f"{kind}/{name} raised {type(exc).__name__}, not StoreError")
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
    url: str, path: Path, creator_id: int, receiver: Receiver, tally: Tally, kind: str
) -> None:
    """With the fault gone: writes work, the database is sound, each message goes out once."""
    async with Store.open(url, clock=lambda: T0) as store:
        await record(store, creator_id)
        await store.apply_transition(alert(creator_id, "after"), [message("after")], now=T0)
        config = NotifyConfig(backoff_base=timedelta(seconds=1))
        channels = {"ops": receiver.url(f"/{path.stem}")}
        async with Notifier(store, channels, config, owner="drill", jitter=0.0) as notifier:
            for minute in range(3):
                await notifier.drain(T0 + timedelta(minutes=minute))
        counts = await store.outbox_counts()
    check = integrity(path)
    if check != "ok":
        tally.lose(1, f"{kind}: integrity_check says {check}")
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
