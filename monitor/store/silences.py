"""The ``silences`` table: operator silences, and handing back what one held when it is removed."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, insert, select, update

from monitor.store.engine import StoreBase
from monitor.store.outbox import PENDING
from monitor.store.schema import notifications, silences


@dataclass(frozen=True, slots=True)
class SilenceRow:
    id: int
    user_id: str | None  # a creator's user_id, or 'account'
    rule: str | None
    tag: str | None
    starts_at: datetime
    ends_at: datetime
    reason: str
    created_at: datetime


def _silence_row(row: Any) -> SilenceRow:
    return SilenceRow(
        id=int(row.id),
        user_id=row.user_id,
        rule=row.rule,
        tag=row.tag,
        starts_at=row.starts_at,
        ends_at=row.ends_at,
        reason=row.reason,
        created_at=row.created_at,
    )


class SilenceStore(StoreBase):
    """Silences; every method is one short transaction."""

    async def add_silence(
        self,
        *,
        now: datetime,
        ends_at: datetime,
        starts_at: datetime | None = None,
        user_id: str | None = None,
        rule: str | None = None,
        tag: str | None = None,
        reason: str = "",
    ) -> int:
        """A silence from ``starts_at`` (default now) until ``ends_at``; returns its id."""
        if ends_at <= (starts_at or now):
            raise ValueError("a silence must end after it starts")
        async with self._write() as conn:
            row = await conn.execute(
                insert(silences)
                .values(
                    user_id=user_id,
                    rule=rule,
                    tag=tag,
                    starts_at=starts_at or now,
                    ends_at=ends_at,
                    reason=reason,
                    created_at=now,
                )
                .returning(silences.c.id)
            )
            return int(row.scalar_one())

    async def list_silences(self, now: datetime, *, expired: bool = False) -> list[SilenceRow]:
        """Silences not yet over (``expired=True``: all of them), soonest end first."""
        query = select(silences).order_by(silences.c.ends_at, silences.c.id)
        if not expired:
            query = query.where(silences.c.ends_at > now)
        async with self._read() as conn:
            return [_silence_row(r) for r in (await conn.execute(query)).all()]

    async def active_silences(self, now: datetime) -> list[SilenceRow]:
        """Silences in force at ``now``."""
        return [s for s in await self.list_silences(now) if s.starts_at <= now]

    async def remove_silence(self, silence_id: int) -> bool:
        """``unsilence ID``; False when there was no such silence.

        Messages it may have been holding are handed back to the delivery gate at the next
        drain (their ``not_before`` is cleared); the gate holds again what still must wait.
        """
        async with self._write() as conn:
            ends_at = await conn.scalar(
                delete(silences).where(silences.c.id == silence_id).returning(silences.c.ends_at)
            )
            if ends_at is None:
                return False
            n = notifications
            await conn.execute(
                update(n)
                .where(n.c.status == PENDING, n.c.not_before <= ends_at)
                .values(not_before=None)
            )
        return True
