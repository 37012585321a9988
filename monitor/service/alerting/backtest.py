"""``rules test``: replay the stored history through the pure rules and the pure alert
lifecycle, and report what would have fired and resolved, and when. Reads the store only:
writes no alert, queues no message, sends nothing.

What is replayed, each as the daemon evaluates it:
- the metric rules (threshold, change, anomaly) on core_data's series and, with
  ``metric = "fans"``, on the follower series: once per stored day per creator, as if each
  day's point had arrived the next local midnight (one evaluation per day, so ``for = 2`` means
  two days);
- the note events (``new_note``, ``note``): at each stored note-list visit, on the notes that
  visit listed (each event fires once; the baseline visit's notes are never new);
- ``balance``: at each stored balance reading. The days left are those the readings themselves
  show: the balance over its average fall per day in the week before the reading (top-ups
  left out), not the daemon's price per call times the plan, which ``rules test`` cannot
  rebuild.

``stale``, ``api_error`` and ``budget`` depend on fetch attempts and the budget, not on stored
data, so they are not replayed. The lifecycle starts empty on ``since``; data before it serves
as baselines, trailing windows and the balance's spend rate.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from itertools import pairwise
from zoneinfo import ZoneInfo

from monitor.config import (
    AnomalyRule,
    BalanceRule,
    ChangeRule,
    Config,
    CreatorConfig,
    NewNoteRule,
    NoteRule,
    Rule,
    ThresholdRule,
)
from monitor.model import (
    CORE,
    FANS,
    NO_VARIANT,
    NOTES,
    Creator,
    NoteObservation,
    NoteRecord,
    SeriesPoint,
    Variant,
)
from monitor.policy import lifecycle as alerts
from monitor.policy import rules
from monitor.policy.lifecycle import AlertState, Event
from monitor.store import BalanceReading, Store
from monitor.store.rule_inputs import NoteHistory

_REPORTED = (Event.FIRING, Event.RESOLVED)
#: the readings a replayed balance's spend rate is read from
SPEND_WINDOW = timedelta(days=7)
#: a shorter span of readings says nothing about a rate
_MIN_SPAN = timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class BacktestLine:
    """One event the rules would have produced: on ``day`` (the data date that caused it: a
    point's day, a note-list visit's or a balance reading's local day)."""

    day: date
    rule: str
    user_id: str  # 'account' for the balance
    name: str
    event: str  # firing | resolved
    severity: str
    summary: str
    metric: str | None = None
    value: float | None = None
    baseline: float | None = None
    change_pct: float | None = None

    @property
    def when(self) -> date:
        return self.day

    @property
    def scope(self) -> str:
        return self.user_id


def replayed_rules(config: Config) -> list[Rule]:
    replayed = (ThresholdRule, ChangeRule, AnomalyRule, NewNoteRule, NoteRule, BalanceRule)
    return [r for r in config.rules if isinstance(r, replayed)]


async def run_backtest(
    config: Config,
    store: Store,
    since: date | None = None,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> list[BacktestLine]:
    """Replay every tracked creator's stored history from ``since`` (None: its first point),
    then the balance readings; lines ordered by day, then creator, then rule.
    ``progress(done, total)`` counts creators."""
    ruleset = replayed_rules(config)
    lines: list[BacktestLine] = []
    if not ruleset:
        return lines
    zone = config.budget.zone
    reading = {source for r in ruleset if (source := rules.source_of(r)) is not None}
    for done, entry in enumerate(config.creators, start=1):
        if progress is not None:
            progress(done - 1, len(config.creators))
        creator_id = await store.find_creator(entry.user_id)
        if creator_id is None:
            continue
        sources = set(config.sources_of(entry)) & reading
        series = await _series(config, store, entry, creator_id, sources)
        lines += replay(ruleset, entry.creator(), series, since, zone)
        if NOTES in sources:
            start = None if since is None else datetime.combine(since, time(0), zone)
            history = await store.note_history(creator_id, start)
            lines += replay_notes(ruleset, entry.creator(), history, zone)
    if progress is not None:
        progress(len(config.creators), len(config.creators))
    if any(isinstance(r, BalanceRule) for r in ruleset):
        start = None if since is None else datetime.combine(since, time(0), zone)
        readings = await store.balance_readings(None if start is None else start - SPEND_WINDOW)
        lines += replay_balance(ruleset, readings, start, zone)
    return sorted(lines, key=lambda line: (line.day, line.user_id, line.rule))


async def _series(
    config: Config, store: Store, entry: CreatorConfig, creator_id: int, sources: set[str]
) -> dict[Variant, list[SeriesPoint]]:
    """The stored series the creator's metric rules read: its core variants', its followers'."""
    series: dict[Variant, list[SeriesPoint]] = {}
    for source, variant in config.series_of(entry):  # as the daemon tracks them
        if source == CORE and CORE in sources:
            series[variant] = []
        elif source == FANS and FANS in sources:
            series[variant] = list(await store.follower_series(creator_id))
    if CORE in sources:
        for variant, point in await store.series(creator_id):
            if variant in series:
                series[variant].append(point)
    return series


def replay(
    ruleset: Sequence[Rule],
    creator: Creator,
    series: Mapping[Variant, Sequence[SeriesPoint]],
    since: date | None,
    zone: ZoneInfo,
) -> list[BacktestLine]:
    """PURE: one creator's series (per variant, ascending) through the rules, day by day."""
    days = sorted({p.date_key for points in series.values() for p in points})
    if since is not None:
        days = [d for d in days if d >= since]
    # one alert per (rule, variant), as the daemon keeps them
    states: dict[tuple[str, Variant], AlertState | None] = {}
    lines: list[BacktestLine] = []
    for day in days:
        now = datetime.combine(day + timedelta(days=1), time(0), tzinfo=zone)
        subjects = [
            rules.Subject(creator=creator, variant=variant, series=prefix, now=now)
            for variant, points in series.items()
            if (prefix := tuple(p for p in points if p.date_key <= day))
        ]
        for rule, subject in ((r, s) for r in ruleset for s in subjects):
            if not rules.in_scope(rule, subject):  # a note or balance rule reads no series
                continue
            key = (rule.name, subject.variant)
            outcome = rules.evaluate(rule, subject)
            transition = alerts.step(
                states.get(key), outcome, rule, now, variant=subject.variant.label
            )
            states[key] = transition.after
            lines += _lines(day, creator.user_id, creator.name, transition)
    return lines


def replay_notes(
    ruleset: Sequence[Rule], creator: Creator, history: NoteHistory, zone: ZoneInfo
) -> list[BacktestLine]:
    """PURE: one creator's note-list visits through the note rules: at each visit, the notes
    it listed, as the rules saw them then. Each event fires once."""
    note_rules = [r for r in ruleset if isinstance(r, NewNoteRule | NoteRule)]
    if not note_rules or not history.observations:
        return []
    first_seen: dict[str, NoteObservation] = {}
    visits: dict[datetime, list[NoteRecord]] = {}
    for note_id, observed in history.observations:
        note, first_at = history.notes[note_id]
        first = first_seen.setdefault(note_id, observed)
        record = NoteRecord(note, first_at, first, observed)
        visits.setdefault(observed.seen_at, []).append(record)
    states: dict[tuple[str, str], AlertState | None] = {}
    lines: list[BacktestLine] = []
    variant = Variant.for_source(NOTES)
    for at, records in sorted(visits.items()):
        subject = rules.Subject(
            creator=creator,
            variant=variant,
            series=(),
            now=at,
            notes=tuple(records),
            notes_since=history.baseline_at,
        )
        day = at.astimezone(zone).date()
        for rule in note_rules:
            for key, outcome in rules.outcomes(rule, subject):
                transition = alerts.step(
                    states.get((rule.name, key)), outcome, rule, at, variant=key
                )
                states[rule.name, key] = transition.after
                lines += _lines(day, creator.user_id, creator.name, transition)
    return lines


def spend_days_left(readings: Sequence[BalanceReading], index: int) -> float | None:
    """PURE: the days the balance at ``readings[index]`` lasts at the average fall per day of
    the readings in the ``SPEND_WINDOW`` before it (rises, top-ups, left out); None when they
    span under an hour or show no spending."""
    current = readings[index]
    window = [r for r in readings[: index + 1] if current.read_at - r.read_at <= SPEND_WINDOW]
    span = current.read_at - window[0].read_at
    spent = sum(
        (max(Decimal(0), a.amount - b.amount) for a, b in pairwise(window)),
        Decimal(0),
    )
    if span < _MIN_SPAN or spent <= 0:
        return None
    per_day = spent / Decimal(span.total_seconds() / 86400)
    return float(current.amount / per_day)


def replay_balance(
    ruleset: Iterable[Rule],
    readings: Sequence[BalanceReading],
    since: datetime | None,
    zone: ZoneInfo,
) -> list[BacktestLine]:
    """PURE: the balance rules at each reading from ``since`` (earlier readings give the
    spend rate only)."""
    balance_rules = [r for r in ruleset if isinstance(r, BalanceRule)]
    states: dict[str, AlertState | None] = {}
    lines: list[BacktestLine] = []
    for index, reading in enumerate(readings):
        if since is not None and reading.read_at < since:
            continue
        account = rules.AccountSubject(
            now=reading.read_at,
            used_today=0,
            daily_calls=0,
            balance=reading.amount,
            balance_read_at=reading.read_at,
            days_left=spend_days_left(readings, index),
        )
        day = reading.read_at.astimezone(zone).date()
        for rule in balance_rules:
            outcome = rules.evaluate(rule, account)
            transition = alerts.step(
                states.get(rule.name), outcome, rule, reading.read_at, variant=NO_VARIANT
            )
            states[rule.name] = transition.after
            lines += _lines(day, rules.ACCOUNT_SCOPE, "", transition)
    return lines


def _lines(day: date, user_id: str, name: str, transition: alerts.Transition) -> list[BacktestLine]:
    state = transition.after
    if state is None:
        return []
    return [
        BacktestLine(
            day=day,
            rule=state.rule,
            user_id=user_id,
            name=name,
            event=event.value,
            severity=state.severity.value,
            # a resolution reads better with the reading that cleared it
            summary=str(state.details.get("clear_summary") or state.summary)
            if event is Event.RESOLVED
            else state.summary,
            metric=state.metric,
            value=state.value,
            baseline=state.baseline,
            change_pct=state.details.get("change_pct"),
        )
        for event in transition.events
        if event in _REPORTED
    ]
