"""PURE alert lifecycle: fold one rule Outcome into the stored AlertState (pending → firing →
resolved) and say which events to notify; decide when a queued message may go out (silences,
quiet hours). No I/O, no clock (``now`` is passed in), no database, no asyncio.

Delivery semantics (``should_deliver``), per queued message and channel:

- A silence matching the message (rule / creator / tag, while active) holds it until the silence
  ends; it is never dropped for being silenced.
- Quiet hours hold non-critical messages until the end of the channel's local window.
- A firing (or repeat) still queued when its alert has resolved is SUPPRESSED, and a resolution
  whose firing was suppressed is SUPPRESSED too: "fired under a silence, resolved before the
  silence ended" sends neither, and the outbox keeps both rows as the record. A resolution whose
  firing was delivered is always delivered (after any silence or quiet window).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, time, timedelta
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

from monitor.config import Rule
from monitor.model import AlertState, Finding, Outcome, Phase, Severity, Verdict

__all__ = [
    "Action",
    "AlertState",
    "Decision",
    "Event",
    "FiringFate",
    "Outgoing",
    "Phase",
    "QuietHours",
    "Silence",
    "Transition",
    "should_deliver",
    "step",
]


class Event(StrEnum):
    FIRING = "firing"
    REPEAT = "repeat"
    RESOLVED = "resolved"


@dataclass(frozen=True, slots=True)
class Transition:
    """What one evaluation did. The glue, in one transaction with the outbox rows for ``events``:
    inserts ``after`` when its id is None, updates it when it changed, deletes ``before`` when
    ``dropped`` (a pending alert that cleared before it fired).
    """

    before: AlertState | None
    after: AlertState | None
    events: tuple[Event, ...] = ()

    @property
    def dropped(self) -> bool:
        return self.before is not None and self.before.open and self.after is None

    @property
    def changed(self) -> bool:
        return self.before != self.after


def _details(finding: Finding) -> dict[str, Any]:
    """The finding as JSON-ready details (dates as ISO strings)."""
    out: dict[str, Any] = dict(finding.details)
    out.update(
        change_abs=finding.change_abs,
        change_pct=finding.change_pct,
        date=None if finding.newest_date is None else finding.newest_date.isoformat(),
        baseline_date=None if finding.baseline_date is None else finding.baseline_date.isoformat(),
    )
    return out


def _observe(state: AlertState, outcome: Outcome, now: datetime) -> AlertState:
    finding = outcome.finding
    if finding is None:
        return replace(state, last_seen_at=now, hits=state.hits + 1, clears=0)
    return replace(
        state,
        metric=finding.metric,
        value=finding.value,
        baseline=finding.baseline,
        summary=finding.summary,
        details=_details(finding),
        last_seen_at=now,
        hits=state.hits + 1,
        clears=0,
    )


def _open(
    outcome: Outcome, rule: Rule, now: datetime, creator_id: int | None, variant: str
) -> AlertState:
    fresh = AlertState(
        rule=rule.name,
        scope=outcome.scope,
        variant=variant,
        severity=rule.severity,
        state=Phase.PENDING,
        creator_id=creator_id,
        pending_since=now,
    )
    return _observe(fresh, outcome, now)


def _fire(state: AlertState, now: datetime) -> AlertState:
    return replace(state, state=Phase.FIRING, fired_at=now, firing_sent=True, last_notified_at=now)


def _repeat_due(state: AlertState, rule: Rule, now: datetime) -> bool:
    if not state.firing_sent or state.last_notified_at is None or state.acked_at is not None:
        return False
    if rule.max_repeats is not None and state.repeats_sent >= rule.max_repeats:
        return False
    return now - state.last_notified_at >= rule.repeat


def step(
    state: AlertState | None,
    outcome: Outcome,
    rule: Rule,
    now: datetime,
    *,
    creator_id: int | None = None,
    variant: str = "",
) -> Transition:
    """Fold one evaluation into the alert for (rule, scope, variant). ``state`` is the open
    alert, or the last resolved one, or None; ``creator_id`` and ``variant`` name the series
    of a new alert.
    """
    if outcome.verdict is Verdict.UNKNOWN:
        return Transition(state, state)
    current = state if state is not None and state.open else None
    if outcome.verdict is Verdict.CLEAR:
        if current is None:
            return Transition(state, state)
        after = _clear(current, outcome, rule, now)
        owed = after is not None and after.state is Phase.RESOLVED and after.firing_sent
        return Transition(state, after, (Event.RESOLVED,) if owed else ())
    if current is None:
        return _hit(state, _open(outcome, rule, now, creator_id, variant), rule, now)
    return _hit(state, _observe(current, outcome, now), rule, now)


def _hit(state: AlertState | None, current: AlertState, rule: Rule, now: datetime) -> Transition:
    """After a FIRING evaluation: fire after ``for_`` hits, or repeat when due."""
    if current.state is Phase.PENDING:
        if current.hits >= rule.for_:
            return Transition(state, _fire(current, now), (Event.FIRING,))
        return Transition(state, current)
    if _repeat_due(current, rule, now):
        repeated = replace(current, last_notified_at=now, repeats_sent=current.repeats_sent + 1)
        return Transition(state, repeated, (Event.REPEAT,))
    return Transition(state, current)


def _clear(state: AlertState, outcome: Outcome, rule: Rule, now: datetime) -> AlertState | None:
    """A CLEAR on an open alert: a pending one is dropped; a firing one resolves after
    ``resolve_for`` consecutive CLEARs (hysteresis against a value hovering at the line).
    """
    if state.state is Phase.PENDING:
        return None
    clears = state.clears + 1
    if clears < rule.resolve_for:
        return replace(state, clears=clears, hits=0)
    details = dict(state.details)
    if outcome.finding is not None:
        finding = outcome.finding
        details.update(
            clear_value=finding.value,
            clear_summary=finding.summary,
            clear_date=None if finding.newest_date is None else finding.newest_date.isoformat(),
        )
    return replace(
        state, state=Phase.RESOLVED, resolved_at=now, clears=clears, hits=0, details=details
    )


@dataclass(frozen=True, slots=True)
class Silence:
    """Holds matching messages while ``starts_at <= now < ends_at``. Each given matcher must match
    (``creator`` is a user_id or 'account'); a silence with no matcher holds everything.
    """

    ends_at: datetime
    starts_at: datetime | None = None
    rule: str | None = None
    creator: str | None = None
    tag: str | None = None
    id: int | None = None
    reason: str = ""

    def active(self, now: datetime) -> bool:
        return (self.starts_at is None or self.starts_at <= now) and now < self.ends_at

    def matches(self, rule: str, scope: str, tags: Iterable[str]) -> bool:
        return (
            (self.rule is None or self.rule == rule)
            and (self.creator is None or self.creator == scope)
            and (self.tag is None or self.tag in tags)
        )


@dataclass(frozen=True, slots=True)
class QuietHours:
    """A channel's local quiet window; ``start > end`` wraps past midnight (22:00-08:00)."""

    start: time
    end: time
    zone: ZoneInfo

    def end_if_inside(self, now: datetime) -> datetime | None:
        """The UTC end of the window ``now`` falls in, or None when outside it."""
        local = now.astimezone(self.zone)
        clock = local.time().replace(tzinfo=None)
        day = local.date()
        if self.start < self.end:
            inside = self.start <= clock < self.end
        else:
            inside = clock >= self.start or clock < self.end
            if clock >= self.start:
                day += timedelta(days=1)
        if not inside:
            return None
        return datetime.combine(day, self.end, tzinfo=self.zone).astimezone(UTC)


