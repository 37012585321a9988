"""The spill file's lines: a paid answer the database refused (``encode``/``decode``, a
``FetchRecord``), or a series whose stored answer's rules the database refused (``encode_owed``/
``decode_owed``, an ``OwedSeries``). Text only: no file, no lock, no database here."""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import date, datetime
from typing import Any

from monitor.model import (
    CORE,
    FANS,
    NOTES,
    Advertise,
    Business,
    CoreData,
    DailyPoint,
    DateType,
    FollowerPoint,
    ListedNote,
    Note,
    NotePage,
    NoteStats,
    NoteType,
    Variant,
)
from monitor.policy.budget import quarter_of
from monitor.store import FetchRecord

_FORMAT = 1
#: how an owed-rules line starts (``encode_owed`` writes ``kind`` first): the answers on file
#: are counted without decoding every line
OWED_PREFIX = '{"kind":"rules"'


@dataclass(frozen=True, slots=True)
class OwedSeries:
    """A series whose answer is stored but whose creator's rules have not run (the database
    refused them); ``owed_id`` tells this line from another process's for the same series."""

    creator_id: int
    variant: Variant
    owed_id: str


def new_owed_id() -> str:
    return secrets.token_hex(8)


def encode_owed(owed: OwedSeries) -> str:
    """One JSON line naming the series (its creator and variant, as an answer line does)."""
    body = {
        "kind": "rules",
        "format": _FORMAT,
        "owed_id": owed.owed_id,
        "creator_id": owed.creator_id,
        "variant": owed.variant.query(),
        "source": owed.variant.source,
    }
    return json.dumps(body, separators=(",", ":"))


def decode_owed(line: str) -> OwedSeries:
    """The series ``encode_owed`` wrote; ValueError/KeyError/TypeError on a line it did not."""
    body = json.loads(line)
    if body.get("kind") != "rules" or body.get("format") != _FORMAT:
        raise ValueError(f"not an owed-rules line of format {_FORMAT}")
    return OwedSeries(int(body["creator_id"]), _variant(body), str(body["owed_id"]))


def is_owed(line: str | bytes) -> bool:
    """Whether a spill file's line names owed rules (else it holds an answer)."""
    text = line.decode("utf-8", "replace") if isinstance(line, bytes) else line
    return text.lstrip().startswith(OWED_PREFIX)


def _point(point: DailyPoint) -> dict[str, Any]:
    return {f.name: getattr(point, f.name) for f in fields(point)} | {
        "date_key": point.date_key.isoformat()
    }


def _unpoint(data: Mapping[str, Any]) -> DailyPoint:
    return DailyPoint(**{**data, "date_key": date.fromisoformat(data["date_key"])})


def _time(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _untime(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def encode(record: FetchRecord) -> str:
    """One JSON line holding everything ``store_held`` needs."""
    data = record.data
    body: dict[str, Any] = {
        "format": _FORMAT,
        "attempt_id": record.attempt_id,
        "creator_id": record.creator_id,
        "variant": record.variant.query(),
        "started_at": _time(record.started_at),
        "due_at": _time(record.due_at),
        "latency_ms": record.latency_ms,
        "http_status": record.http_status,
        "code": record.code,
        "billed": record.billed,
        "billed_day": record.billed_day,
        "billed_slot": _time(record.billed_slot),
        "error": record.error,
        "raw_body": record.raw_body if record.keep_raw else None,
        "keep_raw": record.keep_raw,
        "next_due_at": _time(record.next_due_at),
        "source": record.variant.source,
        "followers": None
        if record.followers is None
        else [[p.date_key.isoformat(), p.fans] for p in record.followers],
        "note_page": None if record.note_page is None else _page(record.note_page),
        "unreadable_params": None
        if record.unreadable_params is None
        else dict(record.unreadable_params),
        "data": None
        if data is None
        else {
            "summary": _point(data.summary),
            "daily": [_point(p) for p in data.daily],
            "record_time": _time(data.record_time),
        },
    }
    return json.dumps(body, separators=(",", ":"))


def decode(line: str) -> FetchRecord:
    """The record ``encode`` wrote; ValueError/KeyError/TypeError on a line it did not write."""
    body = json.loads(line)
    if body.get("format") != _FORMAT:
        raise ValueError(f"unknown spill format {body.get('format')!r}")
    variant = _variant(body)
    followers = body.get("followers")
    page = body.get("note_page")
    kept = body.get("unreadable_params")
    raw = body["data"]
    data = None
    if raw is not None:
        data = CoreData(
            summary=_unpoint(raw["summary"]),
            daily=tuple(_unpoint(p) for p in raw["daily"]),
            record_time=_untime(raw["record_time"]),
        )
    started = _untime(body["started_at"])
    assert started is not None
    billed_day = body["billed_day"]
    # a line spilled before the quarter hour travelled with it: the call's own quarter hour
    billed_slot = _untime(body.get("billed_slot"))
    if billed_day is not None and billed_slot is None:
        billed_slot = quarter_of(started)
    return FetchRecord(
        creator_id=int(body["creator_id"]),
        variant=variant,
        started_at=started,
        due_at=_untime(body["due_at"]),
        latency_ms=body["latency_ms"],
        http_status=body["http_status"],
        code=body["code"],
        billed=bool(body["billed"]),
        error=body["error"],
        data=data,
        raw_body=body["raw_body"],
        keep_raw=bool(body["keep_raw"]),
        next_due_at=_untime(body["next_due_at"]),
        attempt_id=body["attempt_id"],
        billed_day=billed_day,
        billed_slot=billed_slot,
        followers=None
        if followers is None
        else tuple(FollowerPoint(date.fromisoformat(day), int(fans)) for day, fans in followers),
        note_page=None if page is None else _unpage(page),
        unreadable_params=None if kept is None else {str(k): str(v) for k, v in kept.items()},
    )


def _variant(body: Mapping[str, Any]) -> Variant:
    q = body["variant"]
    return Variant(
        Business(q["business"]),
        NoteType(q["noteType"]),
        DateType(q["dateType"]),
        Advertise(q["advertiseSwitch"]),
        source=_source(body.get("source", CORE)),  # a line spilled before sources: core's
    )


def _source(name: object) -> str:
    if name not in (CORE, FANS, NOTES):
        raise ValueError(f"unknown source {name!r} in a spilled answer")
    return str(name)


def _page(page: NotePage) -> dict[str, Any]:
    return {
        "page": page.page,
        "total": page.total,
        "record_time": _time(page.record_time),
        "notes": [
            {
                "id": e.note.note_id,
                "title": e.note.title,
                "published": e.note.published.isoformat(),
                "video": e.note.video,
                "ad": e.note.ad,
                "brand": e.note.brand,
                "reads": e.stats.reads,
                "likes": e.stats.likes,
                "collects": e.stats.collects,
            }
            for e in page.notes
        ],
    }


def _unpage(raw: Mapping[str, Any]) -> NotePage:
    notes = tuple(
        ListedNote(
            Note(
                note_id=str(n["id"]),
                title=str(n["title"]),
                published=date.fromisoformat(n["published"]),
                video=bool(n["video"]),
                ad=bool(n["ad"]),
                brand=n["brand"],
            ),
            NoteStats(reads=n["reads"], likes=n["likes"], collects=n["collects"]),
        )
        for n in raw["notes"]
    )
    return NotePage(
        page=int(raw["page"]),
        notes=notes,
        total=raw["total"],
        record_time=_untime(raw["record_time"]),
    )
