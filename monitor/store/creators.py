"""The ``creators`` table: the config's creator list mirrored into SQL, history kept for leavers.

Only identities and tags live here; metrics and schedules are other modules' business.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Select, bindparam, select, true, update
from sqlalchemy.ext.asyncio import AsyncConnection

from monitor.model import Creator
from monitor.store.engine import StoreBase, execute_many, plain_rows, to_db
from monitor.store.schema import creators

#: rows per ``UPDATE … WHERE id IN (…)``: under SQLite's bound-parameter limit
_CHUNK = 500

#: what ``sync_creators`` compares, as stored: ``active`` as the driver gives it (0/1 on
#: SQLite), tags as their JSON text (comparing text skips 100,000 ``json.loads`` on every start)
_KNOWN = select(
    creators.c.user_id, creators.c.id, creators.c.active, creators.c.name, creators.c.tags
)
#: what ``sync_creators`` reads back for the ids of the creators it just stored: (user_id, id)
#: alone, in half the time of ``_KNOWN`` (100,000 new rows at a first start)
_IDS = select(creators.c.user_id, creators.c.id)
#: rows per read of ``_KNOWN`` or ``_IDS``
_PAGE = 10_000


class CreatorStore(StoreBase):
    """Keeps ``creators`` in step with the config."""

    async def sync_creators(self, tracked: Sequence[Creator]) -> dict[str, int]:
        """Insert or update ``tracked`` as active, mark every other creator inactive.

        Returns user_id -> creators.id for the tracked ones. A creator that leaves the config
        keeps its id and history, and gets them back when it returns. A restart with an
        unchanged list reads the stored creators ``_PAGE`` at a time and writes nothing; the
        statement count grows with the number of creators only by chunks: a SELECT per
        ``_PAGE`` stored creators, one executemany per ``MANY_ROWS`` new or changed creators
        (then the pages again, for the new ids), one UPDATE per 500 leavers.
        """
        now = self._clock()
        wanted = {c.user_id: c for c in tracked}
        async with self._write() as conn:
            ids, stale, leavers = await _compare(conn, wanted)
            changed = [c for c in tracked if c.user_id in stale or c.user_id not in ids]
            if changed:
                await self._upsert_active(conn, changed, now)
                await _page(conn, lambda row: _add_new(ids, wanted, row), _IDS)
            # every tracked creator is active now: the active ones not tracked left the config
            for start in range(0, len(leavers), _CHUNK):
                await conn.execute(
                    update(creators)
                    .where(creators.c.id.in_(leavers[start : start + _CHUNK]))
                    .values(active=False, updated_at=now)
                )
        return ids

    async def _upsert_active(
        self, conn: AsyncConnection, changed: Sequence[Creator], now: datetime
    ) -> None:
        stmt = self._upsert(creators).values(
            user_id=bindparam("user_id"),
            name=bindparam("name"),
            tags=bindparam("tags"),
            active=true(),
            created_at=bindparam("created_at"),
            updated_at=bindparam("updated_at"),
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=[creators.c.user_id],
            set_={
                "name": stmt.excluded.name,
                "tags": stmt.excluded.tags,
                "active": true(),
                "updated_at": stmt.excluded.updated_at,
            },
        )
        at = to_db(conn, creators.c.updated_at)(now)
        await execute_many(
            conn,
            stmt,
            ("user_id", "name", "tags", "created_at", "updated_at"),
            ((c.user_id, c.name, _tags_json(c.tags) if c.tags else "[]", at, at) for c in changed),
        )

    async def find_creator(self, user_id: str) -> int | None:
        """The creators.id of ``user_id``, active or not; None if never tracked."""
        async with self._read() as conn:
            found = await conn.scalar(select(creators.c.id).where(creators.c.user_id == user_id))
            return None if found is None else int(found)


async def _page(
    conn: AsyncConnection, take: Callable[[Sequence[Any]], None], read: Select[Any] = _KNOWN
) -> None:
    """Every creator ever tracked as ``read`` (``_KNOWN`` or ``_IDS``) reads it, ``_PAGE`` rows at
    a time in id order (100,000 stored rows never sit in memory at once beside the config's)."""
    after = 0
    while True:
        query = read.where(creators.c.id > after).order_by(creators.c.id).limit(_PAGE)
        rows = plain_rows(await conn.execute(query))
        for row in rows:
            take(row)
        if len(rows) < _PAGE:
            return
        after = int(rows[-1][1])
        del rows  # not kept while the next page is read


async def _compare(
    conn: AsyncConnection, wanted: Mapping[str, Creator]
) -> tuple[dict[str, int], set[str], list[int]]:
    """What is stored against what is tracked: the ids of tracked creators already stored
    (keyed by the config's own strings), the tracked ones stored inactive or with another
    name or tags, and the ids of the active ones no longer tracked."""
    ids: dict[str, int] = {}
    stale: set[str] = set()
    leavers: list[int] = []

    def take(row: Sequence[Any]) -> None:
        user_id, creator_id, active, name, tags = row
        entry = wanted.get(user_id)
        if entry is None:
            if active:
                leavers.append(creator_id)
            return
        ids[entry.user_id] = creator_id
        if not active or name != entry.name or tags != (_tags_json(entry.tags)):
            stale.add(entry.user_id)

    await _page(conn, take)
    return ids, stale, leavers


def _add_new(ids: dict[str, int], wanted: Mapping[str, Creator], row: Sequence[Any]) -> None:
    """The id of a tracked creator the upsert just stored."""
    entry = wanted.get(row[0])
    if entry is not None and entry.user_id not in ids:
        ids[entry.user_id] = row[1]


def _tags_json(tags: Sequence[str]) -> str:
    """The text ``schema.JSONText`` stores for a tag list."""
    if not tags:
        return "[]"  # most creators: skip json.dumps
    return json.dumps(list(tags), ensure_ascii=False, separators=(",", ":"), sort_keys=True)
