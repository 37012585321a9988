"""Glue between the pure delivery decision (``policy.lifecycle.should_deliver``) and the
notifier's gate.

Owns only the translation of outbox rows and silences into the alert logic's types; it decides
nothing itself and does no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from monitor.config import Config
from monitor.model import Severity
from monitor.notify.ports import Gate, Hold, Queued, SilenceLike, Suppress
from monitor.policy.lifecycle import (
    Action,
    Event,
    FiringFate,
    Outgoing,
    QuietHours,
    Silence,
    should_deliver,
)

_FATE = {"pending": FiringFate.QUEUED, "suppressed": FiringFate.SUPPRESSED}
_ALERT_EVENTS = frozenset(e.value for e in Event)


def quiet_hours(config: Config) -> dict[str, QuietHours]:
    """Channel name → its quiet window, in the budget's time zone."""
    return {
        c.name: QuietHours(window[0], window[1], config.budget.zone)
        for c in config.channels
        if (window := c.quiet_window) is not None
    }


def _silence(row: SilenceLike) -> Silence:
    return Silence(
        ends_at=row.ends_at,
        starts_at=row.starts_at,
        rule=row.rule,
        creator=row.user_id,
        tag=row.tag,
        id=row.id,
    )


def delivery_gate(config: Config) -> Gate:
    """A ``notify.Gate`` applying silences (re-read at every drain) and per-channel quiet hours."""
    windows = quiet_hours(config)

    def gate(
        message: Queued, silences: Sequence[SilenceLike], now: datetime
    ) -> Hold | Suppress | None:
        quiet = windows.get(message.channel)
        severity = Severity(message.severity)
        if message.rule is None or message.event not in _ALERT_EVENTS:
            # digests and tests are about no one alert: only quiet hours apply
            end = (
                None if quiet is None or severity is Severity.CRITICAL else quiet.end_if_inside(now)
            )
            return None if end is None else Hold(end, "quiet hours")
        outgoing = Outgoing(
            event=Event(message.event),
            rule=message.rule,
            scope=message.scope or "account",
            severity=severity,
            tags=message.tags,
            alert_resolved=message.alert_state == "resolved",
            firing=_FATE.get(message.firing_status or "", FiringFate.SENT),
        )
        decision = should_deliver(outgoing, [_silence(s) for s in silences], quiet, now)
        if decision.action is Action.SUPPRESS:
            return Suppress(decision.reason)
        if decision.action is Action.HOLD:
            return Hold(decision.until, decision.reason)
        return None

    return gate
