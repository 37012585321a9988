"""PURE: what the daily digest says about the sources beyond core_data: the week's largest
follower moves (with a sparkline of their days) and the notes first seen this week, as the
variables ``digest.*`` templates see (``followers``, ``new_notes``). A note's title and brand are
untrusted: they reach the Markdown body as one escaped line. Must not send anything or touch the
database.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from monitor.display import format_pct, format_value, local_time, one_line, sparkline
from monitor.model import Creator


@dataclass(frozen=True, slots=True)
class FollowerMove:
    """A creator's follower counts over the digest's week, oldest first."""

    creator: Creator
    counts: tuple[int, ...]

    @property
    def change_pct(self) -> float | None:
        first, last = self.counts[0], self.counts[-1]
        return None if first == 0 else (last - first) / first * 100


@dataclass(frozen=True, slots=True)
class NewNote:
    """A note first seen this week, with its reads when last seen."""

    creator: Creator
    note_id: str
    title: str
    published: date
    video: bool
    cooperation: bool
    brand: str | None
    reads: int | None
    first_seen_at: datetime
    url: str


#: what Markdown reads as markup inside a line (``plaintext`` turns each escape back into text)
_MARKDOWN = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>])")


def markdown_text(text: str) -> str:
    """Untrusted text (a note's title) as one line of Markdown that reads as written: no
    line break to start a heading, no link, emphasis or HTML of its own."""
    return _MARKDOWN.sub(r"\\\1", one_line(text))


def top_follower_moves(moves: Iterable[FollowerMove]) -> list[FollowerMove]:
    """The moves that moved, largest relative change first."""
    moved = [m for m in moves if m.change_pct is not None and m.counts[0] != m.counts[-1]]
    return sorted(moved, key=lambda m: -abs(m.change_pct or 0.0))


def _creator(creator: Creator) -> dict[str, str]:
    return {
        "name": creator.name or creator.user_id,
        "user_id": creator.user_id,
        "url": creator.pgy_url,
    }


def follower_move_variables(move: FollowerMove) -> dict[str, Any]:
    first, last = move.counts[0], move.counts[-1]
    return {
        **_creator(move.creator),
        "old_text": format_value(None, first),
        "new_text": format_value(None, last),
        "change_text": "0" if last == first else f"{last - first:+,}",
        "change_pct_text": format_pct(move.change_pct),
        "spark": sparkline([float(c) for c in move.counts], len(move.counts)),
    }


#: how the type of a cooperation note goes on (the word the new_note messages use)
_AD = {"en": " · ad", "zh": "·广告"}


def new_note_variables(note: NewNote, zone: ZoneInfo, language: str) -> dict[str, Any]:
    kind = "视频" if note.video else "图文"
    if language != "zh":
        kind = "video" if note.video else "photo"
    return {
        **_creator(note.creator),
        "title": markdown_text(note.title) or note.note_id,
        "note_url": note.url,
        "published": note.published.isoformat(),
        "video": note.video,
        "type_text": kind + (_AD.get(language, _AD["en"]) if note.cooperation else ""),
        "brand": None if note.brand is None else markdown_text(note.brand),
        "reads_text": format_value(None, note.reads),
        "first_seen_at": local_time(note.first_seen_at, zone),
    }
