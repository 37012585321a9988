"""Outbox groups: the messages of one group (``notifications.group_key``) on one channel are
claimed and held together, so a wave of alerts goes out as one message (its one delivery is
recorded by ``OutboxStore.mark_group_sent``, as a lone message's is).

Decides nothing about when a group is ready (that is the notifier's group_wait / group_interval).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select, update

from monitor.store.engine import StoreBase
from monitor.store.outbox import PENDING, SENT, QueuedMessage, queued_message
from monitor.store.schema import notifications

_UNCLAIMED: dict[str, Any] = {"claimed_by": None, "claimed_until": None}


class GroupStore(StoreBase):
    """Group-wide outbox operations; every method is one short transaction."""

    async def group_last_sent(self, channel: str, group_key: str) -> datetime | None:
        """When a message of this group last went out on ``channel`` (None: never)."""
        n = notifications
        query = select(func.max(n.c.sent_at)).where(
            n.c.channel == channel, n.c.group_key == group_key, n.c.status == SENT
        )
        async with self._read() as conn:
            found: datetime | None = await conn.scalar(query)
        return found

    async def hold_group(self, channel: str, group_key: str, *, until: datetime) -> int:
        """Every pending message of the group waits until ``until`` (claims released)."""
        n = notifications
        async with self._write() as conn:
            held = await conn.execute(
                update(n)
                .where(n.c.channel == channel, n.c.group_key == group_key, n.c.status == PENDING)
                .where(or_(n.c.not_before.is_(None), n.c.not_before < until))
                .values(not_before=until, **_UNCLAIMED)
            )
        return int(held.rowcount)

    async def group_has_critical(self, channel: str, group_key: str) -> bool:
        """Whether a pending message of the group on ``channel`` is critical."""
        n = notifications
        query = (
            select(n.c.id)
            .where(
                n.c.channel == channel,
                n.c.group_key == group_key,
                n.c.status == PENDING,
                n.c.severity == "critical",
            )
            .limit(1)
        )
        async with self._read() as conn:
            found = await conn.scalar(query)
        return found is not None

    async def claim_group(
        self,
        now: datetime,
        *,
        channel: str,
        group_key: str,
        owner: str,
        lease: timedelta,
        limit: int = 1000,
        held_too: bool = False,
    ) -> list[QueuedMessage]:
        """Claim every due, unclaimed message of the group on ``channel`` (oldest first);
        ``held_too``: members held (``not_before``) are due as well."""
        n = notifications
        due = and_(
            n.c.channel == channel,
            n.c.group_key == group_key,
            n.c.status == PENDING,
            n.c.next_attempt_at <= now,
            or_(n.c.claimed_until.is_(None), n.c.claimed_until <= now),
        )
        if not held_too:
            due = and_(due, or_(n.c.not_before.is_(None), n.c.not_before <= now))
        pick = select(n.c.id).where(due).order_by(n.c.id).limit(limit)
        async with self._write() as conn:
            ids = [
                int(i)
                for i in (await conn.execute(pick.with_for_update(skip_locked=True))).scalars()
            ]
            if not ids:
                return []
            claimed = await conn.execute(
                update(n)
                .where(n.c.id.in_(ids), due)
                .values(claimed_by=owner, claimed_until=now + lease)
                .returning(n.c.id)
            )
            mine = sorted(int(i) for i in claimed.scalars())
            return [await queued_message(conn, i) for i in mine]
