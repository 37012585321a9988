"""PURE alert lifecycle: fold one rule Outcome into the stored AlertState (pending → firing →
resolved) and say which events to notify. No I/O, no clock (``now`` is passed in), no database,
no asyncio. Whether and when a queued message may go out is ``policy.delivery``'s.

An event (``model.EVENT_KINDS``: ``new_note``, ``note``; one alert per note) fires at its first
FIRING outcome and never again: any stored alert of its (rule, scope, variant), open or
resolved, means it was told. It stays open (firing) for ``EVENT_HOLD``, so that the open-alert
unique index keeps a second instance that read before it was written from telling it twice,
then resolves quietly at the next evaluation: no repeat, no resolution message.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from monitor.config import Rule
from monitor.model import EVENT_KINDS, AlertState, Finding, Outcome, Phase, Verdict

__all__ = [
    "EVENT_HOLD",
    "AlertState",
    "Event",
    "Phase",
    "Transition",
    "step",
]


#: how long a told event's alert stays open before it resolves quietly (see the docstring)
EVENT_HOLD = timedelta(hours=1)


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
    if rule.kind in EVENT_KINDS:
        return _event(state, outcome, rule, now, creator_id, variant)
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


def _event(
    state: AlertState | None,
    outcome: Outcome,
    rule: Rule,
    now: datetime,
    creator_id: int | None,
    variant: str,
) -> Transition:
    """An event's step: fire once at the first FIRING outcome (``for`` does not apply), then
    resolve quietly once ``EVENT_HOLD`` has passed, whatever the outcome; a told event (any
    stored alert) never fires again."""
    if state is None:
        if outcome.verdict is not Verdict.FIRING:
            return Transition(None, None)
        return Transition(
            None, _fire(_open(outcome, rule, now, creator_id, variant), now), (Event.FIRING,)
        )
    since = state.fired_at or state.pending_since
    if state.open and (since is None or now - since >= EVENT_HOLD):
        details = {**state.details, "told": state.firing_sent}
        done = replace(state, state=Phase.RESOLVED, resolved_at=now, details=details)
        return Transition(state, done)
    return Transition(state, state)
