"""The persisted budget: the call ledger by quarter hour (``budget_calls``) and the bucket's row
(``budget_state``), read and written in ONE locked transaction on both backends.

The ledger's one writer is here: ``count_ledger`` adds calls and billed calls to the quarter
hours the gate's ``LedgerDay`` names (and ``BudgetTxn.release`` takes one back); nobody else
writes ``budget_calls`` or works out a quarter hour for it.

Atomic bookkeeping only; what a budget allows (refill, windows, pauses) is
``monitor.policy.budget``'s.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from sqlalchemy import ClauseElement, bindparam, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from monitor.store.engine import StoreBase, prepared, upsert, utc_binder, write_later
from monitor.store.schema import budget_calls, budget_state


@dataclass(frozen=True, slots=True)
class BudgetRow:
    """The token bucket and pause state as stored (one row per bucket name)."""

    tokens: float
    refilled_at: datetime
    paused_until: datetime | None = None
    pause_code: int | None = None
    pause_reason: str | None = None
    rate_factor: float = 1.0
    recent_sends: str | None = None  # the budget's own encoding of the last minute's sends
    paused_at: datetime | None = None
    pause_token: str | None = None
    name: str = "global"


@dataclass(frozen=True, slots=True)
class LedgerDay:
    """One local day of the budget: its label, its edges as UTC instants, and the quarter hour
    a call counted now falls in (``start <= slot < end``)."""

    label: str
    start: datetime
    end: datetime
    slot: datetime


class BudgetTxn:
    """The budget row and one day's ledger, locked until the ``budget_txn`` block ends.

    Every process that spends takes this lock first (SQLite ``BEGIN IMMEDIATE``, PostgreSQL
    ``SELECT … FOR UPDATE``), so a decision made on ``row`` and ``calls`` still holds when it
    is written.
    """

    def __init__(
        self, conn: AsyncConnection, name: str, day: LedgerDay, row: BudgetRow, calls: int
    ) -> None:
        self._conn = conn
        self._name = name
        self.day = day
        self.row = row
        self.calls = calls

    async def reserve(self) -> None:
        """Count one call in the day's current quarter hour (the caller checked the cap)."""
        await self._count(calls=1, billed=0)
        self.calls += 1

    async def release(self, day: LedgerDay) -> None:
        """Take back one call counted by ``reserve`` in ``day`` (it never reached a server)."""
        stmt = (
            update(budget_calls)
            .where(
                budget_calls.c.slot_at == day.slot,
                budget_calls.c.day == day.label,
                budget_calls.c.calls > 0,
            )
            .values(calls=budget_calls.c.calls - 1)
        )
        result = await self._conn.execute(stmt)
        if result.rowcount and day.label == self.day.label:
            self.calls -= 1

    async def record_billed(self) -> None:
        """Count one billed call in the day's current quarter hour."""
        await self._count(calls=0, billed=1)

    async def _count(self, *, calls: int, billed: int) -> None:
        day = self.day
        await count_ledger(self._conn, [(day.slot, day.label)], calls=calls, billed=billed)

    async def save(self, row: BudgetRow, *, now: datetime) -> None:
        """Replace the budget row (it exists: ``budget_txn`` made sure); on SQLite it goes to
        the database with the commit (``write_later``)."""
        conn = self._conn
        at = [utc_binder(conn, budget_state.c[name]) for name in _SAVE_TIMES]
        values = (
            self._name,
            row.tokens,
            at[0](row.refilled_at),
            at[1](row.paused_until),
            row.pause_code,
            row.pause_reason,
            row.rate_factor,
            row.recent_sends,
            at[2](row.paused_at),
            row.pause_token,
            at[3](now),
        )
        await write_later(conn, prepared(conn, "budget.save", _save, _SAVE_NAMES), [values])
        self.row = row


