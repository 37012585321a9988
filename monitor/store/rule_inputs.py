"""What a creator's rules read after each fetch, in one read transaction, each kind in one
statement: the daily points of the core variants asked for, the follower counts when the
``fans`` series is asked for, the notes the note rules may speak of (with their first and
latest observation) when asked, and the alert of every (rule, variant) — instead of one
transaction per series and one per rule and series. Nothing is read that no active rule needs:
the caller asks only for the series and notes its rules read. Also a creator's note history as
``rules test`` replays it (``note_history``)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import Select, bindparam, func, or_, select

from monitor.model import (
    FANS,
    METRICS,
    NOTE_VARIANT_PREFIX,
    AlertState,
    DailyPoint,
    FollowerPoint,
    Note,
    NoteObservation,
    NoteRecord,
    NoteStats,
    NotesWanted,
    SeriesPoint,
    Variant,
    note_variant,
)
from monitor.store.alert_rows import state_of
from monitor.store.engine import StoreBase
from monitor.store.metrics import _PK
from monitor.store.schema import alerts, daily_metrics, follower_counts, note_observations, notes
from monitor.store.sources import note_of, observation_ends
from monitor.store.variants import VARIANT_COLUMNS, variant_of

#: a bound no stored time or day reaches: "no notes by this bound"
_NEVER_AT = datetime(9999, 1, 1, tzinfo=UTC)
_NEVER_DAY = "9999-01-01"


@dataclass(frozen=True, slots=True)
class RuleInputs:
    """One creator's stored inputs to its rules."""

    #: each series asked for: its points since the day asked, ascending (a core variant's
    #: daily points; the ``fans`` series' follower counts)
    series: dict[Variant, tuple[SeriesPoint, ...]]
    #: (rule name, variant label): the open alert, else the newest resolved one; absent if none.
    #: A note's alerts (``note:<noteId>``) only for the notes loaded, and every open one
    alerts: dict[tuple[str, str], AlertState]
    #: the notes asked for (``NotesWanted``), newest published first
    notes: tuple[NoteRecord, ...] = ()
    #: the creator's first note-list visit (its notes are the baseline); None before any, or
    #: when no notes were asked for
    notes_since: datetime | None = None

    def alert(self, rule: str, variant: str) -> AlertState | None:
        return self.alerts.get((rule, variant))


@dataclass(frozen=True, slots=True)
class NoteHistory:
    """A creator's stored notes as ``rules test`` replays them: each note with when it was
    first listed, and the observations asked for, oldest first; ``baseline_at``: the first
    visit (None before any)."""

    baseline_at: datetime | None
    notes: dict[str, tuple[Note, datetime]]
    observations: tuple[tuple[str, NoteObservation], ...]  # (note id, observation) by time


#: what ``_POINTS`` reads of a point, in this order: its variant, day and metrics (the
#: order of ``DailyPoint``'s fields after the day)
_POINT_COLUMNS = (*VARIANT_COLUMNS, "date_key", *METRICS)
_DAY_AT = len(VARIANT_COLUMNS)
assert tuple(f.name for f in fields(DailyPoint)) == ("date_key", *METRICS)

#: built once: making these statements cost more than running them, once per fetch
_POINTS = (
    select(*(daily_metrics.c[name] for name in _POINT_COLUMNS))
    .where(
        daily_metrics.c.creator_id == bindparam("creator_id"),
        daily_metrics.c.date_key >= bindparam("since"),
    )
    .order_by(*(daily_metrics.c[name] for name in _PK))
)

_FOLLOWERS = (
    select(follower_counts.c.date_key, follower_counts.c.fans)
    .where(
        follower_counts.c.creator_id == bindparam("creator_id"),
        follower_counts.c.date_key >= bindparam("since"),
    )
    .order_by(follower_counts.c.date_key)
)


def _wanted_notes() -> Select[Any]:
    """A creator's notes first seen since a time or published since a day, newest published
    first, each row with the creator's first visit (``cm_baseline``)."""
    earlier = notes.alias("earlier")
    baseline = (
        select(func.min(earlier.c.first_seen_at))
        .where(earlier.c.creator_id == notes.c.creator_id)
        .scalar_subquery()
        .label("cm_baseline")
    )
    return (
        select(notes, baseline)
        .where(
            notes.c.creator_id == bindparam("creator_id"),
            or_(
                notes.c.first_seen_at >= bindparam("seen_since", type_=notes.c.first_seen_at.type),
                notes.c.published >= bindparam("published_since"),
            ),
        )
        .order_by(notes.c.published.desc(), notes.c.first_seen_at.desc(), notes.c.id)
    )


