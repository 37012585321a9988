"""Paid answers the database refused: held in memory (bounded), spilled to a JSON-lines file
beside the database, and stored once each (by attempt id) when the database takes writes again.
While anything is held, or a write just failed, no new call may go (``Spill.waiting``).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import secrets
import stat
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO

from monitor.errors import StoreError, WritesRefused
from monitor.model import Variant
from monitor.service.fetching.spill_line import (
    OwedSeries,
    decode,
    decode_owed,
    encode,
    encode_owed,
    is_owed,
    new_owed_id,
)
from monitor.store import FetchRecord, Store

log = logging.getLogger(__name__)

#: answers kept in memory at most; beyond it only the spill file keeps them (no call goes while
#: anything is held, so a fault holds at most the calls on the wire when it began)
MAX_HELD = 5000
#: the spill file beside a SQLite database: ``history.db`` -> ``history.db.pending.jsonl``
SUFFIX = ".pending.jsonl"
#: answers per transaction when the held ones are written back
_BATCH = 200


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


# --------------------------------------------------------------------------- the hold


class Spill:
    """One per process: the answers waiting for the database, whether calls may go, and the
    series whose stored answers' rules are owed (kept on file until those rules ran)."""

    def __init__(self, path: Path | None, *, limit: int = MAX_HELD) -> None:
        self.path = path
        self._limit = limit
        self._memory: list[FetchRecord] = []
        self._unspilled: list[FetchRecord] = []  # held, but the spill file refused them too
        self._on_file, self._owed_on_file = _tally(path)
        self._fault: str | None = None
        self._replaying = False
        self._spill_failed = False
        #: owed rules not on file yet (a replay held the file, or the file refused them)
        self._owed_unspilled: list[OwedSeries] = []
        #: ids of the owed-rules lines this process wrote or read: the ones ``rules_ran`` removes
        self._owed_known: set[str] = set()
        #: owed series the last replays read from the file, until ``take_owed``
        self._owed_read: list[OwedSeries] = []
        self._owed_told = False  # "owed rules in memory only" said for this fault

    @property
    def waiting(self) -> bool:
        """True while no call may go: answers are held, or the last write failed."""
        return bool(self._memory or self._on_file or self._fault)

    @property
    def owes(self) -> bool:
        """Owed rules are on file (this or an earlier run's): a start's replay reads them."""
        return bool(self._owed_on_file)

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

    def owed_where(self) -> str:
        """Where owed rules are kept, for a message: the file (a restart runs them) or memory."""
        if self.path is not None and not self._owed_unspilled:
            return str(self.path)
        return (
            "memory only (no spill file)"
            if self.path is None
            else (f"memory only ({self.path} could not be written)")
        )

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

    def owe(self, creator_id: int, variant: Variant) -> None:
        """The series' answer is stored but the database refused its creator's rules: on file
        until ``rules_ran``, so a restart after a SIGKILL runs them (memory only when the file
        refuses the line, and the log says so)."""
        self._owed_unspilled.append(OwedSeries(creator_id, variant, new_owed_id()))
        self._spill_pending()
        if self._owed_unspilled and not self._replaying and not self._owed_told:
            self._owed_told = True
            log.error(
                "owed rules (creator %d) are kept in %s: a kill before the database takes "
                "them leaves them to each creator's next fetch",
                creator_id,
                self.owed_where(),
            )

    def take_owed(self) -> list[OwedSeries]:
        """The owed series replays read from the file (an earlier run's, or another process's),
        once: their rules are to run now."""
        owed, self._owed_read = self._owed_read, []
        return owed

    def rules_ran(self) -> None:
        """Every owed rule this process knew of ran: its lines leave the file (the file goes
        when nothing else is left in it, a regular file only). Nothing to do, no file touched,
        when none was owed."""
        waiting = {owed.owed_id for owed in self._owed_read}
        done = self._owed_known - waiting
        self._owed_unspilled = [o for o in self._owed_unspilled if o.owed_id in waiting]
        if not done or self._replaying or self.path is None:
            return
        try:
            with self._locked_file() as handle:
                if handle is None or not _regular(handle):
                    self._owed_known -= done
                    return
                handle.seek(0)
                lines = [line for line in handle if line.strip()]
                kept = [line for line in lines if not (is_owed(line) and _owed_id(line) in done)]
                if len(kept) != len(lines):
                    _replace(self.path, kept)
        except OSError as exc:  # the lines stay: the next start runs those rules once more
            log.warning("cannot remove owed rules that ran from %s: %s", self.path, exc)
            return
        self._owed_known -= done
        self._owed_on_file = sum(1 for line in kept if is_owed(line))

    async def flush(self, store: Store, touch: Callable[[], Awaitable[None]]) -> list[FetchRecord]:
        """The store-health probe: write the held answers, or (none held) ``touch`` a row.
        Raises StoreError while the database still refuses; returns what was stored. Owed
        rules on file are read too (``take_owed``)."""
        answers, owed = _tally(self.path)
        if self._memory or self._on_file or answers:
            return await self.replay(store)
        try:
            await touch()
        except StoreError as exc:
            self.refused(exc)
            raise
        self._fault = None
        self._owed_told = False
        if owed:
            return await self.replay(store)
        return []

    async def replay(self, store: Store) -> list[FetchRecord]:
        """Store every held answer (this process's and the spill file's), each once; then the
        spill file goes, or keeps only its owed rules (``take_owed`` hands them out; they leave
        it once they ran). Raises StoreError (everything stays held) while the database refuses."""
        self._replaying = True
        failed = True
        try:
            with self._locked_file() as handle:
                read = _read(handle, self.path) if handle is not None else _Read([], [], 0)
                snapshot = list(self._memory)
                records = _merged(read.records, snapshot)
                try:
                    for start in range(0, len(records), _BATCH):
                        await store.store_held(records[start : start + _BATCH])
                except StoreError as exc:
                    self.refused(exc)
                    raise
                failed = False
                if handle is not None and self.path is not None and _regular(handle):
                    # under the lock: see ``_locked_file``
                    if not read.owed:
                        self.path.unlink(missing_ok=True)
                    elif read.lines > len(read.owed):
                        _replace(self.path, [encode_owed(o) + "\n" for o in read.owed])
        finally:
            self._replaying = False
            if failed:  # answers held while this replay waited: on file before anything else
                self._spill_pending()
        done = {id(rec) for rec in snapshot}
        self._memory = [rec for rec in self._memory if id(rec) not in done]
        self._unspilled = [rec for rec in self._unspilled if id(rec) not in done]
        self._on_file = 0
        self._owed_on_file = len(read.owed)
        fresh = [o for o in read.owed if o.owed_id not in {r.owed_id for r in self._owed_read}]
        self._owed_read.extend(fresh)
        self._owed_known.update(o.owed_id for o in read.owed)
        self._fault = None
        self._owed_told = False
        self._spill_pending()  # held while this replay ran: on file now, stored next time
        if records:
            log.info("stored %d held paid answers; the database takes writes again", len(records))
        return records

    def _spill_pending(self) -> bool:
        """Append the answers and owed rules not on file yet (not while a replay holds the
        file); True when no answer is left off it."""
        if self._replaying or not (self._unspilled or self._owed_unspilled):
            return not self._unspilled
        owed = self._owed_unspilled
        lines = [encode(rec) for rec in self._unspilled] + [encode_owed(o) for o in owed]
        if not self._append(lines):
            return not self._unspilled
        self._on_file += len(self._unspilled)
        self._owed_on_file += len(owed)
        self._owed_known.update(o.owed_id for o in owed)
        self._unspilled = []
        self._owed_unspilled = []
        return True

    def _append(self, lines: Sequence[str]) -> bool:
        """Append and fsync; False (nothing half-written left behind) when the file refuses."""
        if self.path is None:
            return False
        data = "".join(line + "\n" for line in lines).encode()
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


