"""PURE delivery decision, the first stage of the notification path (decide → group → render →
send → record): may a queued message go out now, wait, or never go? No I/O, no clock (``now`` is
passed in), no database, no asyncio; the notifier asks before it groups, renders or sends.

Semantics (``should_deliver``), per queued message and channel, in this order:

- Inhibition by the alert's own fate: a firing (or repeat) still queued when its alert has
  resolved is SUPPRESSED, and a resolution whose firing was suppressed is SUPPRESSED too: "fired
  under a silence, resolved before the silence ended" sends neither, and the outbox keeps both
  rows as the record. A resolution whose firing is still queued waits for it. A resolution whose
  firing was delivered is always delivered (after any silence or quiet window).
- A silence matching the message (rule / creator / tag, while active) holds it until the silence
  ends; it is never dropped for being silenced.
- Quiet hours hold non-critical messages until the end of the channel's local window.

Messages about no one alert (digests, reports, tests) answer to quiet hours only
(``DeliveryPolicy.decide``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from enum import StrEnum
from typing import Protocol
from zoneinfo import ZoneInfo

from monitor.config import Config
from monitor.model import Severity
from monitor.policy.lifecycle import Event

__all__ = [
    "Action",
    "Decision",
    "DeliveryPolicy",
    "FiringFate",
    "Outgoing",
    "QuietHours",
    "Silence",
    "quiet_hours",
    "should_deliver",
]


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


class Deliverable(Protocol):
    """What the decision reads off one queued outbox row (``notify.ports.Queued`` fits)."""

    @property
    def channel(self) -> str: ...
    @property
    def event(self) -> str: ...
    @property
    def severity(self) -> str: ...
    @property
    def rule(self) -> str | None: ...  # None: not about an alert (digest, report, test)
    @property
    def scope(self) -> str | None: ...
    @property
    def tags(self) -> tuple[str, ...]: ...
    @property
    def alert_state(self) -> str | None: ...
    @property
    def firing_status(self) -> str | None: ...


class SilenceRow(Protocol):
    """A stored silence as the store hands it out."""

    @property
    def id(self) -> int: ...
    @property
    def user_id(self) -> str | None: ...
    @property
    def rule(self) -> str | None: ...
    @property
    def tag(self) -> str | None: ...
    @property
    def starts_at(self) -> datetime: ...
    @property
    def ends_at(self) -> datetime: ...


def silence_of(row: SilenceRow) -> Silence:
    return Silence(
        ends_at=row.ends_at,
        starts_at=row.starts_at,
        rule=row.rule,
        creator=row.user_id,
        tag=row.tag,
        id=row.id,
    )


def quiet_hours(config: Config) -> dict[str, QuietHours]:
    """Channel name → its quiet window, in the budget's time zone."""
    return {
        c.name: QuietHours(window[0], window[1], config.budget.zone)
        for c in config.channels
        if (window := c.quiet_window) is not None
    }


_FATE = {"pending": FiringFate.QUEUED, "suppressed": FiringFate.SUPPRESSED}
_ALERT_EVENTS = frozenset(e.value for e in Event)
_SEND = Decision(Action.SEND)


@dataclass(frozen=True, slots=True)
class DeliveryPolicy:
    """The decision for a notifier: per-channel quiet hours, and the silences it is handed."""

    quiet: Mapping[str, QuietHours] = field(default_factory=dict)

    @classmethod
    def from_config(cls, config: Config) -> DeliveryPolicy:
        return cls(quiet_hours(config))

    def decide(self, message: Deliverable, silences: Sequence[Silence], now: datetime) -> Decision:
        """SEND, HOLD or SUPPRESS one queued message (see the module docstring)."""
        quiet = self.quiet.get(message.channel)
        severity = Severity(message.severity)
        if message.rule is None or message.event not in _ALERT_EVENTS:
            # digests and tests are about no one alert: only quiet hours apply
            end = (
                None if quiet is None or severity is Severity.CRITICAL else quiet.end_if_inside(now)
            )
            return _SEND if end is None else Decision(Action.HOLD, until=end, reason="quiet hours")
        outgoing = Outgoing(
            event=Event(message.event),
            rule=message.rule,
            scope=message.scope or "account",
            severity=severity,
            tags=message.tags,
            alert_resolved=message.alert_state == "resolved",
            firing=_FATE.get(message.firing_status or "", FiringFate.SENT),
        )
        return should_deliver(outgoing, silences, quiet, now)