def _latest_alerts() -> Select[Any]:
    """The open alert, else the newest resolved one, of each (rule, variant) for a scope; of
    the alerts on single notes (``note:…``), only the open ones and those of the notes named
    (a creator's told notes pile up: the rules need the few they may speak of)."""
    rank = (
        func.row_number()
        .over(
            partition_by=(alerts.c.rule, alerts.c.variant),
            order_by=((alerts.c.state == "resolved").asc(), alerts.c.id.desc()),
        )
        .label("cm_rank")
    )
    ranked = (
        select(alerts, rank)
        .where(
            alerts.c.scope == bindparam("scope"),
            alerts.c.rule.in_(bindparam("rules", expanding=True)),
            or_(
                alerts.c.variant.not_like(f"{NOTE_VARIANT_PREFIX}%"),
                alerts.c.state != "resolved",
                alerts.c.variant.in_(bindparam("note_variants", expanding=True)),
            ),
        )
        .subquery()
    )
    return select(*(ranked.c[c.name] for c in alerts.columns)).where(ranked.c.cm_rank == 1)


_LATEST = _latest_alerts()
_NOTES = _wanted_notes()


class RuleInputStore(StoreBase):
    """The rules' reads, gathered."""

    async def rule_inputs(
        self,
        creator_id: int,
        scope: str,
        variants: Sequence[Variant],
        since: date,
        rules: Iterable[str],
        *,
        notes_wanted: NotesWanted | None = None,
    ) -> RuleInputs:
        """The series of ``variants`` since ``since`` (a ``fans`` variant: the follower
        counts), the notes ``notes_wanted`` names, and the alerts of ``rules`` for ``scope``
        (as ``series``, ``follower_series`` and ``load_alert`` would give them one by one)."""
        names = sorted(set(rules))
        wanted = {"creator_id": creator_id, "since": since.isoformat()}
        series: dict[Variant, list[SeriesPoint]] = {v: [] for v in variants}
        fans = next((v for v in variants if v.source == FANS), None)
        found: dict[tuple[str, str], AlertState] = {}
        records: tuple[NoteRecord, ...] = ()
        baseline: datetime | None = None
        async with self._read() as conn:
            if any(v.core for v in variants):
                _add_points(series, await conn.execute(_POINTS, wanted))
            if fans is not None:
                series[fans] = [
                    FollowerPoint(date.fromisoformat(day), int(count))
                    for day, count in await conn.execute(_FOLLOWERS, wanted)
                ]
            if notes_wanted is not None:
                records, baseline = await _notes(conn, creator_id, notes_wanted)
            if names:
                found_rows = await conn.execute(
                    _LATEST,
                    {
                        "scope": scope,
                        "rules": names,
                        "note_variants": [note_variant(r.note.note_id) for r in records],
                    },
                )
                rows: Any = found_rows.mappings()
                for alert_row in rows:
                    state = state_of(alert_row)
                    found[state.rule, state.variant] = state
        return RuleInputs({v: tuple(p) for v, p in series.items()}, found, records, baseline)

    async def note_history(self, creator_id: int, seen_since: datetime | None) -> NoteHistory:
        """Every note of a creator and their observations seen at or after ``seen_since`` (None:
        all), in two statements."""
        obs = note_observations.c
        query = (
            select(obs.note_id, obs.seen_at, obs.reads, obs.likes, obs.collects)
            .join(notes, notes.c.id == obs.note_id)
            .where(notes.c.creator_id == creator_id)
            .order_by(obs.seen_at, obs.note_id)
        )
        if seen_since is not None:
            query = query.where(obs.seen_at >= seen_since)
        async with self._read() as conn:
            rows = (await conn.execute(select(notes).where(notes.c.creator_id == creator_id))).all()
            seen = (await conn.execute(query)).all()
        stored = {row.id: (note_of(row), row.first_seen_at) for row in rows}
        baseline = min((at for _, at in stored.values()), default=None)
        observations = tuple(
            (
                row.note_id,
                NoteObservation(row.seen_at, NoteStats(row.reads, row.likes, row.collects)),
            )
            for row in seen
        )
        return NoteHistory(baseline, stored, observations)


def _add_points(series: dict[Variant, list[SeriesPoint]], rows: Iterable[Any]) -> None:
    """The points of ``rows`` (``_POINTS``) added to the series of their variant, where asked."""
    variants: dict[tuple[Any, ...], Variant] = {}  # a variant's columns → the Variant
    for row in rows:
        key = tuple(row[:_DAY_AT])
        variant = variants.get(key)
        if variant is None:
            variant = variants[key] = variant_of(row)
        kept = series.get(variant)
        if kept is not None:
            kept.append(DailyPoint(date.fromisoformat(row[_DAY_AT]), *row[_DAY_AT + 1 :]))


async def _notes(
    conn: Any, creator_id: int, wanted: NotesWanted
) -> tuple[tuple[NoteRecord, ...], datetime | None]:
    """The notes ``wanted`` names, with their observation ends, and the creator's first visit."""
    published = wanted.published_since
    params = {
        "creator_id": creator_id,
        "seen_since": wanted.seen_since or _NEVER_AT,
        "published_since": _NEVER_DAY if published is None else published.isoformat(),
    }
    rows = (await conn.execute(_NOTES, params)).all()
    if not rows:
        return (), None
    ends = await observation_ends(conn, [row.id for row in rows])
    records = tuple(
        NoteRecord(note_of(row), row.first_seen_at, *ends[row.id]) for row in rows if row.id in ends
    )
    return records, rows[0].cm_baseline
