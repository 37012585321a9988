"""The note-list source: its path, its query and its parser into notes and their totals.

Pure (no I/O, no clock), sharing monitor/upstream/parse.py's envelope handling. One call reads
one page (8 notes); which pages to read is the caller's choice.
"""

from __future__ import annotations

import re
from datetime import date

from monitor.errors import UnreadableAnswer
from monitor.model import Answer, ListedNote, Note, NotePage, NoteStats
from monitor.upstream.parse import (
    OLDEST_DATE,
    BadData,
    body_text,
    date_bounds,
    parse_record_time,
    read_day,
    read_envelope,
    read_number,
)

SOURCE = "notes"
NOTES_PATH = "/api/xiaohongshu-pgy/api/solar/kol/dataV2/notesDetail/v1"
PAGE_SIZE = 8
#: titles longer than this are cut (the platform's limit is 20 characters; a broken body is not)
MAX_TITLE = 200
MAX_BRAND = 200
_NOTE_ID_RE = re.compile(r"^[0-9a-fA-F]{24}$")


def notes_params(user_id: str, page: int = 1) -> dict[str, str]:
    """The query of one note-list call (without the token): every note, newest first."""
    if page < 1:
        raise ValueError(f"page must be at least 1, not {page}")
    return {
        "userId": user_id,
        "orderType": "LATEST",
        "noteType": "ALL",
        "advertiseSwitch": "ALL",
        "isThirdPlatform": "NO",
        "pageNumber": str(page),
    }


def parse_notes(
    body: str | bytes,
    *,
    page: int = 1,
    http_status: int = 200,
    latency_ms: int = 0,
    today: date | None = None,
) -> Answer[NotePage]:
    """One note-list body: the page's notes in the upstream's order, or the matching error.

    A code 0 answer whose ``data`` cannot be read raises ``UnreadableAnswer`` with the whole
    body. ``today`` bounds publishing days from above only (a note can be years old). The body
    must already be redacted.
    """
    text = body_text(body)
    envelope = read_envelope(text, http_status=http_status, latency_ms=latency_ms)
    try:
        notes = _page(envelope.get("data"), envelope.get("recordTime"), page, today)
    except BadData as exc:
        raise UnreadableAnswer(
            f"unreadable note list: {exc}",
            source=SOURCE,
            code=0,
            raw_body=text,
            http_status=http_status,
            latency_ms=latency_ms,
        ) from None
    return Answer(notes, http_status=http_status, latency_ms=latency_ms, raw_body=text)


def _page(data: object, record_time: object, page: int, today: date | None) -> NotePage:
    if not isinstance(data, dict):
        raise BadData(f"data is {type(data).__name__}, expected an object")
    if "list" not in data:
        raise BadData("data has no list")  # another endpoint's shape, or a new one
    raw_list = data["list"]
    if raw_list is None:
        raw_list = []  # a creator who is not on Pugongying
    if not isinstance(raw_list, list):
        raise BadData(f"list is {type(raw_list).__name__}, expected a list")
    total = read_number(data.get("total"), "total")
    bounds = (OLDEST_DATE, date_bounds(today)[1])
    seen: set[str] = set()
    notes: list[ListedNote] = []
    for index, raw in enumerate(raw_list):
        listed = _note(raw, f"list[{index}]", bounds)
        if listed.note.note_id not in seen:  # a repeat (the list moved between pages): once
            seen.add(listed.note.note_id)
            notes.append(listed)
    return NotePage(
        page=page,
        notes=tuple(notes),
        total=None if total is None else _whole(total, "total"),
        record_time=parse_record_time(record_time),
    )


def _note(raw: object, where: str, bounds: tuple[date, date]) -> ListedNote:
    if not isinstance(raw, dict):
        raise BadData(f"{where} is {type(raw).__name__}, expected an object")
    note_id = raw.get("noteId")
    if not isinstance(note_id, str) or not _NOTE_ID_RE.match(note_id):
        # the id goes into links and keys: anything but 24 hex is a shape we do not know
        raise BadData(f"{where}.noteId is {note_id!r:.40}, expected 24 hex digits")
    note = Note(
        note_id=note_id.lower(),
        title=_text(raw.get("title"), f"{where}.title", MAX_TITLE) or "",
        published=read_day(raw.get("date"), f"{where}.date", bounds),
        video=_flag(raw.get("isVideo"), f"{where}.isVideo"),
        ad=_flag(raw.get("isAdvertise"), f"{where}.isAdvertise"),
        brand=_text(raw.get("brandName"), f"{where}.brandName", MAX_BRAND) or None,
    )
    stats = NoteStats(
        reads=_count(raw.get("readNum"), f"{where}.readNum"),
        likes=_count(raw.get("likeNum"), f"{where}.likeNum"),
        collects=_count(raw.get("collectNum"), f"{where}.collectNum"),
    )
    return ListedNote(note, stats)


def _text(value: object, where: str, limit: int) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadData(f"{where} is {type(value).__name__}, expected text")
    # one line: a title reaches log lines, messages and CSV cells; a lone surrogate (a JSON
    # escape like "\ud800" that is half a character) cannot be stored or sent: it becomes "?"
    text = value.encode("utf-8", "replace").decode("utf-8")
    return " ".join(text.split())[:limit]


def _flag(value: object, where: str) -> bool:
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise BadData(f"{where} is {value!r:.40}, expected true or false")


def _count(value: object, where: str) -> int | None:
    number = read_number(value, where)
    return None if number is None else _whole(number, where)


def _whole(number: float | int, where: str) -> int:
    if number != int(number):
        raise BadData(f"{where} is {number}, expected a whole count")
    return int(number)
