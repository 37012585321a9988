"""The ``schedule`` table: when each creator's variant is next due, its failures, leases, status.

Stores decisions the scheduler made; it decides nothing (no cadence arithmetic here). The only
writer of a due time: once per series in ``schedule_new`` (its first), and then by the fetch
that serves it (``write_attempts``, which the fetch's own transaction runs).
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any, Protocol

from sqlalchemy import (
    ClauseElement,
    ColumnElement,
    Select,
    bindparam,
    case,
    func,
    literal_column,
    null,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from monitor.model import Advertise, Business, DateType, NoteType, Variant
from monitor.store.engine import (
    ManyStatement,
    StoreBase,
    execute_many,
    plain_rows,
    prepared,
    upsert,
    utc_binder,
    utc_micros_from_db,
    utc_to_db,
    write_later,
)
from monitor.store.schema import creators, daily_metrics, schedule
from monitor.store.variants import SERIES_COLUMNS, matches_variant, series_values, variant_of

_PK = ("creator_id", *SERIES_COLUMNS)


@dataclass(frozen=True, slots=True)
class StatusRow:
    """One tracked creator's health for ``status`` (variant None: never scheduled yet)."""

    creator_id: int
    user_id: str
    name: str
    variant: Variant | None
    next_due_at: datetime | None
    last_attempt_at: datetime | None
    last_success_at: datetime | None
    last_code: int | None
    last_error: str | None
    consecutive_failures: int
    broken_at: datetime | None
    rows_stored: int
    latest_date_key: str | None


#: what the live schedule takes over from a stored slot when the daemon starts: (user_id, the
#: variant's label, creator_id, next_due_at, last_success_at, consecutive_failures, last_code,
#: broken), the times in integer microseconds since the epoch as the live schedule holds them
#: (no datetime made per row); ``user_id/label`` is the series name (``cadence.slot_key``). A
#: plain tuple: a named one costs a microsecond more to build, 100,000 times
SlotState = tuple[str, str, int, int, int | None, int, int | None, bool]


def _label(common: Variant | None) -> ColumnElement[Any]:
    """``Variant.label`` in SQL (core's four values joined with ``/``, ``fans/<date_type>`` or
    ``notes``), NULL for ``common``'s rows: joining strings took SQLite a third of the read's
    time, and most rows are the one core variant of every creator that sets none of its own."""
    slash: ColumnElement[str] = literal_column("'/'")
    core: ColumnElement[str] = schedule.c.business
    for column in ("note_type", "date_type", "advertise"):
        core = core + slash + schedule.c[column]
    whens: list[tuple[ColumnElement[bool], Any]] = [
        (schedule.c.source == "fans", literal_column("'fans/'") + schedule.c.date_type),
        (schedule.c.source == "notes", literal_column("'notes'")),
    ]
    if common is not None:
        whens.insert(0, (matches_variant(schedule, common), null()))
    return case(*whens, else_=core)


_PK_COLUMNS = [schedule.c[name] for name in _PK]
#: the most slots a creator can have: one per combination of the four variant values, a
#: follower series (over either window: a changed config may leave both) and a note list
_MOST_VARIANTS = len(Business) * len(NoteType) * len(DateType) * len(Advertise) + len(DateType) + 1


@lru_cache(maxsize=16)
def _states(common: Variant | None) -> Select[Any]:
    """``slot_states``' query: the active creators' slots, with what the scheduler keeps of
    them, in primary-key order (a page starts after the last creator its predecessor read
    whole)."""
    return (
        select(
            creators.c.user_id,
            _label(common),
            schedule.c.creator_id,
            schedule.c.next_due_at,
            schedule.c.last_success_at,
            schedule.c.consecutive_failures,
            schedule.c.last_code,
            schedule.c.broken_at.is_not(None),
        )
        .join(creators, creators.c.id == schedule.c.creator_id)
        .where(creators.c.active.is_(True))
        .order_by(*_PK_COLUMNS)
    )


@lru_cache(maxsize=256)
def _variant(business: str, note_type: str, date_type: str, advertise: str) -> Variant:
    """One shared Variant per spelling: 100,000 rows hold a handful of distinct variants."""
    return Variant(
        Business(business), NoteType(note_type), DateType(date_type), Advertise(advertise)
    )