class FiringFate(StrEnum):
    """What became of an alert's firing message on the channel a resolution is bound for."""

    SENT = "sent"
    QUEUED = "queued"
    SUPPRESSED = "suppressed"


@dataclass(frozen=True, slots=True)
class Outgoing:
    """What ``should_deliver`` needs to know about one queued message for one channel."""

    event: Event
    rule: str
    scope: str  # user_id or 'account'
    severity: Severity
    tags: tuple[str, ...] = ()
    alert_resolved: bool = False  # firing/repeat: its alert has resolved since it was queued
    firing: FiringFate = FiringFate.SENT  # resolved: the fate of its firing on this channel


class Action(StrEnum):
    SEND = "send"
    HOLD = "hold"
    SUPPRESS = "suppress"


@dataclass(frozen=True, slots=True)
class Decision:
    """SEND now; HOLD until ``until`` (None: until its firing settles, ask at the next drain);
    SUPPRESS: record, never send.
    """

    action: Action
    until: datetime | None = None
    reason: str = ""


def _silenced_until(message: Outgoing, silences: Iterable[Silence], at: datetime) -> datetime:
    """The end of the matching silences covering ``at``, chained through overlaps."""
    matching = [s for s in silences if s.matches(message.rule, message.scope, message.tags)]
    until = at
    while True:
        covering = [s.ends_at for s in matching if s.active(until)]
        if not covering:
            return until
        until = max(covering)


def should_deliver(
    message: Outgoing,
    silences: Iterable[Silence],
    quiet: QuietHours | None,
    now: datetime,
) -> Decision:
    """May this queued message go out now? See the module docstring for the semantics."""
    if message.event is not Event.RESOLVED and message.alert_resolved:
        return Decision(Action.SUPPRESS, reason="its alert resolved before it was sent")
    if message.event is Event.RESOLVED:
        if message.firing is FiringFate.SUPPRESSED:
            return Decision(Action.SUPPRESS, reason="its firing was never sent")
        if message.firing is FiringFate.QUEUED:
            return Decision(Action.HOLD, reason="waiting for its firing to be sent")
    silences = tuple(silences)
    until, reason = now, ""
    for _ in range(64):  # silences and quiet windows alternate; each pass moves strictly later
        later = _silenced_until(message, silences, until)
        if later > until:
            until, reason = later, "silenced"
            continue
        if quiet is not None and message.severity is not Severity.CRITICAL:
            window_end = quiet.end_if_inside(until)
            if window_end is not None and window_end > until:
                until, reason = window_end, reason or "quiet hours"
                continue
        break
    if until > now:
        return Decision(Action.HOLD, until=until, reason=reason)
    return Decision(Action.SEND)