class BudgetStore(StoreBase):
    """The shared budget: one locked transaction per decision, plus reads for status."""

    @asynccontextmanager
    async def budget_txn(
        self, day: LedgerDay, initial: BudgetRow, *, now: datetime
    ) -> AsyncIterator[BudgetTxn]:
        """Lock the budget row ``initial.name`` (created from ``initial`` when missing) and
        sum ``day``'s ledger; everything done through the yielded ``BudgetTxn`` commits together.

        Keep the block free of waiting: every other spender queues on this lock.
        """
        name = initial.name
        wanted = {"name": name, "start": day.start, "end": day.end}
        # on SQLite the day's count comes with the row: the write lock is held from the first
        # statement on, so nobody counts a call in between
        together = self.dialect == "sqlite"
        locked = _LOCKED_WITH_CALLS if together else _LOCKED
        # SQLite: the write lock goes with the locking SELECT (one trip to its thread less)
        async with self._write(lock_with_first_statement=True) as conn:
            row = (await conn.execute(locked, wanted)).first()
            if row is None:  # the first spend on this database: seed the row, then lock it
                seed = self._upsert(budget_state).values(
                    name=name, **_state_values(initial), updated_at=now
                )
                await conn.execute(
                    seed.on_conflict_do_nothing(index_elements=[budget_state.c.name])
                )
                row = (await conn.execute(locked, wanted)).one()
            if together:
                calls = row.cm_calls
            else:
                # a statement of its own, after the lock: on PostgreSQL its snapshot then holds
                # every call counted by whoever had the lock before (a subquery of the locking
                # SELECT would see the ledger as it was before the wait)
                calls = await conn.scalar(_DAY_CALLS, wanted)
            yield BudgetTxn(conn, name, day, _state_row(row), int(calls or 0))

    async def ledger_day(self, day: LedgerDay) -> tuple[int, int]:
        """(calls counted, calls billed) within ``day``'s edges."""
        query = select(
            func.coalesce(func.sum(budget_calls.c.calls), 0),
            func.coalesce(func.sum(budget_calls.c.billed), 0),
        ).where(budget_calls.c.slot_at >= day.start, budget_calls.c.slot_at < day.end)
        async with self._read() as conn:
            row = (await conn.execute(query)).one()
        return int(row[0]), int(row[1])

    async def count_billed(self, day: LedgerDay) -> None:
        """Count one billed call without locking the budget row: for an answer that changes
        no budget state (the common success)."""
        async with self._write(lock_with_first_statement=True) as conn:
            await count_ledger(conn, [(day.slot, day.label)], billed=1)

    async def ledger_label(self, label: str) -> tuple[int, int]:
        """(calls, billed) counted under the day label ``label`` (``budget_days`` in SQL)."""
        query = select(
            func.coalesce(func.sum(budget_calls.c.calls), 0),
            func.coalesce(func.sum(budget_calls.c.billed), 0),
        ).where(budget_calls.c.day == label)
        async with self._read() as conn:
            row = (await conn.execute(query)).one()
        return int(row[0]), int(row[1])

    async def ledger_days(self, since_day: str) -> list[tuple[str, int, int]]:
        """(day, calls, billed) from ``since_day`` on, oldest first."""
        query = (
            select(
                budget_calls.c.day,
                func.sum(budget_calls.c.calls),
                func.sum(budget_calls.c.billed),
            )
            .where(budget_calls.c.day >= since_day)
            .group_by(budget_calls.c.day)
            .order_by(budget_calls.c.day)
        )
        async with self._read() as conn:
            return [(d, int(c), int(b)) for d, c, b in (await conn.execute(query)).all()]

    async def load_budget_state(self, name: str = "global") -> BudgetRow | None:
        """The stored bucket state, or None before the first spend."""
        query = select(budget_state).where(budget_state.c.name == name)
        async with self._read() as conn:
            row = (await conn.execute(query)).first()
        return None if row is None else _state_row(row)


