"""Follower counts and notes (issue sources): written as one transaction per answer, read back
as the series, lists and growth the rules and surfaces need.

A follower-history answer backfills its 30 or 90 days in one upsert. A note-list page inserts
the notes it shows for the first time (their ``first_seen_at`` is that visit) and one
observation of each note's totals. Knows no budget, schedule or upstream call; what the
surfaces read beyond the rules (exports, the overview's week of followers) is source_reads.py's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import date, datetime
from typing import Any

from sqlalchemy import Select, Table, and_, bindparam, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from monitor.model import (
    FollowerPoint,
    ListedNote,
    Note,
    NoteObservation,
    NoteRecord,
    NoteStats,
)
from monitor.store.engine import StoreBase, execute_many, utc_to_db
from monitor.store.schema import follower_counts, note_observations, notes

#: note ids per ``IN (…)``: under SQLite's bound-parameter limit
_CHUNK = 500


class SourceStore(StoreBase):
    """Writes and reads ``follower_counts``, ``notes`` and ``note_observations``."""

    async def store_followers(self, creator_id: int, points: Sequence[FollowerPoint]) -> int:
        """Upsert one count per day (a later answer wins), all in one transaction; returns how
        many points were written."""
        return await self.store_followers_many({creator_id: points})

    async def store_followers_many(self, batch: Mapping[int, Sequence[FollowerPoint]]) -> int:
        """``store_followers`` for many creators' answers in ONE transaction (bulk ingest:
        one driver ``executemany`` per ``MANY_ROWS`` points); returns the points written."""
        async with self._write() as conn:
            return await put_followers(conn, self._upsert, batch, self._clock())

    async def follower_series(
        self, creator_id: int, since: date | None = None, until: date | None = None
    ) -> list[FollowerPoint]:
        """The stored daily counts of a creator, oldest first, within [since, until]."""
        query = select(follower_counts.c.date_key, follower_counts.c.fans).where(
            follower_counts.c.creator_id == creator_id
        )
        if since is not None:
            query = query.where(follower_counts.c.date_key >= since.isoformat())
        if until is not None:
            query = query.where(follower_counts.c.date_key <= until.isoformat())
        async with self._read() as conn:
            rows = (await conn.execute(query.order_by(follower_counts.c.date_key))).all()
        return [FollowerPoint(date.fromisoformat(day), int(fans)) for day, fans in rows]

    async def store_notes(
        self, creator_id: int, listed: Sequence[ListedNote], seen_at: datetime
    ) -> list[str]:
        """Store one note-list page seen at ``seen_at`` in one transaction: the notes new to
        the monitor, and an observation of every note's totals. Returns the ids of the notes
        that were new, in page order (the visit follows the next page only while all are)."""
        if not listed:
            return []
        async with self._write() as conn:
            return await put_note_page(conn, self._upsert, creator_id, listed, seen_at)

    async def note_visit(self, creator_id: int, note_ids: Sequence[str]) -> tuple[set[str], bool]:
        """Which of ``note_ids`` are stored, and whether the creator's notes were ever listed
        before (False: this is the first visit, whose notes are the baseline)."""
        async with self._read() as conn:
            known = await _known_notes(conn, list(note_ids))
            if known:
                return known, True
            any_note = select(notes.c.id).where(notes.c.creator_id == creator_id).limit(1)
            return known, (await conn.scalar(any_note)) is not None

    async def known_note_ids(self, note_ids: Sequence[str]) -> set[str]:
        """Which of ``note_ids`` the monitor has stored."""
        async with self._read() as conn:
            return await _known_notes(conn, list(note_ids))

    async def latest_notes(
        self, creator_id: int, limit: int = 20, *, since: date | None = None
    ) -> list[NoteRecord]:
        """A creator's notes, newest published first (then newest seen), at most ``limit``,
        published on or after ``since``; each with its first and latest observation."""
        query = select(notes).where(notes.c.creator_id == creator_id)
        if since is not None:
            query = query.where(notes.c.published >= since.isoformat())
        query = query.order_by(
            notes.c.published.desc(), notes.c.first_seen_at.desc(), notes.c.id
        ).limit(limit)
        async with self._read() as conn:
            return [record for _, record in await note_records(conn, query)]

    async def new_notes(
        self, seen_since: datetime, creator_ids: Sequence[int] | None = None
    ) -> list[tuple[int, NoteRecord]]:
        """(creator id, note) of the notes first listed at or after ``seen_since``, in the
        order they were first seen: what ``new_note`` announces and the digest's "new this
        week". The notes of a creator's first visit are its baseline and never among them."""
        first_visit = (
            select(func.min(_earlier.c.first_seen_at))
            .where(_earlier.c.creator_id == notes.c.creator_id)
            .scalar_subquery()
        )
        query = select(notes).where(
            notes.c.first_seen_at >= seen_since, notes.c.first_seen_at > first_visit
        )
        if creator_ids is not None:
            query = query.where(notes.c.creator_id.in_(list(creator_ids)))
        query = query.order_by(notes.c.first_seen_at, notes.c.creator_id, notes.c.published)
        async with self._read() as conn:
            return await note_records(conn, query)

    async def first_notes_visit(self, creator_id: int) -> datetime | None:
        """When the monitor first listed the creator's notes (those then seen are the
        baseline, never announced as new); None before any visit."""
        query = select(func.min(notes.c.first_seen_at)).where(notes.c.creator_id == creator_id)
        async with self._read() as conn:
            found: datetime | None = await conn.scalar(query)  # min() keeps the column's type
        return found


Upsert = Callable[[Table], Any]


