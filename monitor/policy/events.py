"""PURE note events: which of a creator's notes a ``new_note`` or ``note`` rule speaks of, and
what it says about each. One Outcome per note, keyed by the note's alert variant
(``note:<noteId>``); the lifecycle (``lifecycle.step``) makes each fire once. No I/O, no clock
(``now`` is passed in), no database.

Bounds, so that adding a rule to an install with months of stored notes announces nothing old:
- ``new_note``: a note is new when it was first listed after the creator's first visit (the
  baseline), was published on or after that visit's day and at most ``NEW_NOTE_AGE`` (7 days)
  before the day it was first listed (a note found weeks late, after a long stop, is not
  news), and was first listed less than ``EVENT_WINDOW`` ago;
- ``note``: a note's age runs from 00:00 Asia/Shanghai of its publishing day. ``within``
  judges the newest observation taken while the note was younger than ``within``, as long as
  the note is younger than ``within`` + ``EVENT_WINDOW``; ``after`` judges the newest
  observation taken once it was at least ``after`` old, and less than ``after`` +
  ``EVENT_WINDOW`` old (a note that left the pages the monitor reads before it turned that old
  is never judged).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from monitor.config import NewNoteRule, NoteRule, Rule
from monitor.display import (
    format_duration,
    format_value,
    metric_label,
    note_age_text,
    note_text,
)
from monitor.model import (
    OPS,
    Finding,
    Note,
    NoteRecord,
    NotesWanted,
    Outcome,
    Verdict,
    note_variant,
)

#: the zone of a note's publishing day (the platform's)
NOTE_ZONE = ZoneInfo("Asia/Shanghai")
#: how long after it becomes true an event about a note may still be told (see the docstring)
EVENT_WINDOW = timedelta(days=2)
#: how many days before the day it was first listed a note may be published to be told as new
NEW_NOTE_AGE = timedelta(days=7)


def notes_wanted(rules: Iterable[Rule], now: datetime) -> NotesWanted | None:
    """What to load for ``rules`` (None: no note rule among them)."""
    seen: datetime | None = None
    published: date | None = None
    for rule in rules:
        if isinstance(rule, NewNoteRule):
            seen = now - EVENT_WINDOW
        elif isinstance(rule, NoteRule):
            age = rule.within if rule.within is not None else rule.after
            assert age is not None  # the config requires one of them
            day = (now - age - EVENT_WINDOW).astimezone(NOTE_ZONE).date()
            published = day if published is None else min(published, day)
    if seen is None and published is None:
        return None
    return NotesWanted(seen, published)


def note_age(note: Note, at: datetime) -> timedelta:
    """How old ``note`` is at ``at``: from 00:00 Asia/Shanghai of its publishing day."""
    return at - datetime.combine(note.published, time(0), NOTE_ZONE)


def is_new(record: NoteRecord, baseline_at: datetime | None, now: datetime) -> bool:
    """Whether ``new_note`` announces this note at ``now`` (``baseline_at``: the creator's
    first visit; its notes, and notes published before its day, existed when tracking began)."""
    if baseline_at is None or record.first_seen_at <= baseline_at:
        return False
    if record.note.published < baseline_at.astimezone(NOTE_ZONE).date():
        return False
    listed_day = record.first_seen_at.astimezone(NOTE_ZONE).date()
    if record.note.published < listed_day - NEW_NOTE_AGE:
        return False
    return now - record.first_seen_at < EVENT_WINDOW


def _note_details(kind: str, note: Note) -> dict[str, Any]:
    return {
        "kind": kind,
        "note_id": note.note_id,
        "title": note.title,
        "published": note.published.isoformat(),
        "video": note.video,
        "ad": note.ad,
        "brand": note.brand,
        "url": note.url,
    }


def new_note_outcomes(
    rule: NewNoteRule,
    records: Sequence[NoteRecord],
    baseline_at: datetime | None,
    now: datetime,
    scope: str,
) -> list[tuple[str, Outcome]]:
    """A FIRING outcome per note ``rule`` announces (notes it does not are left out)."""
    del rule  # every new note; scope was checked by the caller
    out = []
    for record in records:
        if not is_new(record, baseline_at, now):
            continue
        note = record.note
        details = _note_details("new_note", note)
        details["first_seen_at"] = record.first_seen_at.isoformat()
        finding = Finding(
            summary=f"new note {note_text(note)}",
            newest_date=note.published,
            details=details,
        )
        out.append((note_variant(note.note_id), Outcome(Verdict.FIRING, scope, finding=finding)))
    return out


def note_outcomes(
    rule: NoteRule, records: Sequence[NoteRecord], now: datetime, scope: str
) -> list[tuple[str, Outcome]]:
    """An outcome per note in ``rule``'s age window: FIRING when its observation meets the
    comparison, CLEAR when it does not, UNKNOWN when the page did not show the metric."""
    out = []
    for record in records:
        observed = record.latest
        seen_age = note_age(record.note, observed.seen_at)
        if rule.within is not None:
            judged = seen_age < rule.within and note_age(record.note, now) < (
                rule.within + EVENT_WINDOW
            )
            age, word = rule.within, "within"
        else:
            assert rule.after is not None
            judged = rule.after <= seen_age < rule.after + EVENT_WINDOW
            age, word = rule.after, "after"
        if not judged:
            continue
        key = note_variant(record.note.note_id)
        value = getattr(observed.stats, rule.metric)
        if value is None:
            reason = f"{rule.metric} not shown for the note"
            out.append((key, Outcome(Verdict.UNKNOWN, scope, reason=reason)))
            continue
        out.append((key, _judged(rule, record, float(value), (word, age), scope)))
    return out


def _judged(
    rule: NoteRule, record: NoteRecord, value: float, when: tuple[str, timedelta], scope: str
) -> Outcome:
    note = record.note
    fires = OPS[rule.op](value, rule.value)
    limit = format_value(rule.metric, rule.value)
    reading = f"{metric_label(rule.metric)} {format_value(rule.metric, value)} {rule.op} {limit}"
    details = _note_details("note", note)
    details.update(
        op=rule.op,
        threshold=rule.value,
        age_rule=when[0],
        age_limit_s=when[1].total_seconds(),
        seen_at=record.latest.seen_at.isoformat(),
        age_s=note_age(note, record.latest.seen_at).total_seconds(),
    )
    finding = Finding(
        summary=f"{reading} {note_age_text(when[0], format_duration(when[1]))}: {note_text(note)}",
        metric=rule.metric,
        value=value,
        baseline=rule.value,
        newest_date=record.latest.seen_at.astimezone(NOTE_ZONE).date(),
        details=details,
    )
    verdict = Verdict.FIRING if fires else Verdict.CLEAR
    return Outcome(verdict, scope, finding=finding)
