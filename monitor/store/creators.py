"""The ``creators`` table: the config's creator list mirrored into SQL, history kept for leavers.

Only identities and tags live here; metrics and schedules are other modules' business.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import bindparam, select, update

from monitor.model import Creator
from monitor.schema import creators
from monitor.store.engine import StoreBase


class CreatorStore(StoreBase):
    """Keeps ``creators`` in step with the config."""

    async def sync_creators(self, tracked: Sequence[Creator]) -> dict[str, int]:
        """Insert or update ``tracked`` as active, mark every other creator inactive.

        Returns user_id -> creators.id for the tracked ones. A creator that leaves the config
        keeps its id and history, and gets them back when it returns.
        """
        now = self._clock()
        wanted = {c.user_id: c for c in tracked}
        async with self._write() as conn:
            known = {
                r.user_id: r
                for r in await conn.execute(
                    select(creators.c.user_id, creators.c.name, creators.c.tags, creators.c.active)
                )
            }
            # a restart with an unchanged list writes nothing (100,000 creators start fast)
            wanted_changed = {u: c for u, c in wanted.items() if not _same(known.get(u), c)}
            if wanted_changed:
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
                        for c in wanted_changed.values()
                    ],
                )
            result = await conn.execute(
                select(creators.c.id, creators.c.user_id, creators.c.active)
            )
            rows = result.all()
            leavers = [{"leaver": r.id} for r in rows if r.active and r.user_id not in wanted]
            if leavers:
                await conn.execute(
                    update(creators)
                    .where(creators.c.id == bindparam("leaver"))
                    .values(active=False, updated_at=now),
                    leavers,
                )
        return {r.user_id: int(r.id) for r in rows if r.user_id in wanted}

    async def find_creator(self, user_id: str) -> int | None:
        """The creators.id of ``user_id``, active or not; None if never tracked."""
        async with self._read() as conn:
            found = await conn.scalar(select(creators.c.id).where(creators.c.user_id == user_id))
            return None if found is None else int(found)


def _same(row: Any, creator: Creator) -> bool:
    return (
        row is not None
        and bool(row.active)
        and row.name == creator.name
        and list(row.tags or ()) == list(creator.tags)
    )
