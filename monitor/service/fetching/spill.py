"""Paid answers the database refused: held in memory (bounded), spilled to a JSON-lines file
beside the database, and stored once each (by attempt id) when the database takes writes again.
While anything is held, or a write just failed, no new call may go (``Spill.waiting``).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import secrets
import stat
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import fields
from datetime import date, datetime
from pathlib import Path
from typing import IO, Any

from monitor.errors import StoreError, WritesRefused
from monitor.model import (
    CORE,
    FANS,
    NOTES,
    Advertise,
    Business,
    CoreData,
    DailyPoint,
    DateType,
    FollowerPoint,
    ListedNote,
    Note,
    NotePage,
    NoteStats,
    NoteType,
    Variant,
)
from monitor.policy.budget import quarter_of
from monitor.store import FetchRecord, Store

log = logging.getLogger(__name__)

#: answers kept in memory at most; beyond it only the spill file keeps them (no call goes while
#: anything is held, so a fault holds at most the calls on the wire when it began)
MAX_HELD = 5000
#: the spill file beside a SQLite database: ``history.db`` -> ``history.db.pending.jsonl``
SUFFIX = ".pending.jsonl"
#: answers per transaction when the held ones are written back
_BATCH = 200
_FORMAT = 1


def spill_path(url: str, configured: Path | None, environ: Mapping[str, str]) -> Path | None:
    """Where held answers are spilled: ``storage.spill_file``; else beside a SQLite file; else
    (PostgreSQL) in systemd's ``$STATE_DIRECTORY``, ``$XDG_STATE_HOME`` or ``~/.local/state``
    under ``creator-monitor/``. None: memory only (an in-memory SQLite database)."""
    if configured is not None:
        return configured.expanduser()
    if url.startswith("sqlite"):
        database = url.split(":///", 1)[1] if ":///" in url else ""
        if database in ("", ":memory:") or database.startswith("file:"):
            return None
        db = Path(database).expanduser().resolve()  # beside the real file, through symlinks
        return db.with_name(db.name + SUFFIX)
    state = environ.get("STATE_DIRECTORY", "").split(":")[0] or environ.get("XDG_STATE_HOME", "")
    base = Path(state) if state else Path.home() / ".local" / "state"
    # the database's name without user or password: host, port and database
    where = url.split("@", 1)[-1].split("?", 1)[0]
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", where).strip("-") or "postgresql"
    return base / "creator-monitor" / f"pending-{name}.jsonl"


def new_attempt_id(now: datetime) -> str:
    """32 hex characters, time-ordered (index inserts stay local), unique by 64 random bits."""
    return f"{int(now.timestamp() * 1_000_000):016x}{secrets.token_hex(8)}"


# --------------------------------------------------------------------------- the file format


def _point(point: DailyPoint) -> dict[str, Any]:
    return {f.name: getattr(point, f.name) for f in fields(point)} | {
        "date_key": point.date_key.isoformat()
    }


def _unpoint(data: Mapping[str, Any]) -> DailyPoint:
    return DailyPoint(**{**data, "date_key": date.fromisoformat(data["date_key"])})


def _time(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _untime(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def encode(record: FetchRecord) -> str:
    """One JSON line holding everything ``store_held`` needs."""
    data = record.data
    body: dict[str, Any] = {
        "format": _FORMAT,
        "attempt_id": record.attempt_id,
        "creator_id": record.creator_id,
        "variant": record.variant.query(),
        "started_at": _time(record.started_at),
        "due_at": _time(record.due_at),
        "latency_ms": record.latency_ms,
        "http_status": record.http_status,
        "code": record.code,
        "billed": record.billed,
        "billed_day": record.billed_day,
        "billed_slot": _time(record.billed_slot),
        "error": record.error,
        "raw_body": record.raw_body if record.keep_raw else None,
        "keep_raw": record.keep_raw,
        "next_due_at": _time(record.next_due_at),
        "source": record.variant.source,
        "followers": None
        if record.followers is None
        else [[p.date_key.isoformat(), p.fans] for p in record.followers],
        "note_page": None if record.note_page is None else _page(record.note_page),
        "unreadable_params": None
        if record.unreadable_params is None
        else dict(record.unreadable_params),
        "data": None
        if data is None
        else {
            "summary": _point(data.summary),
            "daily": [_point(p) for p in data.daily],
            "record_time": _time(data.record_time),
        },
    }
    return json.dumps(body, separators=(",", ":"))


def decode(line: str) -> FetchRecord:
    """The record ``encode`` wrote; ValueError/KeyError/TypeError on a line it did not write."""
    body = json.loads(line)
    if body.get("format") != _FORMAT:
        raise ValueError(f"unknown spill format {body.get('format')!r}")
    q = body["variant"]
    variant = Variant(
        Business(q["business"]),
        NoteType(q["noteType"]),
        DateType(q["dateType"]),
        Advertise(q["advertiseSwitch"]),
        source=_source(body.get("source", CORE)),  # a line spilled before sources: core's
    )
    followers = body.get("followers")
    page = body.get("note_page")
    kept = body.get("unreadable_params")
    raw = body["data"]
    data = None
    if raw is not None:
        data = CoreData(
            summary=_unpoint(raw["summary"]),
            daily=tuple(_unpoint(p) for p in raw["daily"]),
            record_time=_untime(raw["record_time"]),
        )
    started = _untime(body["started_at"])
    assert started is not None
    billed_day = body["billed_day"]
    # a line spilled before the quarter hour travelled with it: the call's own quarter hour
    billed_slot = _untime(body.get("billed_slot"))
    if billed_day is not None and billed_slot is None:
        billed_slot = quarter_of(started)
    return FetchRecord(
        creator_id=int(body["creator_id"]),
        variant=variant,
        started_at=started,
        due_at=_untime(body["due_at"]),
        latency_ms=body["latency_ms"],
        http_status=body["http_status"],
        code=body["code"],
        billed=bool(body["billed"]),
        error=body["error"],
        data=data,
        raw_body=body["raw_body"],
        keep_raw=bool(body["keep_raw"]),
        next_due_at=_untime(body["next_due_at"]),
        attempt_id=body["attempt_id"],
        billed_day=billed_day,
        billed_slot=billed_slot,
        followers=None
        if followers is None
        else tuple(FollowerPoint(date.fromisoformat(day), int(fans)) for day, fans in followers),
        note_page=None if page is None else _unpage(page),
        unreadable_params=None if kept is None else {str(k): str(v) for k, v in kept.items()},
    )


def _source(name: object) -> str:
    if name not in (CORE, FANS, NOTES):
        raise ValueError(f"unknown source {name!r} in a spilled answer")
    return str(name)


def _page(page: NotePage) -> dict[str, Any]:
    return {
        "page": page.page,
        "total": page.total,
        "record_time": _time(page.record_time),
        "notes": [
            {
                "id": e.note.note_id,
                "title": e.note.title,
                "published": e.note.published.isoformat(),
                "video": e.note.video,
                "ad": e.note.ad,
                "brand": e.note.brand,
                "reads": e.stats.reads,
                "likes": e.stats.likes,
                "collects": e.stats.collects,
            }
            for e in page.notes
        ],
    }


def _unpage(raw: Mapping[str, Any]) -> NotePage:
    notes = tuple(
        ListedNote(
            Note(
                note_id=str(n["id"]),
                title=str(n["title"]),
                published=date.fromisoformat(n["published"]),
                video=bool(n["video"]),
                ad=bool(n["ad"]),
                brand=n["brand"],
            ),
            NoteStats(reads=n["reads"], likes=n["likes"], collects=n["collects"]),
        )
        for n in raw["notes"]
    )
    return NotePage(
        page=int(raw["page"]),
        notes=notes,
        total=raw["total"],
        record_time=_untime(raw["record_time"]),
    )


# --------------------------------------------------------------------------- the hold


class Spill:
    """One per process: the answers waiting for the database, and whether calls may go."""

    def __init__(self, path: Path | None, *, limit: int = MAX_HELD) -> None:
        self.path = path
        self._limit = limit
        self._memory: list[FetchRecord] = []
        self._unspilled: list[FetchRecord] = []  # held, but the spill file refused them too
        self._on_file = _count_lines(path)
        self._fault: str | None = None
        self._replaying = False
        self._spill_failed = False

    @property
    def waiting(self) -> bool:
        """True while no call may go: answers are held, or the last write failed."""
        return bool(self._memory or self._on_file or self._fault)

    @property
    def held(self) -> int:
        """Answers known to wait (in memory, or on file from this or an earlier run)."""
        return max(len(self._memory), self._on_file)

    def where(self) -> str:
        """Where the held answers are kept, for a message."""
        if self.path is not None and not self._unspilled:
            return str(self.path)
        if self.path is None:
            return "memory only (no spill file)"
        return f"memory only ({self.path} could not be written)"

    def refusal(self) -> WritesRefused:
        why = f": {self._fault}" if self._fault else ""
        return WritesRefused(
            f"the database refuses writes{why}; {self.held} paid answers held in {self.where()}; "
            "no call is sent until they are stored"
        )

    def refused(self, exc: StoreError) -> None:
        """A write failed: no call goes until a write goes through (``replay``)."""
        if not isinstance(exc, WritesRefused):  # it says so already
            self._fault = str(exc)

    def keep(self, record: FetchRecord, exc: StoreError | None = None) -> str:
        """Hold ``record`` (the database refused it, or answers before it still wait) and
        spill it; returns the line that says where it waits."""
        if exc is not None:
            self.refused(exc)
        first = not self._memory and not self._on_file
        self._unspilled.append(record)
        spilled = self._spill_pending()
        if len(self._memory) < self._limit:
            self._memory.append(record)
        elif not spilled:
            log.error(
                "a paid answer (creator %d) is lost: %d answers are held and %s refuses more",
                record.creator_id,
                self._limit,
                self.path or "memory",
            )
        where = self.where()
        if first:
            log.error(
                "the database refuses writes; paid answers are held in %s and will be stored "
                "when it takes writes again: %s",
                where,
                self._fault,
            )
        return (
            f"the database refused a paid answer ({self._fault}); it is kept in {where} and "
            "will be stored when the database takes writes"
        )

    async def flush(self, store: Store, touch: Callable[[], Awaitable[None]]) -> list[FetchRecord]:
        """The store-health probe: write the held answers, or (none held) ``touch`` a row.
        Raises StoreError while the database still refuses; returns what was stored."""
        if self._memory or self._on_file or self._has_file():
            return await self.replay(store)
        try:
            await touch()
        except StoreError as exc:
            self.refused(exc)
            raise
        self._fault = None
        return []

    async def replay(self, store: Store) -> list[FetchRecord]:
        """Store every held answer (this process's and the spill file's), each once; then the
        spill file goes. Raises StoreError (everything stays held) while the database refuses."""
        self._replaying = True
        failed = True
        try:
            with self._locked_file() as handle:
                from_file = _read(handle, self.path) if handle is not None else []
                snapshot = list(self._memory)
                records = _merged(from_file, snapshot)
                try:
                    for start in range(0, len(records), _BATCH):
                        await store.store_held(records[start : start + _BATCH])
                except StoreError as exc:
                    self.refused(exc)
                    raise
                failed = False
                if handle is not None and self.path is not None and _regular(handle):
                    self.path.unlink(missing_ok=True)  # under the lock: see ``_locked_file``
        finally:
            self._replaying = False
            if failed:  # answers held while this replay waited: on file before anything else
                self._spill_pending()
        done = {id(rec) for rec in snapshot}
        self._memory = [rec for rec in self._memory if id(rec) not in done]
        self._unspilled = [rec for rec in self._unspilled if id(rec) not in done]
        self._on_file = 0
        self._fault = None
        self._spill_pending()  # held while this replay ran: on file now, stored next time
        if records:
            log.info("stored %d held paid answers; the database takes writes again", len(records))
        return records

    def _spill_pending(self) -> bool:
        """Append the answers not on file yet (not while a replay holds the file); True when
        none is left off it."""
        if self._replaying or not self._unspilled:
            return not self._unspilled
        if not self._append(self._unspilled):
            return False
        self._on_file += len(self._unspilled)
        self._unspilled = []
        return True

    def _has_file(self) -> bool:
        return self.path is not None and _count_lines(self.path) > 0

    def _append(self, records: Sequence[FetchRecord]) -> bool:
        """Append and fsync; False (nothing half-written left behind) when the file refuses."""
        if self.path is None:
            return False
        data = "".join(encode(rec) + "\n" for rec in records).encode()
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            with _open_locked(self.path) as fd:
                size = os.fstat(fd).st_size
                try:
                    os.write(fd, data)
                    os.fsync(fd)
                except OSError:
                    os.ftruncate(fd, size)  # a torn line would corrupt the next append
                    raise
        except OSError as exc:
            if not self._spill_failed:  # once per fault, not per answer
                log.warning("cannot spill held answers to %s: %s", self.path, exc.strerror or exc)
            self._spill_failed = True
            return False
        self._spill_failed = False
        return True

    @contextlib.contextmanager
    def _locked_file(self) -> Iterator[IO[str] | None]:
        """The spill file, locked against other processes appending or replaying (None when
        there is no file)."""
        if self.path is None or not self.path.exists():
            yield None
            return
        try:
            cm = _open_locked(self.path, create=False)
            fd = cm.__enter__()
        except FileNotFoundError:
            yield None
            return
        try:
            with open(fd, encoding="utf-8", closefd=False) as handle:
                yield handle
        finally:
            cm.__exit__(None, None, None)


@contextlib.contextmanager
def _open_locked(path: Path, *, create: bool = True) -> Iterator[int]:
    """An exclusive ``flock`` on the file at ``path`` itself: a file another process unlinked
    (replayed) while we waited for the lock is opened again, so nothing goes to a dead inode."""
    flags = os.O_RDWR | os.O_APPEND | (os.O_CREAT if create else 0)
    while True:
        fd = os.open(path, flags, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
        except BaseException:
            os.close(fd)
            raise
        if same:
            break
        os.close(fd)
        if not create:
            raise FileNotFoundError(path)
    try:
        yield fd
    finally:
        os.close(fd)  # releases the lock


def _regular(handle: IO[str]) -> bool:
    """The spill file is a file: never remove a device or a FIFO named as one."""
    return stat.S_ISREG(os.fstat(handle.fileno()).st_mode)


def _count_lines(path: Path | None) -> int:
    if path is None:
        return 0
    try:
        with path.open("rb") as handle:
            return sum(1 for line in handle if line.strip())
    except OSError:
        return 0


def _read(handle: IO[str], path: Path | None) -> list[FetchRecord]:
    records: list[FetchRecord] = []
    bad: list[str] = []
    handle.seek(0)
    for line in handle:
        if not line.strip():
            continue
        try:
            records.append(decode(line))
        except (ValueError, KeyError, TypeError, AssertionError):
            bad.append(line if line.endswith("\n") else line + "\n")
    if bad and path is not None:
        aside = path.with_name(path.name + ".rejected")
        with aside.open("a", encoding="utf-8") as out:
            out.writelines(bad)
        log.error("%d unreadable lines of %s moved to %s", len(bad), path, aside)
    return records


def _merged(first: Sequence[FetchRecord], second: Sequence[FetchRecord]) -> list[FetchRecord]:
    """Both lists, each attempt once, oldest call first (a later answer wins its points)."""
    seen: set[str] = set()
    out: list[FetchRecord] = []
    for rec in (*first, *second):
        key = rec.attempt_id
        if key is not None:
            if key in seen:
                continue
            seen.add(key)
        out.append(rec)
    out.sort(key=lambda rec: rec.started_at)
    return out
