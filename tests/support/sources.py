"""Followers and notes put in a store as a fetch of the ``fans`` and ``notes`` sources stores
them: the simulator's own answers (the pure functions its HTTP endpoints serve), read by the real
parsers, written with ``SourceStore.store_followers`` and ``store_notes``.

For the surfaces' tests (CLI, console API, report, digest, docs, cookbook) until the daemon
fetches these sources itself. A first note-list visit is the baseline; a later one adds the notes
published in between (new, so ``new_notes`` has them) and newer totals of the baseline's.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from monitor.model import DateType
from monitor.store import Store
from monitor.upstream.fans import parse_fans
from monitor.upstream.notes import parse_notes
from monitor.upstream.sim_sources import (
    FansQuery,
    NotesQuery,
    SimNote,
    fans_data,
    note_id,
    notes_data,
)

SHANGHAI = ZoneInfo("Asia/Shanghai")
#: the note-list visits a seeded creator had, as times before ``now``: the baseline, then now
VISITS = (timedelta(days=6), timedelta(0))


def _body(data: dict[str, Any], now: datetime) -> str:
    record = now.astimezone(SHANGHAI).replace(tzinfo=None).isoformat()
    return json.dumps({"code": 0, "message": None, "data": data, "recordTime": record})


def hostile_note(now: datetime, title: str) -> SimNote:
    """A note published two days before ``now`` whose title is ``title`` (markup, a bidi
    override, a formula): the surfaces must show it as text."""
    published = now - timedelta(days=2)
    return SimNote(
        note_id=note_id(published, "hostile", title),
        title=title,
        published=published,
        video=False,
        ad=True,
        brand="<b>Brand</b>",
        peak_reads=5000,
        tau_hours=24,
        like_rate=0.1,
        collect_rate=0.5,
    )


async def store_sources(
    store: Store,
    user_ids: Sequence[str],
    now: datetime,
    *,
    visits: Sequence[timedelta] = VISITS,
    extra: Mapping[str, Sequence[SimNote]] | None = None,
) -> None:
    """Each creator's 30 days of followers up to the day before ``now`` (Asia/Shanghai) and its
    first note-list page at each of ``visits`` before ``now`` (``extra``: notes the simulator
    adds to a creator's list, by user id). The creators must be stored already."""
    today = now.astimezone(SHANGHAI).date()
    for user_id in user_ids:
        creator_id = await store.find_creator(user_id)
        assert creator_id is not None, f"{user_id} is not stored"
        fans = fans_data(user_id, FansQuery(DateType.DAY_30, "FANS_TOTAL"), today)
        history = parse_fans(_body(fans, now), today=today).data
        await store.store_followers(creator_id, history.points)
        for back in visits:
            seen = now - back
            ask = NotesQuery("LATEST", "ALL", "ALL", "NO", 1)
            data = notes_data(user_id, ask, seen, (extra or {}).get(user_id, ()))
            page = parse_notes(_body(data, seen), page=1, today=today).data
            await store.store_notes(creator_id, page.notes, seen.astimezone(UTC))
