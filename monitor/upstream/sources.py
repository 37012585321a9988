"""The endpoints the monitor reads, by source name: each one's path and the parser of its bodies.

What a kept body needs to be read again (``reparse``): the source and the query stored with it.
``read_source`` makes the one call of a series, whatever its source. Knows no budget, schedule
or table; the calls themselves are monitor/upstream/client.py's.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Any

from monitor.model import FANS, NOTES, Answer, FetchResult, FollowerHistory, NotePage, Variant
from monitor.upstream.balance import BALANCE_PATH, parse_balance
from monitor.upstream.client import CORE_DATA_PATH, JustOneClient
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


#: one successful call of a creator's series: core_data's answer, or a source's
Reading = FetchResult | Answer[FollowerHistory] | Answer[NotePage]


async def read_source(
    client: JustOneClient, user_id: str, variant: Variant, page: int = 1
) -> Reading:
    """One call of the series ``variant`` names for ``user_id`` (``page``: the note list's
    page); every failure is an ``UpstreamError``, a billed answer this version cannot read an
    ``UnreadableAnswer``."""
    if variant.source == FANS:
        return await client.fans_history(user_id, variant.date_type)
    if variant.source == NOTES:
        return await client.notes_page(user_id, page)
    return await client.core_data(user_id, variant)
