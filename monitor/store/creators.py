"""The ``creators`` table: the config's creator list mirrored into SQL, history kept for leavers.

Only identities and tags live here; metrics and schedules are other modules' business.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
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
#: what it needs once it has written: the ids, and who is active
_IDS = select(creators.c.user_id, creators.c.id, creators.c.active)


class CreatorStore(StoreBase):
    """Keeps ``creators`` in step with the config."""

    async def sync_creators(self, tracked: Sequence[Creator]) -> dict[str, int]:
        """Insert or update ``tracked`` as active, mark every other creator inactive.

        Returns user_id -> creators.id for the tracked ones. A creator that leaves the config
        keeps its id and history, and gets them back when it returns. A restart with an
        unchanged list is one SELECT and writes nothing; the statement count grows with the
        number of creators only by chunks: one executemany per ``MANY_ROWS`` new or changed
        creators, one UPDATE per 500 leavers.
        """
        now = self._clock()
        async with self._write() as conn:
            known = await _known(conn, _KNOWN)
            changed = [
                c
                for c in tracked
                if (row := known.get(c.user_id)) is None
                or not row[2]
                or row[3] != c.name
                or row[4] != (_tags_json(c.tags) if c.tags else "[]")
            ]
            if changed:
                await self._upsert_active(conn, changed, now)
                known = await _known(conn, _IDS)
            ids = {c.user_id: known[c.user_id][1] for c in tracked}
            # every tracked creator is active now: more active rows means some left the config
            if sum(1 for row in known.values() if row[2]) > len(ids):
                leavers = [row[1] for u, row in known.items() if row[2] and u not in ids]
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


async def _known(conn: AsyncConnection, query: Select[Any]) -> dict[str, Sequence[Any]]:
    """user_id -> the row ``query`` reads (user_id, id, active, …) of every creator ever tracked."""
    return {row[0]: row for row in plain_rows(await conn.execute(query))}


def _tags_json(tags: Sequence[str]) -> str:
    """The text ``schema.JSONText`` stores for a tag list."""
    if not tags:
        return "[]"  # most creators: skip json.dumps
    return json.dumps(list(tags), ensure_ascii=False, separators=(",", ":"), sort_keys=True)
