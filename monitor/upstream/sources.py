"""The endpoints the monitor reads, by source name: each one's path and the parser of its bodies.

What a kept body needs to be read again (``reparse``): the source and the query stored with it.
Knows no budget, schedule or table; the calls themselves are monitor/upstream/client.py's.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Any

from monitor.upstream.balance import BALANCE_PATH, parse_balance
from monitor.upstream.client import CORE_DATA_PATH
from monitor.upstream.fans import FANS_PATH, parse_fans
from monitor.upstream.notes import NOTES_PATH, parse_notes
from monitor.upstream.parse import BodyParser, parse_core_data

#: source name -> the path it calls (``core`` is today's core_data)
SOURCE_PATHS: Mapping[str, str] = {
    "core": CORE_DATA_PATH,
    "fans": FANS_PATH,
    "notes": NOTES_PATH,
    "balance": BALANCE_PATH,
}


def body_parser(source: str, params: Mapping[str, str] | None = None) -> BodyParser[Any]:
    """The parser of ``source``'s bodies, for a call asked with ``params`` (the query without
    the token, as ``UnreadableAnswer.params`` holds it); ValueError for an unknown source."""
    if source == "core":
        return parse_core_data
    if source == "fans":
        return parse_fans
    if source == "notes":
        page = (params or {}).get("pageNumber", "1")
        return partial(parse_notes, page=int(page) if page.isdigit() else 1)
    if source == "balance":
        return parse_balance
    raise ValueError(f"unknown source {source!r}; known: {', '.join(SOURCE_PATHS)}")
