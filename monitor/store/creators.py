"""The ``creators`` table: the config's creator list mirrored into SQL, history kept for leavers.

Only identities and tags live here; metrics and schedules are other modules' business.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Text, select, type_coerce, update
from sqlalchemy.ext.asyncio import AsyncConnection

from monitor.model import Creator
from monitor.schema import creators
from monitor.store.engine import StoreBase

#: rows per ``UPDATE … WHERE id IN (…)``: under SQLite's bound-parameter limit
_CHUNK = 500


class CreatorStore(StoreBase):
    """Keeps ``creators`` in step with the config."""

    async def sync_creators(self, tracked: Sequence[Creator]) -> dict[str, int]:
        """Insert or update ``tracked`` as active, mark every other creator inactive.

        Returns user_id -> creators.id for the tracked ones. A creator that leaves the config
        keeps its id and history, and gets them back when it returns. A restart with an
        unchanged list is one SELECT and writes nothing; the statement count never grows with
        the number of creators (only with the number of 500-row chunks of leavers).
        """
        now = self._clock()
        wanted = {c.user_id: c for c in tracked}
        async with self._write() as conn:
            known = await _known(conn)
            changed = [c for u, c in wanted.items() if not _same(known.get(u), c)]
            if changed:
                await self._upsert_active(conn, changed, now)
                known = await _known(conn)
            leavers = [int(r.id) for u, r in known.items() if r.active and u not in wanted]
            for start in range(0, len(leavers), _CHUNK):
                await conn.execute(
                    update(creators)
                    .where(creators.c.id.in_(leavers[start : start + _CHUNK]))
                    .values(active=False, updated_at=now)
                )
        return {u: int(known[u].id) for u in wanted}

    async def _upsert_active(
        self, conn: AsyncConnection, changed: Sequence[Creator], now: datetime
    ) -> None:
        stmt = self._upsert(creators)
        await conn.execute(
            stmt.on_conflict_do_update(
                index_elements=[creators.c.user_id],
                set_={
                    "name": stmt.excluded.name,
                    "tags": stmt.excluded.tags,
                    "active": True,
                    "updated_at": stmt.excluded.updated_at,
                },
            ),
            [
                {
                    "user_id": c.user_id,
                    "name": c.name,
                    "tags": list(c.tags),
                    "active": True,
                    "created_at": now,
                    "updated_at": now,
                }
                for c in changed
            ],
        )

    async def find_creator(self, user_id: str) -> int | None:
        """The creators.id of ``user_id``, active or not; None if never tracked."""
        async with self._read() as conn:
            found = await conn.scalar(select(creators.c.id).where(creators.c.user_id == user_id))
            return None if found is None else int(found)


async def _known(conn: AsyncConnection) -> dict[str, Any]:
    # tags as the stored JSON text: comparing text skips 100,000 json.loads on every start
    query = select(
        creators.c.id,
        creators.c.user_id,
        creators.c.name,
        type_coerce(creators.c.tags, Text).label("tags_json"),
        creators.c.active,
    )
    return {r.user_id: r for r in await conn.execute(query)}


def _tags_json(tags: Sequence[str]) -> str:
    """The text ``schema.JSONText`` stores for a tag list."""
    if not tags:
        return "[]"  # most creators: skip json.dumps
    return json.dumps(list(tags), ensure_ascii=False, separators=(",", ":"), sort_keys=True)


def _same(row: Any, creator: Creator) -> bool:
    # text spelt differently from ours (written by hand) only costs one harmless re-write
    return (
        row is not None
        and bool(row.active)
        and row.name == creator.name
        and row.tags_json == _tags_json(creator.tags)
    )