class ScheduleStore(StoreBase):
    """Reads and writes the schedule (leases for several instances are ``ClusterStore``'s)."""

    async def slot_states(
        self, *, page: int = 10_000, common: Variant | None = None
    ) -> AsyncIterator[list[SlotState]]:
        """Every slot of every active creator by its user_id and its variant's label (the
        series name, ``cadence.slot_key``, split at its first ``/``), about ``page`` slots at a
        time: 100,000 stored slots never sit in memory at once beside the schedule built from
        them. Each page is its own read, of whole creators in creators.id order. ``common``:
        the variant most slots have (its label is not read back for each of them)."""
        assert page > _MOST_VARIANTS, "a page must hold every slot of a creator"
        every_slot = _states(common)
        common_label = "" if common is None else common.label
        after: int | None = None
        while True:
            query = every_slot.limit(page)
            if after is not None:
                query = query.where(schedule.c.creator_id > after)
            async with self._read() as conn:
                rows = plain_rows(await conn.execute(query))
                micros = utc_micros_from_db(conn, schedule.c.next_due_at)
            last = len(rows)
            full = last == page
            if full:  # the last creator's slots may go on: read them whole next time
                while rows[last - 1][2] == rows[-1][2]:
                    last -= 1
            states = [
                (
                    user_id,
                    common_label if label is None else label,
                    creator_id,
                    micros(due),
                    None if success is None else micros(success),
                    failures,
                    code,
                    bool(broken),
                )
                for user_id, label, creator_id, due, success, failures, code, broken in rows[:last]
            ]
            after = rows[last - 1][2] if full else None
            # neither the driver's rows nor a page the caller has read are kept while the
            # next page is read: 100,000 slots at a restart held two pages of each at once
            del rows
            yield states
            del states
            if after is None:
                return

    async def schedule_new(self, entries: Iterable[tuple[int, Variant, datetime]]) -> None:
        """Add missing slots, each first due at its own time, in one transaction; existing
        slots keep their times. One prepared statement for every row (100,000 creators),
        sent ``MANY_ROWS`` at a time: ``entries`` may be a generator."""
        pending = iter(entries)
        first = next(pending, None)
        if first is None:
            return
        names = (*_PK, "next_due_at")
        stmt = self._upsert(schedule).values({name: bindparam(name) for name in names})
        stmt = stmt.on_conflict_do_nothing(index_elements=list(_PK))
        # a handful of Variant objects serve every row: their column values are found by
        # identity (each kept alive here, so no id is reused), not by hashing four enums a row
        columns: dict[int, tuple[Variant, tuple[str, ...]]] = {}

        def values(variant: Variant) -> tuple[str, ...]:
            known = columns.get(id(variant))
            if known is None:
                known = columns[id(variant)] = (variant, tuple(series_values(variant).values()))
            return known[1]

        async with self._write() as conn:
            when = utc_to_db(conn, schedule.c.next_due_at)
            rows = (
                (cid, *values(variant), when(due))
                for cid, variant, due in itertools.chain([first], pending)
            )
            await execute_many(conn, stmt, names, rows)

    async def mark_broken(
        self, creator_id: int, variant: Variant, *, at: datetime, reason: str
    ) -> None:
        """Record that retrying cannot help (400): the scheduler skips broken slots."""
        await self._put(creator_id, variant, at, {"broken_at": at, "broken_reason": reason})

    async def _put(
        self, creator_id: int, variant: Variant, due_if_new: datetime, values: dict[str, Any]
    ) -> None:
        row = {"creator_id": creator_id, **series_values(variant), "next_due_at": due_if_new}
        stmt = self._upsert(schedule).values(**(row | values))
        async with self._write() as conn:
            await conn.execute(stmt.on_conflict_do_update(index_elements=list(_PK), set_=values))

    async def status_rows(self) -> list[StatusRow]:
        """Per active creator and slot: last success/error, next due, failures, rows stored."""
        stored = (
            select(
                daily_metrics.c.creator_id,
                func.count().label("rows_stored"),
                func.max(daily_metrics.c.date_key).label("latest_date_key"),
            )
            .group_by(daily_metrics.c.creator_id)
            .subquery()
        )
        query = (
            select(creators.c.id, creators.c.user_id, creators.c.name, schedule, stored)
            .select_from(creators)
            .outerjoin(schedule, schedule.c.creator_id == creators.c.id)
            .outerjoin(stored, stored.c.creator_id == creators.c.id)
            .where(creators.c.active.is_(True))
            .order_by(creators.c.user_id, *(schedule.c[name] for name in SERIES_COLUMNS))
        )
        async with self._read() as conn:
            return [_status_row(row) for row in await conn.execute(query)]


def _status_row(row: Any) -> StatusRow:
    m = row._mapping
    return StatusRow(
        creator_id=int(m[creators.c.id]),
        user_id=m[creators.c.user_id],
        name=m[creators.c.name],
        variant=None if m[schedule.c.business] is None else variant_of(row),
        next_due_at=m[schedule.c.next_due_at],
        last_attempt_at=m[schedule.c.last_attempt_at],
        last_success_at=m[schedule.c.last_success_at],
        last_code=m[schedule.c.last_code],
        last_error=m[schedule.c.last_error],
        consecutive_failures=int(m[schedule.c.consecutive_failures] or 0),
        broken_at=m[schedule.c.broken_at],
        rows_stored=int(m["rows_stored"] or 0),
        latest_date_key=m["latest_date_key"],
    )


