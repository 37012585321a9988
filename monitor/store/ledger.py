"""The persisted budget: calls per quota day (``budget_days``) and the token bucket's row.

Atomic counters only; the budget arithmetic (refill, pauses, backoff) lives in ``monitor.budget``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from monitor.schema import budget_days, budget_state
from monitor.store.engine import StoreBase


@dataclass(frozen=True, slots=True)
class BudgetStateRow:
    """The token bucket and pause state as stored (one row per bucket name)."""

    tokens: float
    refilled_at: datetime
    paused_until: datetime | None = None
    pause_code: int | None = None
    pause_reason: str | None = None
    rate_factor: float = 1.0
    recent_sends: str | None = None  # the budget's own encoding of the last minute's sends
    name: str = "global"


class LedgerStore(StoreBase):
    """Daily call ledger and bucket state, shared by every instance on the database."""

    async def reserve_call(self, day: str, limit: int) -> bool:
        """Count one call on ``day`` if fewer than ``limit`` are counted; False when full.

        One UPSERT whose UPDATE runs only under the limit: concurrent callers (other tasks,
        other instances) can never together exceed it.
        """
        if limit <= 0:
            return False
        stmt = self._upsert(budget_days).values(day=day, calls=1, billed=0)
        stmt = stmt.on_conflict_do_update(
            index_elements=[budget_days.c.day],
            set_={"calls": budget_days.c.calls + 1},
            where=budget_days.c.calls < limit,
        )
        async with self._write() as conn:
            result = await conn.execute(stmt.returning(budget_days.c.calls))
            return result.first() is not None

    async def record_billed(self, day: str) -> None:
        """Count one billed call on ``day`` (the vendor charged for it)."""
        stmt = self._upsert(budget_days).values(day=day, calls=0, billed=1)
        stmt = stmt.on_conflict_do_update(
            index_elements=[budget_days.c.day], set_={"billed": budget_days.c.billed + 1}
        )
        async with self._write() as conn:
            await conn.execute(stmt)

    async def calls_on(self, day: str) -> int:
        """Calls reserved on ``day`` (0 for a day without any)."""
        return (await self.ledger_day(day))[0]

    async def ledger_day(self, day: str) -> tuple[int, int]:
        """(calls reserved, calls billed) on ``day``."""
        query = select(budget_days.c.calls, budget_days.c.billed).where(budget_days.c.day == day)
        async with self._read() as conn:
            row = (await conn.execute(query)).first()
        return (0, 0) if row is None else (int(row.calls), int(row.billed))

    async def load_budget_state(self, name: str = "global") -> BudgetStateRow | None:
        """The stored bucket state, or None before the first save."""
        query = select(budget_state).where(budget_state.c.name == name)
        async with self._read() as conn:
            row = (await conn.execute(query)).first()
        if row is None:
            return None
        return BudgetStateRow(
            name=row.name,
            tokens=float(row.tokens),
            refilled_at=row.refilled_at,
            paused_until=row.paused_until,
            pause_code=row.pause_code,
            pause_reason=row.pause_reason,
            rate_factor=float(row.rate_factor),
            recent_sends=row.recent_sends,
        )

    async def save_budget_state(self, state: BudgetStateRow) -> None:
        """Insert or replace the bucket state row ``state.name``."""
        values = {
            "tokens": state.tokens,
            "refilled_at": state.refilled_at,
            "paused_until": state.paused_until,
            "pause_code": state.pause_code,
            "pause_reason": state.pause_reason,
            "rate_factor": state.rate_factor,
            "recent_sends": state.recent_sends,
            "updated_at": self._clock(),
        }
        stmt = self._upsert(budget_state).values(name=state.name, **values)
        async with self._write() as conn:
            await conn.execute(
                stmt.on_conflict_do_update(index_elements=[budget_state.c.name], set_=values)
            )
