"""What several instances on one database share: heartbeats in ``instances`` and due schedule
slots claimed with leases (SKIP LOCKED). The shared budget is ``store.ledger``'s.

Stores and locks only; what a budget allows and when a slot is due are decided by the caller.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, func, or_, select, tuple_, update

from monitor.model import Variant
from monitor.store.engine import StoreBase
from monitor.store.schema import creators, instances, schedule
from monitor.store.variants import SERIES_COLUMNS, matches_variant, variant_of

_PK = ("creator_id", *SERIES_COLUMNS)
#: the ``instances.id`` column is 64 characters wide
ID_WIDTH = 64


@dataclass(frozen=True, slots=True)
class InstanceRow:
    """One instance as ``status`` shows it; ``leases`` counts the slots it holds now."""

    id: str
    host: str
    pid: int
    version: str
    started_at: datetime
    heartbeat_at: datetime
    leases: int


@dataclass(frozen=True, slots=True)
class Claim:
    """A due slot now leased to the caller, with the schedule facts other instances wrote."""

    creator_id: int
    variant: Variant
    next_due_at: datetime
    lease_until: datetime
    last_success_at: datetime | None
    consecutive_failures: int
    last_code: int | None


class ClusterStore(StoreBase):
    """Instances, the shared budget transaction and slot claims; each call is one transaction."""

    @property
    def shared(self) -> bool:
        """Several instances may use this database at once (PostgreSQL)."""
        return self.dialect == "postgresql"

    # --- instances

    async def heartbeat(
        self,
        instance_id: str,
        *,
        host: str,
        pid: int,
        version: str,
        started_at: datetime,
        now: datetime,
    ) -> None:
        """Insert or refresh this instance's row (``heartbeat_at = now``)."""
        values = {"host": host[:255], "pid": pid, "version": version[:32], "heartbeat_at": now}
        stmt = self._upsert(instances).values(
            id=instance_id[:ID_WIDTH], started_at=started_at, **values
        )
        async with self._write() as conn:
            await conn.execute(
                stmt.on_conflict_do_update(index_elements=[instances.c.id], set_=values)
            )

    async def list_instances(self, now: datetime) -> list[InstanceRow]:
        """Every known instance, newest heartbeat first, with the live leases it holds."""
        held = (
            select(schedule.c.lease_owner, func.count().label("leases"))
            .where(schedule.c.lease_owner.is_not(None), schedule.c.lease_until > now)
            .group_by(schedule.c.lease_owner)
            .subquery()
        )
        query = (
            select(instances, func.coalesce(held.c.leases, 0).label("leases"))
            .outerjoin(held, held.c.lease_owner == instances.c.id)
            .order_by(instances.c.heartbeat_at.desc(), instances.c.id)
        )
        async with self._read() as conn:
            rows = (await conn.execute(query)).all()
        return [
            InstanceRow(
                id=r.id,
                host=r.host,
                pid=int(r.pid),
                version=r.version,
                started_at=r.started_at,
                heartbeat_at=r.heartbeat_at,
                leases=int(r.leases),
            )
            for r in rows
        ]

    async def retire_instance(self, instance_id: str) -> int:
        """An orderly stop: give back every lease the instance holds and drop its row.

        Returns how many leases were released.
        """
        async with self._write() as conn:
            released = await conn.execute(
                update(schedule)
                .where(schedule.c.lease_owner == instance_id)
                .values(lease_owner=None, lease_until=None)
            )
            await conn.execute(delete(instances).where(instances.c.id == instance_id))
        return int(released.rowcount)

    async def prune_instances(self, silent_since: datetime) -> int:
        """Forget instances whose last heartbeat is older than ``silent_since``."""
        async with self._write() as conn:
            gone = await conn.execute(
                delete(instances).where(instances.c.heartbeat_at < silent_since)
            )
        return int(gone.rowcount)

    # --- claiming due slots

    async def claim_due(
        self, *, owner: str, now: datetime, until: datetime, due_before: datetime, limit: int
    ) -> list[Claim]:
        """Lease up to ``limit`` slots due at or before ``due_before`` to ``owner``, most
        overdue first: active creators, not broken, not leased (or the lease ran out).

        PostgreSQL takes the candidates ``FOR UPDATE SKIP LOCKED``, so instances claiming at
        once get disjoint slots without waiting on each other.
        """
        if limit <= 0:
            return []
        key = tuple_(*(schedule.c[name] for name in _PK))
        free = or_(schedule.c.lease_until.is_(None), schedule.c.lease_until <= now)
        candidates = (
            select(*(schedule.c[name] for name in _PK))
            .join(creators, creators.c.id == schedule.c.creator_id)
            .where(creators.c.active.is_(True), schedule.c.broken_at.is_(None))
            .where(schedule.c.next_due_at <= due_before, free)
            .order_by(schedule.c.next_due_at, *(schedule.c[name] for name in _PK))
            .limit(limit)
            .with_for_update(of=schedule, skip_locked=True)
        )
        async with self._write() as conn:
            picked = [tuple(r) for r in await conn.execute(candidates)]
            if not picked:
                return []
            await conn.execute(
                update(schedule).where(key.in_(picked)).values(lease_owner=owner, lease_until=until)
            )
            rows = await conn.execute(
                select(schedule)
                .where(key.in_(picked))
                .order_by(schedule.c.next_due_at, *(schedule.c[name] for name in _PK))
            )
            return [_claim(r) for r in rows]

    async def renew_leases(self, owner: str, *, now: datetime, until: datetime) -> int:
        """Extend every live lease ``owner`` holds to ``until``; returns how many.

        A lease that already ran out is not revived: another instance may have taken it.
        """
        async with self._write() as conn:
            renewed = await conn.execute(
                update(schedule)
                .where(schedule.c.lease_owner == owner, schedule.c.lease_until > now)
                .values(lease_until=until)
            )
        return int(renewed.rowcount)

    async def finish_lease(
        self,
        creator_id: int,
        variant: Variant,
        *,
        owner: str,
        broken_at: datetime | None = None,
        broken_reason: str | None = None,
    ) -> bool:
        """Release ``owner``'s lease, marking the slot broken in the same statement when
        ``broken_at`` is given; its due time is the one its fetch stored. False when ``owner``
        no longer held it (nothing written)."""
        values: dict[str, Any] = {"lease_owner": None, "lease_until": None}
        if broken_at is not None:
            values |= {"broken_at": broken_at, "broken_reason": broken_reason}
        async with self._write() as conn:
            done = await conn.execute(
                update(schedule)
                .where(
                    and_(
                        schedule.c.creator_id == creator_id,
                        matches_variant(schedule, variant),
                        schedule.c.lease_owner == owner,
                    )
                )
                .values(values)
            )
        return int(done.rowcount) == 1


def _claim(row: Any) -> Claim:
    return Claim(
        creator_id=int(row.creator_id),
        variant=variant_of(row),
        next_due_at=row.next_due_at,
        lease_until=row.lease_until,
        last_success_at=row.last_success_at,
        consecutive_failures=int(row.consecutive_failures),
        last_code=row.last_code,
    )
