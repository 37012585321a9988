"""An alert message's facts: what its template reads, kept as JSON in the outbox row, so the
notifier renders the message when it sends it (a template fixed while the message waits reaches
it). Builds the facts (evaluation), reads them back and renders them (the notifier). Must not
send anything or touch the database.

The facts hold the alert as it was when the message was queued (its numbers, summary, times and
details), the creator and variant it names, the time zone and language it is written for, the
time it speaks of (``now``) and the note an orphan's resolution ends with. Rendered from them, a
message reads exactly as it would have at queueing time, unless its template changed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, cast
from zoneinfo import ZoneInfo

from monitor.model import Creator
from monitor.notify.message import AlertView, Language, Message, MessageContext, group_entry
from monitor.notify.rendering import Renderer
from monitor.policy.grouping import rank

#: bumped when the shape changes; a reader that does not know a version renders nothing new
VERSION = 1


class FactsSource(AlertView, Protocol):
    """An alert with its series' key (``model.AlertState`` fits)."""

    @property
    def variant(self) -> str: ...


@dataclass(frozen=True, slots=True)
class AlertFacts:
    """The alert as its queued message saw it (an ``AlertView`` and a ``grouping.Grouped``)."""

    rule: str
    scope: str
    variant: str
    severity: str
    metric: str | None
    value: float | None
    baseline: float | None
    fired_at: datetime | None
    resolved_at: datetime | None
    summary: str
    details: Mapping[str, Any] = field(default_factory=dict)


def _iso(at: datetime | None) -> str | None:
    return None if at is None else at.isoformat()


def _at(text: Any) -> datetime | None:
    return None if text is None else datetime.fromisoformat(str(text))


def alert_facts(
    event: str,
    alert: FactsSource,
    context: MessageContext,
    language: Language,
    *,
    note: str | None = None,
) -> dict[str, Any]:
    """The JSON-ready facts of one alert event's message in ``language``; ``note`` is a last
    line of our own (why an orphan resolved), added whatever the template."""
    creator = context.creator
    variant = context.variant
    return {
        "v": VERSION,
        "event": event,
        "language": language,
        "alert": {
            "rule": alert.rule,
            "scope": alert.scope,
            "variant": alert.variant,
            "severity": str(alert.severity),
            "metric": alert.metric,
            "value": alert.value,
            "baseline": alert.baseline,
            "fired_at": _iso(alert.fired_at),
            "resolved_at": _iso(alert.resolved_at),
            "summary": alert.summary,
            "details": dict(alert.details),
        },
        "now": context.now.isoformat(),
        "zone": context.zone.key or "UTC",
        "creator": None if creator is None else {"user_id": creator.user_id, "name": creator.name},
        "variant": None if variant is None or isinstance(variant, str) else variant.label,
        "note": note,
    }


def readable(facts: Mapping[str, Any] | None) -> bool:
    """Whether these stored facts are of a shape this code renders."""
    return facts is not None and facts.get("v") == VERSION


def _read(facts: Mapping[str, Any]) -> tuple[str, AlertFacts, MessageContext, Language]:
    a = facts["alert"]
    alert = AlertFacts(
        rule=a["rule"],
        scope=a["scope"],
        variant=a["variant"],
        severity=a["severity"],
        metric=a["metric"],
        value=a["value"],
        baseline=a["baseline"],
        fired_at=_at(a["fired_at"]),
        resolved_at=_at(a["resolved_at"]),
        summary=a["summary"],
        details=a["details"] or {},
    )
    who = facts["creator"]
    context = MessageContext(
        now=datetime.fromisoformat(facts["now"]),
        creator=None if who is None else Creator(user_id=who["user_id"], name=who["name"]),
        variant=facts["variant"],
        zone=ZoneInfo(facts["zone"]),
    )
    return facts["event"], alert, context, cast(Language, facts["language"])


def render_facts(renderer: Renderer, facts: Mapping[str, Any]) -> Message:
    """The message the facts describe, rendered by ``renderer``'s templates now."""
    event, alert, context, language = _read(facts)
    message = renderer.render(event, alert, context, language)
    note = facts.get("note")
    if note is None:
        return message
    return Message(message.title, f"{message.body}\n_{_note(note, language)}_\n", message.error)


def grouped_entry(facts: Mapping[str, Any]) -> dict[str, Any]:
    """How the message reads inside a grouped one (``policy.grouping.compose``'s entry)."""
    event, alert, context, language = _read(facts)
    return {"rank": rank(alert), **group_entry(event, alert, context, language)}


def _note(reason: str, language: Language) -> str:
    return f"不再评估：{reason}" if language == "zh" else f"No longer evaluated: {reason}."