def _tally(path: Path | None) -> tuple[int, int]:
    """The answer lines and the owed-rules lines in the file at ``path`` (none: 0, 0)."""
    answers = owed = 0
    if path is None:
        return 0, 0
    try:
        with path.open("rb") as handle:
            for line in handle:
                if line.strip():
                    if is_owed(line):
                        owed += 1
                    else:
                        answers += 1
    except OSError:
        return 0, 0
    return answers, owed


@dataclass(frozen=True, slots=True)
class _Read:
    """What a replay read from the spill file: its answers, its owed rules, its line count."""

    records: list[FetchRecord]
    owed: list[OwedSeries]
    lines: int


def _read(handle: IO[str], path: Path | None) -> _Read:
    """Every line decoded; an unreadable one (a torn last line) is moved to ``.rejected``."""
    records: list[FetchRecord] = []
    owed: dict[str, OwedSeries] = {}
    bad: list[str] = []
    lines = 0
    handle.seek(0)
    for line in handle:
        if not line.strip():
            continue
        lines += 1
        try:
            if is_owed(line):
                series = decode_owed(line)
                owed[series.owed_id] = series
            else:
                records.append(decode(line))
        except (ValueError, KeyError, TypeError, AssertionError):
            bad.append(line if line.endswith("\n") else line + "\n")
    if bad and path is not None:
        aside = path.with_name(path.name + ".rejected")
        with aside.open("a", encoding="utf-8") as out:
            out.writelines(bad)
        log.error("%d unreadable lines of %s moved to %s", len(bad), path, aside)
    return _Read(records, list(owed.values()), lines)


def _owed_id(line: str) -> str | None:
    try:
        return decode_owed(line).owed_id
    except (ValueError, KeyError, TypeError):
        return None


def _replace(path: Path, lines: Sequence[str]) -> None:
    """The file at ``path`` holds ``lines`` now, or is gone when there are none; never half of
    them (a new file renamed over it). The caller holds the lock: a process waiting for it
    opens the new file (``_open_locked``)."""
    if not lines:
        path.unlink(missing_ok=True)
        return
    fresh = path.with_name(path.name + ".new")
    fd = os.open(fresh, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, "".join(lines).encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(fresh, path)
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


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
