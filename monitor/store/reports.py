"""The ``report_runs`` table: a scheduled report's period is claimed, with its HTML and the
messages that carry it, in one transaction, so it is sent once across restarts and instances.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select, update

from monitor.store.engine import StoreBase
from monitor.store.outbox import NewMessage, insert_messages
from monitor.store.schema import report_runs


class ReportStore(StoreBase):
    """Scheduled report runs; every method is one short transaction."""

    async def report_sent(self, name: str, period: str) -> bool:
        """Whether this report's period was already claimed (by any instance)."""
        query = select(report_runs.c.name).where(
            report_runs.c.name == name, report_runs.c.period == period
        )
        async with self._read() as conn:
            return (await conn.scalar(query)) is not None

    async def claim_report(
        self,
        name: str,
        period: str,
        *,
        html: str,
        messages: Sequence[NewMessage],
        owner: str,
        now: datetime,
    ) -> bool:
        """Record the period's run and queue its messages, unless another run claimed it
        first (then nothing is written and False is returned)."""
        async with self._write() as conn:
            stmt = (
                self._upsert(report_runs)
                .values(name=name, period=period, instance=owner, created_at=now, html=html)
                .on_conflict_do_nothing(index_elements=[report_runs.c.name, report_runs.c.period])
                .returning(report_runs.c.name)
            )
            if (await conn.execute(stmt)).scalar_one_or_none() is None:
                return False
            await insert_messages(conn, messages, None, now)
        return True

    async def report_html(self, name: str, period: str) -> str | None:
        """The HTML stored for a report's period (what its messages attach)."""
        query = select(report_runs.c.html).where(
            report_runs.c.name == name, report_runs.c.period == period
        )
        async with self._read() as conn:
            found: str | None = await conn.scalar(query)
        return found or None  # "": pruned, or a period skipped without a report

    async def prune_report_html(self, older_than: datetime) -> int:
        """Drop the HTML of report runs created before ``older_than``; the rows stay, so a
        period is still sent once. Returns how many were dropped."""
        stmt = (
            update(report_runs)
            .where(report_runs.c.created_at < older_than, report_runs.c.html != "")
            .values(html="")
        )
        async with self._write() as conn:
            result = await conn.execute(stmt)
        return int(result.rowcount or 0)
