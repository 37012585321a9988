"""PURE: what the messages say about the events on notes (``new_note``, ``note``) and the
balance, from an alert's stored details: the ``note`` and ``balance`` variables of the alert
templates, their title's reading, and a note's line in a grouped message. Must not send anything
or touch the database.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from monitor.config import Language
from monitor.display import (
    format_money,
    format_value,
    human_duration,
    labelled_time,
    note_age_text,
    note_text,
    note_type_text,
)
from monitor.model import EVENT_KINDS, METRIC_LABELS, Note
from monitor.notify.digest_sources import markdown_text

UTC_ZONE = ZoneInfo("UTC")


class Reading(Protocol):
    """What a title's reading reads from an alert."""

    @property
    def metric(self) -> str | None: ...
    @property
    def value(self) -> float | None: ...
    @property
    def details(self) -> Mapping[str, Any]: ...


def note_of(details: Mapping[str, Any]) -> Note | None:
    """The note an event's details name (None: not an event about a note)."""
    if details.get("kind") not in EVENT_KINDS or not details.get("note_id"):
        return None
    try:
        published = date.fromisoformat(str(details.get("published")))
    except ValueError:
        return None
    return Note(
        note_id=str(details["note_id"]),
        title=str(details.get("title") or ""),
        published=published,
        video=bool(details.get("video")),
        ad=bool(details.get("ad")),
        brand=details.get("brand") or None,
    )


def note_variables(details: Mapping[str, Any], language: Language) -> dict[str, Any] | None:
    """The ``note`` variable of an event's message (see the module docstring)."""
    note = note_of(details)
    if note is None:
        return None
    word, age_s = details.get("age_rule"), details.get("age_limit_s")
    age = None if age_s is None else human_duration(timedelta(seconds=float(age_s)), language)
    return {
        "id": note.note_id,
        # the upstream's text, in the Markdown body: one line that reads as written (no
        # heading, link, emphasis or HTML of its own); plain-text channels drop the escapes
        "title": markdown_text(note.title),
        "published": note.published.isoformat(),
        "type_text": note_type_text(note, language),
        "ad": note.cooperation,
        "brand": None if note.brand is None else markdown_text(note.brand),
        "url": note.url,
        "text": note_text(note, language),
        "when_text": None if age is None else note_age_text(str(word), age, language),
    }


def _money(text: Any) -> Decimal | None:
    try:
        return None if text is None else Decimal(str(text))
    except InvalidOperation:
        return None


def balance_variables(
    details: Mapping[str, Any], zone: ZoneInfo, *, resolved: bool = False
) -> dict[str, Any] | None:
    """The ``balance`` variable of a balance alert's message (see the module docstring); on a
    resolution, the reading that cleared it (its amount alone is kept)."""
    if details.get("kind") != "balance":
        return None
    below, limit = details.get("below"), details.get("days_left_limit")
    if resolved and details.get("clear_value") is not None:
        amount, left, price, read = _money(details.get("clear_value")), None, None, None
    else:
        amount, left = _money(details.get("balance")), details.get("days_left")
        price = _money(details.get("price_per_call"))
        read_at = details.get("read_at")
        read = None if read_at is None else datetime.fromisoformat(str(read_at))
    return {
        "amount_text": format_money(amount),
        "below_text": None if below is None else format_money(float(below)),
        "days_left_text": None if left is None else f"{float(left):.1f}",
        "days_left_limit": None if limit is None else f"{float(limit):g}",
        # a call costs cents or less: four places
        "price_text": None if price is None else f"{price:.4f} CNY",
        "read_at": None if read is None else labelled_time(read, zone),
    }


def event_headline(event: str, alert: Reading, language: Language) -> str | None:
    details = alert.details
    zh = language == "zh"
    if details.get("kind") == "balance":
        money = balance_variables(details, UTC_ZONE) or {}
        if event == "resolved":
            back = format_money(details.get("clear_value"))
            return f"余额回到 {back}" if zh else f"balance back to {back}"
        parts = [f"{'余额' if zh else 'balance'} {money['amount_text']}"]
        if details.get("low"):
            parts[0] += f" < {money['below_text']}"
        if details.get("short"):
            left, limit = money["days_left_text"], money["days_left_limit"]
            parts.append(f"剩余 {left} 天 < {limit}" if zh else f"{left} days left < {limit}")
        return ("，" if zh else ", ").join(parts)
    note = note_variables(details, language)
    if note is None:
        return None
    if details.get("kind") == "new_note" or alert.metric is None:
        return str(note["text"])
    label = METRIC_LABELS[language].get(alert.metric, alert.metric)
    limit = format_value(alert.metric, details.get("threshold"))
    reading = f"{label} {format_value(alert.metric, alert.value)} {details.get('op')} {limit}"
    return f"{reading} {note['when_text']}" if note["when_text"] else reading


#: the title word of an event's message, per kind
EVENT_VERBS = {
    "en": {"new_note": "NEW NOTE", "note": "NOTE"},
    "zh": {"new_note": "新笔记", "note": "笔记"},
}


def note_entry(
    kind: str, who: str, what: str, note: Mapping[str, Any], rule: str, language: Language
) -> dict[str, str]:
    """A note event inside a grouped message: its line carries the note and its link; the
    group counts notes, not creators."""
    verb = EVENT_VERBS[language].get(kind, kind)
    line = what if kind == "new_note" else f"{what}: {note['text']}"
    if language == "zh":
        line = what if kind == "new_note" else f"{what}：{note['text']}"
        return {
            "line": f"{who}：{line} {note['url']}",
            "title": f"【{verb}】{rule}：{{n}} 篇笔记",
            "more": "……另有 {k} 篇，全部列表：`creator-monitor alerts`",
        }
    return {
        "line": f"{who}: {line} {note['url']}",
        "title": f"[{verb}] {rule}: {{n}} notes",
        "more": "…and {k} more: `creator-monitor alerts` lists them all",
    }