async def put_followers(
    conn: AsyncConnection,
    upsert: Upsert,
    batch: Mapping[int, Sequence[FollowerPoint]],
    at: datetime,
) -> int:
    """Upsert one count per creator and day (a later answer wins) on ``conn``, inside the
    caller's transaction (a fetch's record, or a bulk ingest); returns the points written."""
    rows = [
        (creator_id, day.isoformat(), fans)
        for creator_id, points in batch.items()
        # one row per day and answer: the last count given for a day wins
        for day, fans in sorted({p.date_key: p.fans for p in points}.items())
    ]
    if not rows:
        return 0
    stmt = upsert(follower_counts).values(
        creator_id=bindparam("creator_id"),
        date_key=bindparam("date_key"),
        fans=bindparam("fans"),
        updated_at=bindparam("updated_at"),
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=[follower_counts.c.creator_id, follower_counts.c.date_key],
        set_={"fans": stmt.excluded.fans, "updated_at": stmt.excluded.updated_at},
    )
    when = utc_to_db(conn, follower_counts.c.updated_at)(at)
    await execute_many(
        conn,
        stmt,
        ("creator_id", "date_key", "fans", "updated_at"),
        ((cid, day, fans, when) for cid, day, fans in rows),
    )
    return len(rows)


async def put_note_page(
    conn: AsyncConnection,
    upsert: Upsert,
    creator_id: int,
    listed: Sequence[ListedNote],
    seen_at: datetime,
) -> list[str]:
    """One note-list page on ``conn``, inside the caller's transaction: the notes new to the
    monitor, and an observation of each note's totals; returns the new notes' ids."""
    if not listed:
        return []
    page = {entry.note.note_id: entry for entry in listed}  # a page never repeats a note
    known = await _known_notes(conn, list(page))
    fresh = [entry for note_id, entry in page.items() if note_id not in known]
    if fresh:
        await conn.execute(
            notes.insert(), [_note_row(creator_id, entry.note, seen_at) for entry in fresh]
        )
    stmt = upsert(note_observations).on_conflict_do_nothing(
        index_elements=[note_observations.c.note_id, note_observations.c.seen_at]
    )
    await conn.execute(
        stmt,
        [
            {
                "note_id": note_id,
                "seen_at": seen_at,
                "reads": entry.stats.reads,
                "likes": entry.stats.likes,
                "collects": entry.stats.collects,
            }
            for note_id, entry in page.items()
        ],
    )
    return [entry.note.note_id for entry in fresh]


#: the same table again, for the creator's first visit inside a query on ``notes``
_earlier = notes.alias("earlier")


async def note_records(conn: AsyncConnection, query: Select[Any]) -> list[tuple[int, NoteRecord]]:
    """(creator id, record) of the ``notes`` rows ``query`` selects, in its order, each with
    its first and latest observation."""
    rows = (await conn.execute(query)).all()
    ends = await observation_ends(conn, [row.id for row in rows])
    records = []
    for row in rows:
        if row.id not in ends:
            continue  # written together with its note: only a hand-made row lacks one
        first, latest = ends[row.id]
        records.append(
            (int(row.creator_id), NoteRecord(note_of(row), row.first_seen_at, first, latest))
        )
    return records


def note_of(row: Any) -> Note:
    """The note of a ``notes`` row."""
    return Note(
        note_id=row.id,
        title=row.title,
        published=date.fromisoformat(row.published),
        video=bool(row.video),
        ad=bool(row.ad),
        brand=row.brand,
    )


def _note_row(creator_id: int, note: Note, seen_at: datetime) -> dict[str, object]:
    return {
        "id": note.note_id,
        "creator_id": creator_id,
        "title": note.title,
        "published": note.published.isoformat(),
        "video": note.video,
        "ad": note.ad,
        "brand": note.brand,
        "first_seen_at": seen_at,
    }


async def _known_notes(conn: AsyncConnection, note_ids: list[str]) -> set[str]:
    known: set[str] = set()
    for start in range(0, len(note_ids), _CHUNK):
        chunk = note_ids[start : start + _CHUNK]
        found = await conn.execute(select(notes.c.id).where(notes.c.id.in_(chunk)))
        known.update(str(value) for value in found.scalars())
    return known


async def observation_ends(
    conn: AsyncConnection, note_ids: list[str]
) -> dict[str, tuple[NoteObservation, NoteObservation]]:
    """note id -> (first, latest) observation, for the notes given."""
    ends: dict[str, tuple[NoteObservation, NoteObservation]] = {}
    obs = note_observations.c
    for start in range(0, len(note_ids), _CHUNK):
        chunk = note_ids[start : start + _CHUNK]
        bounds = (
            select(
                obs.note_id,
                func.min(obs.seen_at).label("first_at"),
                func.max(obs.seen_at).label("last_at"),
            )
            .where(obs.note_id.in_(chunk))
            .group_by(obs.note_id)
            .subquery()
        )
        query = (
            select(obs.note_id, obs.seen_at, obs.reads, obs.likes, obs.collects)
            .join(
                bounds,
                and_(
                    bounds.c.note_id == obs.note_id,
                    (obs.seen_at == bounds.c.first_at) | (obs.seen_at == bounds.c.last_at),
                ),
            )
            .order_by(obs.note_id, obs.seen_at)
        )
        for row in (await conn.execute(query)).all():
            seen = NoteObservation(row.seen_at, NoteStats(row.reads, row.likes, row.collects))
            first = ends[row.note_id][0] if row.note_id in ends else seen
            ends[row.note_id] = (first, seen)
    return ends