class Attempt(Protocol):
    """What the schedule keeps of one call attempt (a ``FetchRecord`` is one)."""

    @property
    def creator_id(self) -> int: ...
    @property
    def variant(self) -> Variant: ...
    @property
    def started_at(self) -> datetime: ...
    @property
    def due_at(self) -> datetime | None: ...
    @property
    def code(self) -> int | None: ...
    @property
    def error(self) -> str | None: ...
    @property
    def next_due_at(self) -> datetime | None: ...


async def write_attempts(conn: AsyncConnection, attempts: Sequence[Attempt]) -> None:
    """The schedule's side of stored attempts, in the caller's transaction (the fetch's own):
    the ``last_*`` fields (a success resets the failure count, a failure adds one) and, for an
    attempt that served its due time, the next due time. With ``schedule_new`` the only writer
    of a due time: a series missing from the table gets its row here, due when it was due.
    On SQLite both go to the database with the commit (``write_later``)."""
    rows: dict[tuple[Any, ...], dict[str, Any]] = {}
    for rec in attempts:
        values = series_values(rec.variant)
        row = rows.setdefault(
            (rec.creator_id, *values.values()),
            {
                "creator_id": rec.creator_id,
                **values,
                "next_due_at": rec.due_at or rec.started_at,
                "last_success_at": None,
                "consecutive_failures": 0,
            },
        )
        row |= {"last_attempt_at": rec.started_at, "last_code": rec.code}
        row["last_error"] = rec.error
        if rec.error is None:
            row |= {"last_success_at": rec.started_at, "consecutive_failures": 0}
        else:
            row["consecutive_failures"] += 1
    upsert, move = _attempt_statements(conn)
    at = {name: utc_binder(conn, schedule.c[name]) for name in _ATTEMPT_TIMES}
    await write_later(
        conn,
        upsert,
        [
            tuple(at[name](row[name]) if name in at else row[name] for name in _ATTEMPT_ROW)
            for row in rows.values()
        ],
    )
    due = at["next_due_at"]
    moves = [
        (rec.creator_id, *series_values(rec.variant).values(), due(rec.next_due_at))
        for rec in attempts
        if rec.next_due_at is not None
    ]
    await write_later(conn, move, moves)


#: what the ``last_*`` upsert binds, in this order; the times among them
_ATTEMPT_ROW = (
    *_PK,
    "next_due_at",
    "last_success_at",
    "consecutive_failures",
    "last_attempt_at",
    "last_code",
    "last_error",
)
_ATTEMPT_TIMES = ("next_due_at", "last_success_at", "last_attempt_at")
#: what the due-time move binds, in this order
_MOVE_ROW = ("cid", *(f"v_{name}" for name in SERIES_COLUMNS), "due")


def _attempt_statements(conn: AsyncConnection) -> tuple[ManyStatement, ManyStatement]:
    """(the ``last_*`` upsert, the due-time move), built and compiled once per backend:
    constructing ``excluded`` costs more than running the statement."""
    return (
        prepared(conn, "schedule.attempts", _attempt_upsert, _ATTEMPT_ROW),
        prepared(conn, "schedule.move", _attempt_move, _MOVE_ROW),
    )


def _attempt_upsert(dialect: str) -> ClauseElement:
    stmt = upsert(dialect, schedule).values(
        {name: bindparam(name, type_=schedule.c[name].type) for name in _ATTEMPT_ROW}
    )
    new = stmt.excluded
    # excluded.last_success_at is set only when the batch held a success for this key
    failures = case(
        (new.last_success_at.is_not(None), new.consecutive_failures),
        else_=schedule.c.consecutive_failures + new.consecutive_failures,
    )
    updates = {
        "last_attempt_at": new.last_attempt_at,
        "last_code": new.last_code,
        "last_error": new.last_error,
        "last_success_at": func.coalesce(new.last_success_at, schedule.c.last_success_at),
        "consecutive_failures": failures,
    }
    return stmt.on_conflict_do_update(index_elements=list(_PK), set_=updates)


def _attempt_move(_dialect: str) -> ClauseElement:
    keys = [
        schedule.c[name] == bindparam(f"v_{name}", type_=schedule.c[name].type)
        for name in SERIES_COLUMNS
    ]
    return (
        update(schedule)
        .where(schedule.c.creator_id == bindparam("cid", type_=schedule.c.creator_id.type), *keys)
        .values(next_due_at=bindparam("due", type_=schedule.c.next_due_at.type))
    )
