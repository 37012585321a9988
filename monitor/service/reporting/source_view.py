"""What every surface shows of the sources beyond core_data: a creator's daily follower counts
with their day-over-day change, the creator's newest notes with what each gained since the
monitor first listed it, and the rows ``export --source`` streams.

The one lookup the command line and the console API share, so that the same input gets the
same answer or the same error through both: a ConfigError for input that is wrong whatever is
stored (exit 2, a 400), ``NothingStored`` for a creator with nothing from the source (exit 1, a
404). Reads the store; formats nothing for a terminal or a page.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any, cast
from zoneinfo import ZoneInfo

from monitor.config import Config
from monitor.config.fields import SOURCES
from monitor.config.references import DEFAULT_NOTES, resolve_creator
from monitor.errors import NothingStored
from monitor.model import CORE, FANS, NOTES, FollowerPoint, Note, NoteRecord, NoteStats, note_url
from monitor.store import Store

#: what a note's totals are called, in the order every surface shows them
NOTE_METRICS: tuple[str, ...] = ("reads", "likes", "collects")


@dataclass(frozen=True, slots=True)
class FollowerDay:
    """A creator's follower count on one day, and the change from the day before (None when
    that day is not stored)."""

    day: date
    fans: int
    change: int | None

    def as_json(self) -> dict[str, Any]:
        return {"date": self.day.isoformat(), "fans": self.fans, "change": self.change}


@dataclass(frozen=True, slots=True)
class NoteLine:
    """A note as a listing shows it: its latest totals and what each gained since the monitor
    first listed it (None where an observation lacks the total)."""

    note: Note
    first_seen_at: datetime
    seen_at: datetime
    stats: NoteStats
    gained: NoteStats

    @classmethod
    def of(cls, record: NoteRecord) -> NoteLine:
        gained = NoteStats(*(record.growth(metric) for metric in NOTE_METRICS))
        return cls(
            record.note, record.first_seen_at, record.latest.seen_at, record.latest.stats, gained
        )

    def as_json(self) -> dict[str, Any]:
        """The note as the console API and ``notes --format json`` give it."""
        note = self.note
        return {
            "note_id": note.note_id,
            "title": note.title,
            "published": note.published.isoformat(),
            "video": note.video,
            "ad": note.ad,
            "brand": note.brand,
            "url": note.url,
            **{metric: getattr(self.stats, metric) for metric in NOTE_METRICS},
            "gained": {metric: getattr(self.gained, metric) for metric in NOTE_METRICS},
            "first_seen_at": self.first_seen_at.isoformat(),
            "seen_at": self.seen_at.isoformat(),
        }


@dataclass(frozen=True, slots=True)
class Named:
    """A creator as a listing names them: the user id, the configured (else stored) name, and
    the reference the user gave, for messages ("Lilyy (5c3b…)")."""

    user_id: str
    name: str
    shown: str


def follower_days(points: Sequence[FollowerPoint], since: date | None = None) -> list[FollowerDay]:
    """``points`` (oldest first) with each day's change from the day before; from ``since``
    on (the change of the first day shown still comes from the day before it)."""
    days: list[FollowerDay] = []
    previous: FollowerPoint | None = None
    for point in points:
        change = None
        if previous is not None and previous.date_key == point.date_key - timedelta(days=1):
            change = point.fans - previous.fans
        previous = point
        if since is None or point.date_key >= since:
            days.append(FollowerDay(point.date_key, point.fans, change))
    return days


async def _creator(
    config: Config, store: Store, ref: str, source: str, *, arg: str
) -> tuple[Named, int | None, str]:
    """The creator ``ref`` names (a ConfigError as ``history`` gives it), their stored id (None:
    never stored), and a hint for a creator whose configured sources leave ``source`` out."""
    found = resolve_creator(config, ref, arg=arg)
    creator_id = await store.find_creator(found.user_id)
    given = ref.strip()
    shown = f"{given} ({found.user_id})" if given != found.user_id else found.user_id
    hint = ""
    if found.entry is not None:
        sources = config.sources_of(found.entry)
        if source not in sources:
            hint = f"; its sources are {', '.join(sources)}: add {source!r} to track them"
    name = found.entry.name if found.entry is not None else ""
    return Named(found.user_id, name, shown), creator_id, hint


async def creator_followers(
    config: Config, store: Store, ref: str, *, since: date | None = None, arg: str = "creator"
) -> tuple[Named, list[FollowerDay]]:
    """The creator's stored daily follower counts from ``since`` on, oldest first, each with
    its day-over-day change; NothingStored when there is none."""
    named, creator_id, hint = await _creator(config, store, ref, FANS, arg=arg)
    points = []
    if creator_id is not None:
        back = None if since is None else since - timedelta(days=1)
        points = await store.follower_series(creator_id, since=back)
    days = follower_days(points, since)
    if not days:
        after = "" if since is None or not points else f" since {since}"
        raise NothingStored(f"no stored follower counts for {named.shown}{after}{hint}")
    return named, days


async def creator_notes(
    config: Config,
    store: Store,
    ref: str,
    *,
    limit: int = DEFAULT_NOTES,
    since: date | None = None,
    arg: str = "creator",
) -> tuple[Named, list[NoteLine]]:
    """The creator's newest notes (published on or after ``since``), at most ``limit``, newest
    first, each with its latest totals and what they gained; NothingStored when there is none."""
    named, creator_id, hint = await _creator(config, store, ref, NOTES, arg=arg)
    records: list[NoteRecord] = []
    if creator_id is not None:
        records = await store.latest_notes(creator_id, limit, since=since)
    if not records:
        if since is not None and creator_id is not None and await store.latest_notes(creator_id, 1):
            raise NothingStored(f"no stored notes of {named.shown} published since {since}")
        raise NothingStored(f"no stored notes for {named.shown}{hint}")
    return named, [NoteLine.of(record) for record in records]


async def export_rows(
    store: Store, source: str, since: date | None, zone: ZoneInfo
) -> AsyncGenerator[dict[str, Any], None]:
    """Every creator's rows of ``source``, streamed: core's daily points (as ``export`` always
    gave them), the daily follower counts with their change, or every observation of every
    note with its link (``since``: observations from that local day on)."""
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}")
    stream: AsyncGenerator[dict[str, Any], None]
    if source == CORE:
        stream = cast("AsyncGenerator[dict[str, Any], None]", store.export_rows(since))
    elif source == FANS:
        stream = store.export_followers(since)
    else:
        start = None if since is None else datetime.combine(since, time(), tzinfo=zone)
        stream = store.export_note_observations(start)
    async with contextlib.aclosing(stream) as rows:  # an early stop ends the read at once
        async for row in rows:
            yield {**row, "url": note_url(row["note_id"])} if source == NOTES else row