async def count_ledger(
    conn: AsyncConnection,
    entries: Iterable[tuple[datetime, str]],
    *,
    calls: int = 0,
    billed: int = 0,
) -> None:
    """Add ``calls`` and ``billed`` to the ledger once per entry, (quarter hour, day label) as
    a ``LedgerDay``'s ``slot`` and ``label`` name it, inside the caller's transaction."""
    counts: dict[tuple[datetime, str], int] = {}
    for key in entries:
        counts[key] = counts.get(key, 0) + 1
    slot_at = utc_binder(conn, budget_calls.c.slot_at)
    rows = [
        (slot_at(slot), label, calls * times, billed * times)
        for (slot, label), times in counts.items()
    ]
    stmt = prepared(conn, "ledger.count", _count_statement, ("slot", "day", "calls", "billed"))
    await write_later(conn, stmt, rows)  # on SQLite: with the transaction's next step


def _count_statement(dialect: str) -> ClauseElement:
    """The ledger's upsert (add ``calls`` and ``billed`` to a quarter hour), built and
    compiled once per backend: building it costs more than running it, twice per fetch."""
    c = budget_calls.c
    stmt = upsert(dialect, budget_calls).values(
        slot_at=bindparam("slot", type_=c.slot_at.type),
        day=bindparam("day", type_=c.day.type),
        calls=bindparam("calls", type_=c.calls.type),
        billed=bindparam("billed", type_=c.billed.type),
    )
    return stmt.on_conflict_do_update(
        index_elements=[c.slot_at, c.day],
        set_={"calls": c.calls + stmt.excluded.calls, "billed": c.billed + stmt.excluded.billed},
    )


def _day_sum(column: Any) -> Any:
    """The sum of ``column`` over a day's edges (``start``, ``end`` bound at execution)."""
    return select(func.coalesce(func.sum(column), 0)).where(
        budget_calls.c.slot_at >= bindparam("start", type_=budget_calls.c.slot_at.type),
        budget_calls.c.slot_at < bindparam("end", type_=budget_calls.c.slot_at.type),
    )


#: the stored state's columns: every field of ``BudgetRow`` but the bucket's name
_STATE_COLUMNS = tuple(f.name for f in fields(BudgetRow) if f.name != "name")


def _state_values(row: BudgetRow) -> dict[str, Any]:
    return {name: getattr(row, name) for name in _STATE_COLUMNS}


def _state_row(row: Any) -> BudgetRow:
    return BudgetRow(
        name=row.name,
        tokens=float(row.tokens),
        refilled_at=row.refilled_at,
        paused_until=row.paused_until,
        pause_code=row.pause_code,
        pause_reason=row.pause_reason,
        rate_factor=float(row.rate_factor),
        recent_sends=row.recent_sends,
        paused_at=row.paused_at,
        pause_token=row.pause_token,
    )


#: built once (each is run once or twice per fetch): the budget row, locked, by ``name``, and
#: the day's calls between ``start`` and ``end``; on SQLite both in one statement
_LOCKED = select(budget_state).where(budget_state.c.name == bindparam("name")).with_for_update()
_DAY_CALLS = _day_sum(budget_calls.c.calls)
_LOCKED_WITH_CALLS = select(budget_state, _DAY_CALLS.scalar_subquery().label("cm_calls")).where(
    budget_state.c.name == bindparam("name")
)
#: what ``BudgetTxn.save`` binds, in this order: the row's name, every state column and
#: ``updated_at`` (as ``b_<column>``); the times among them
_SAVE_NAMES = ("b_name", *(f"b_{name}" for name in (*_STATE_COLUMNS, "updated_at")))
_SAVE_TIMES = ("refilled_at", "paused_until", "paused_at", "updated_at")


def _save(_dialect: str) -> ClauseElement:
    return (
        update(budget_state)
        .where(budget_state.c.name == bindparam("b_name"))
        .values(
            {
                name: bindparam(f"b_{name}", type_=budget_state.c[name].type)
                for name in (*_STATE_COLUMNS, "updated_at")
            }
        )
    )
