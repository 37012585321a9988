"""What the surfaces read of the followers and notes beyond what the rules read: the export
streams (``export --source``, the report's follower charts, the digest's week), the week of
follower counts the console's overview shows and orders by, and creators' names for a list of
notes. Reads only; the writes and the rules' reads are sources.py's.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, func, literal, select
from sqlalchemy.ext.asyncio import AsyncConnection

from monitor.store.engine import StoreBase
from monitor.store.schema import creators, follower_counts, note_observations, notes

#: ids per ``IN (…)``: under SQLite's bound-parameter limit
_CHUNK = 500
#: days before the newest follower day that the overview's follower change compares with
FOLLOWER_CHANGE_DAYS = 7


@dataclass(frozen=True, slots=True)
class FollowerChange:
    """A creator's followers over the week up to the newest follower day of the store: the
    first and the last count inside it (the same when only one is)."""

    first_day: date
    first: int
    last_day: date
    last: int

    @property
    def change(self) -> int:
        return self.last - self.first

    @property
    def change_pct(self) -> float | None:
        """The relative change (0.25 = +25 %); None from zero followers."""
        return None if self.first == 0 else self.change / self.first


class SourceReadStore(StoreBase):
    """Reads ``follower_counts``, ``notes`` and ``note_observations`` for the surfaces."""

    async def creator_names(self, creator_ids: Sequence[int]) -> dict[int, tuple[str, str]]:
        """creator id -> (user id, name), for the ids given that are stored."""
        found: dict[int, tuple[str, str]] = {}
        ids = sorted(set(creator_ids))
        async with self._read() as conn:
            for start in range(0, len(ids), _CHUNK):
                query = select(creators.c.id, creators.c.user_id, creators.c.name).where(
                    creators.c.id.in_(ids[start : start + _CHUNK])
                )
                for cid, user_id, name in (await conn.execute(query)).all():
                    found[int(cid)] = (str(user_id), str(name or ""))
        return found

    async def follower_changes(self, creator_ids: Sequence[int]) -> dict[int, FollowerChange]:
        """Each given creator's follower change over the ``FOLLOWER_CHANGE_DAYS`` up to the
        store's newest follower day (the window the overview sorts by); absent: no count in it."""
        async with self._read() as conn:
            return await follower_window(conn, creator_ids)

    async def export_followers(
        self, since: date | None = None
    ) -> AsyncGenerator[dict[str, Any], None]:
        """Every creator's daily follower counts as flat rows (user_id, name, date_key, fans,
        change: against the day before, None when that day is not stored), by creator and
        day, streamed with constant memory. Holds a read transaction until exhausted or closed
        (``aclose()``), so consume it promptly."""
        fc = follower_counts.c
        query = (
            select(creators.c.user_id, creators.c.name, fc.creator_id, fc.date_key, fc.fans)
            .join(creators, creators.c.id == fc.creator_id)
            .order_by(fc.creator_id, fc.date_key)
            .execution_options(yield_per=1000)
        )
        first = None if since is None else since.isoformat()
        if since is not None:  # the day before: the first day's change
            query = query.where(fc.date_key >= (since - timedelta(days=1)).isoformat())
        previous: tuple[int, date, int] | None = None
        async with self._read() as conn:
            result = await conn.stream(query)
            async for user_id, name, cid, key, fans in result:
                day = date.fromisoformat(key)
                change = None
                if previous is not None and previous[0] == cid and previous[1] == day - _DAY:
                    change = fans - previous[2]
                previous = (cid, day, fans)
                if first is not None and key < first:
                    continue
                yield {
                    "user_id": user_id,
                    "name": name,
                    "date_key": key,
                    "fans": fans,
                    "change": change,
                }

    async def export_note_observations(
        self, since: datetime | None = None
    ) -> AsyncGenerator[dict[str, Any], None]:
        """Every observation of every note (seen at or after ``since``) as flat rows: the
        creator, the note (id, title, published, video, ad, brand, first_seen_at) and its
        totals when seen; by creator, note and time, streamed like ``export_followers``."""
        n, o = notes.c, note_observations.c
        query = (
            select(
                creators.c.user_id,
                creators.c.name,
                n.id.label("note_id"),
                n.title,
                n.published,
                n.video,
                n.ad,
                n.brand,
                n.first_seen_at,
                o.seen_at,
                o.reads,
                o.likes,
                o.collects,
            )
            .join(notes, n.id == o.note_id)
            .join(creators, creators.c.id == n.creator_id)
            .order_by(n.creator_id, n.published, n.id, o.seen_at)
            .execution_options(yield_per=1000)
        )
        if since is not None:
            query = query.where(o.seen_at >= since)
        async with self._read() as conn:
            result = await conn.stream(query)
            async for row in result:
                out = dict(row._mapping)
                out["video"], out["ad"] = bool(out["video"]), bool(out["ad"])
                yield out


_DAY = timedelta(days=1)


async def follower_anchor(conn: AsyncConnection) -> str | None:
    """The newest day any follower count is stored for (the follower change's window ends
    there for every creator, as the metric change's does at the newest data day)."""
    found: str | None = await conn.scalar(select(func.max(follower_counts.c.date_key)))
    return found


async def follower_window(
    conn: AsyncConnection, creator_ids: Sequence[int]
) -> dict[int, FollowerChange]:
    """``SourceStore.follower_changes`` inside a read the caller holds."""
    fc = follower_counts.c
    found: dict[int, FollowerChange] = {}
    ids = sorted(set(creator_ids))
    anchor = await follower_anchor(conn) if ids else None
    if anchor is None:
        return found
    cutoff = _week_before(anchor)
    for start in range(0, len(ids), _CHUNK):
        query = (
            select(fc.creator_id, fc.date_key, fc.fans)
            .where(fc.creator_id.in_(ids[start : start + _CHUNK]), fc.date_key >= cutoff)
            .order_by(fc.creator_id, fc.date_key)
        )
        window: dict[int, list[tuple[str, int]]] = {}
        for cid, day, fans in (await conn.execute(query)).all():
            window.setdefault(int(cid), []).append((str(day), int(fans)))
        for cid, days in window.items():
            (d0, f0), (d1, f1) = days[0], days[-1]
            found[cid] = FollowerChange(date.fromisoformat(d0), f0, date.fromisoformat(d1), f1)
    return found


def _week_before(anchor: str) -> str:
    return (date.fromisoformat(anchor) - timedelta(days=FOLLOWER_CHANGE_DAYS)).isoformat()


def follower_change_ratio(
    creator_id: ColumnElement[Any], anchor: str, outer: Any
) -> ColumnElement[Any]:
    """last / first follower count of ``creator_id`` (a column of the ``outer`` table the
    query orders) inside the week up to ``anchor``: orders as the change does (counts are
    never negative); two index seeks per creator."""
    fc = follower_counts.c
    in_window = and_(fc.creator_id == creator_id, fc.date_key >= _week_before(anchor))

    def edge(newest: bool) -> Any:
        order = fc.date_key.desc() if newest else fc.date_key.asc()
        query = select(fc.fans).where(in_window).order_by(order).limit(1)
        return query.correlate(outer).scalar_subquery()

    ratio: ColumnElement[Any] = edge(True) * literal(1.0) / func.nullif(edge(False), 0)
    return ratio
