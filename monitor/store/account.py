"""The account's balance readings and the paid answers kept for ``reparse`` (issue sources).

A balance is stored exactly (``schema.ExactDecimal``) and read back as a ``Decimal``. A billed
answer whose ``data`` this version cannot read is kept whole, with what was asked, until a newer
version reads it; retention (``prune_raw``) never touches this table.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from sqlalchemy import func, insert, select, update

from monitor.model import Balance
from monitor.store.engine import StoreBase
from monitor.store.schema import balance_readings, unreadable_answers

#: ids per ``UPDATE … WHERE id IN (…)``: under SQLite's bound-parameter limit
_CHUNK = 500


@dataclass(frozen=True, slots=True)
class BalanceReading:
    """The balance at one reading."""

    read_at: datetime
    amount: Decimal
    currency: str = "CNY"


@dataclass(frozen=True, slots=True)
class KeptAnswer:
    """A paid answer this version could not read: the body as received (never the token),
    the source and query it answered, and why it was unreadable."""

    id: int
    source: str
    body: str
    fetched_at: datetime
    creator_id: int | None = None
    params: Mapping[str, str] = field(default_factory=dict)
    error: str = ""
    reparsed_at: datetime | None = None


class AccountStore(StoreBase):
    """Writes and reads ``balance_readings`` and ``unreadable_answers``."""

    async def store_balance(self, read_at: datetime, balance: Balance) -> None:
        """One reading; a second reading at the same instant replaces the first. ValueError
        for an amount that is not a finite number (a bug above: the parser refuses those)."""
        if not balance.amount.is_finite():
            raise ValueError(f"money must be a finite Decimal, got {balance.amount!r}")
        stmt = self._upsert(balance_readings).values(
            read_at=read_at, balance=balance.amount, currency=balance.currency
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=[balance_readings.c.read_at],
            set_={"balance": stmt.excluded.balance, "currency": stmt.excluded.currency},
        )
        async with self._write() as conn:
            await conn.execute(stmt)

    async def balance_readings(
        self, since: datetime | None = None, until: datetime | None = None
    ) -> list[BalanceReading]:
        """The readings within [since, until], oldest first."""
        cols = balance_readings.c
        query = select(cols.read_at, cols.balance, cols.currency)
        if since is not None:
            query = query.where(cols.read_at >= since)
        if until is not None:
            query = query.where(cols.read_at <= until)
        async with self._read() as conn:
            rows = (await conn.execute(query.order_by(cols.read_at))).all()
        return [BalanceReading(at, amount, currency) for at, amount, currency in rows]

    async def latest_balance(self) -> BalanceReading | None:
        """The newest reading; None before the first."""
        cols = balance_readings.c
        query = select(cols.read_at, cols.balance, cols.currency)
        async with self._read() as conn:
            row = (await conn.execute(query.order_by(cols.read_at.desc()).limit(1))).first()
        return None if row is None else BalanceReading(row[0], row[1], row[2])

    async def keep_unreadable(
        self,
        *,
        source: str,
        body: str,
        fetched_at: datetime,
        params: Mapping[str, str] | None = None,
        creator_id: int | None = None,
        error: str = "",
    ) -> int:
        """Keep one paid answer this version could not read; returns its id. ``body`` and
        ``params`` must already be free of the token (``UnreadableAnswer`` holds them so)."""
        row = {
            "source": source,
            "creator_id": creator_id,
            "params": dict(params or {}),
            "body": body,
            "error": error,
            "fetched_at": fetched_at,
        }
        stmt = insert(unreadable_answers).returning(unreadable_answers.c.id)
        async with self._write() as conn:
            return int((await conn.execute(stmt, row)).scalar_one())

    async def unreparsed_answers(
        self, source: str | None = None, limit: int | None = None
    ) -> list[KeptAnswer]:
        """Kept answers not read again yet, oldest first (of one source, if given)."""
        query = select(unreadable_answers).where(unreadable_answers.c.reparsed_at.is_(None))
        if source is not None:
            query = query.where(unreadable_answers.c.source == source)
        query = query.order_by(unreadable_answers.c.id)
        if limit is not None:
            query = query.limit(limit)
        async with self._read() as conn:
            rows = (await conn.execute(query)).all()
        return [
            KeptAnswer(
                id=row.id,
                source=row.source,
                body=row.body,
                fetched_at=row.fetched_at,
                creator_id=row.creator_id,
                params=row.params,
                error=row.error,
                reparsed_at=row.reparsed_at,
            )
            for row in rows
        ]

    async def count_unreparsed(self) -> int:
        """How many kept answers wait to be read again (``status`` shows it)."""
        query = (
            select(func.count())
            .select_from(unreadable_answers)
            .where(unreadable_answers.c.reparsed_at.is_(None))
        )
        async with self._read() as conn:
            return int(await conn.scalar(query) or 0)

    async def mark_reparsed(self, ids: Sequence[int], at: datetime) -> int:
        """Record that these kept answers were read (the body stays); returns how many."""
        done = 0
        async with self._write() as conn:
            for start in range(0, len(ids), _CHUNK):
                result = await conn.execute(
                    update(unreadable_answers)
                    .where(unreadable_answers.c.id.in_(list(ids[start : start + _CHUNK])))
                    .where(unreadable_answers.c.reparsed_at.is_(None))
                    .values(reparsed_at=at)
                )
                done += result.rowcount
        return done
