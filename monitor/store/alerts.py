"""The ``alerts`` table: alert state changes written together with the messages they owe (one
transaction, guarded against other instances), and the alert lists the CLI, digest and report read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Select, and_, delete, func, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection

from monitor.model import AlertState
from monitor.store.alert_rows import OpenAlert, creator_of, state_of, still_as_read, values_of
from monitor.store.engine import StoreBase
from monitor.store.outbox import NewMessage, insert_messages
from monitor.store.schema import alerts, creators, schedule


@dataclass(frozen=True, slots=True)
class AlertRow:
    """One line of ``alerts [--open]``; ``variants``: how many series its creator tracks (the
    variant is worth naming only when there are several)."""

    id: int
    rule: str
    scope: str
    name: str  # the creator's name, '' for account-wide alerts
    severity: str
    state: str
    summary: str
    pending_since: datetime | None
    fired_at: datetime | None
    resolved_at: datetime | None
    data_day: str | None = None  # the data day the firing reading is from ('YYYY-MM-DD')
    clear_day: str | None = None  # the data day of the reading that resolved it
    variant: str = ""  # the series' label ('' for account-wide alerts)
    variants: int = 1
    rolling_median: bool = False  # its values are rolling medians per note (a surface says so once)
    metric: str | None = None
    value: float | None = None
    baseline: float | None = None
    details: dict[str, Any] = field(default_factory=dict)  # the finding, as stored


class AlertStore(StoreBase):
    """Alerts; every method is one short transaction."""

    async def load_alert(self, rule: str, scope: str, variant: str = "") -> AlertState | None:
        """The open alert for (rule, scope, variant), else the newest resolved one, else None."""
        open_first = (alerts.c.state == "resolved").asc()
        query = (
            select(alerts)
            .where(alerts.c.rule == rule, alerts.c.scope == scope, alerts.c.variant == variant)
            .order_by(open_first, alerts.c.id.desc())
            .limit(1)
        )
        async with self._read() as conn:
            row = (await conn.execute(query)).mappings().first()
        return None if row is None else state_of(row)

    async def commit_transition(
        self,
        alert: AlertState | None,
        messages: Sequence[NewMessage],
        *,
        now: datetime,
        expect: AlertState | None,
        drop_id: int | None = None,
    ) -> bool:
        """Write an alert state change and the messages it owes in ONE transaction.

        ``alert`` with id None is inserted, else updated; ``drop_id`` deletes a pending alert
        that cleared before it fired. False (and nothing written) when the row no longer holds
        ``expect`` (the version columns an evaluation read; None: no check), or when a new alert
        would be a second open one for its (rule, scope, variant). Another instance won.
        """
        async with self._write() as conn:
            if drop_id is not None:
                dropped = await conn.execute(
                    delete(alerts).where(
                        alerts.c.id == drop_id, alerts.c.state == "pending", *still_as_read(expect)
                    )
                )
                if not dropped.rowcount:
                    return False
            alert_id = None
            if alert is not None:
                alert_id = await self._guarded_save(conn, alert, expect)
                if alert_id is None:
                    return False
            await insert_messages(conn, messages, alert_id, now)
        return True

    async def _guarded_save(
        self, conn: AsyncConnection, alert: AlertState, expect: AlertState | None
    ) -> int | None:
        values = values_of(alert)
        if alert.id is None:
            stmt = self._upsert(alerts).values(values)
            stmt = stmt.on_conflict_do_nothing(
                index_elements=[alerts.c.rule, alerts.c.scope, alerts.c.variant],
                index_where=text("state != 'resolved'"),
            )
            inserted = await conn.execute(stmt.returning(alerts.c.id))
            found = inserted.scalar_one_or_none()
            return None if found is None else int(found)
        alert_id = alert.id
        updated = await conn.execute(
            update(alerts).where(alerts.c.id == alert_id, *still_as_read(expect)).values(values)
        )
        return alert_id if updated.rowcount else None

    async def open_alerts(self) -> list[OpenAlert]:
        """Every pending or firing alert, with its creator as the database remembers it."""
        query = (
            select(
                alerts,
                creators.c.name.label("creator_name"),
                creators.c.tags.label("creator_tags"),
            )
            .outerjoin(creators, creators.c.id == alerts.c.creator_id)
            .where(alerts.c.state != "resolved")
            .order_by(alerts.c.id)
        )
        async with self._read() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [OpenAlert(state_of(r), creator_of(r)) for r in rows]

    async def list_alerts(self, *, open_only: bool = False, limit: int = 200) -> list[AlertRow]:
        """Newest first; ``open_only``: pending and firing ones."""
        query = _alert_lines().order_by(alerts.c.id.desc()).limit(limit)
        if open_only:
            query = query.where(alerts.c.state != "resolved")
        return await self._alert_rows(query)

    async def _alert_rows(self, query: Select[Any]) -> list[AlertRow]:
        """Run a query made by ``_alert_lines``."""
        async with self._read() as conn:
            rows = (await conn.execute(query)).all()
        return [
            AlertRow(
                id=int(r.id),
                rule=r.rule,
                scope=r.scope,
                variant=r.variant,
                variants=int(r.variants or 0),
                name=r.creator_name,
                severity=r.severity,
                state=r.state,
                summary=r.summary,
                pending_since=r.pending_since,
                fired_at=r.fired_at,
                resolved_at=r.resolved_at,
                data_day=(r.details or {}).get("date"),
                clear_day=(r.details or {}).get("clear_date"),
                rolling_median=_rolling(r.details or {}),
                metric=r.metric,
                value=r.value,
                baseline=r.baseline,
                details=dict(r.details or {}),
            )
            for r in rows
        ]

    async def alert_activity(self, since: datetime, until: datetime) -> list[AlertRow]:
        """Alerts that fired or resolved in ``[since, until)``, oldest first."""
        fired = and_(alerts.c.fired_at >= since, alerts.c.fired_at < until)
        resolved = and_(alerts.c.resolved_at >= since, alerts.c.resolved_at < until)
        query = _alert_lines().where(or_(fired, resolved)).order_by(alerts.c.id)
        return await self._alert_rows(query)


def _rolling(details: dict[str, Any]) -> bool:
    """Whether an alert's values are rolling medians (rows stored before the flag: by kind)."""
    return bool(details.get("rolling_median", details.get("kind") in ("change", "anomaly")))


def _alert_lines() -> Select[Any]:
    """``alerts`` with the creator's name and how many series the creator tracks."""
    tracked = (
        select(func.count())
        .select_from(schedule)
        .where(schedule.c.creator_id == alerts.c.creator_id)
        .scalar_subquery()
    )
    return select(
        alerts,
        func.coalesce(creators.c.name, "").label("creator_name"),
        tracked.label("variants"),
    ).outerjoin(creators, creators.c.id == alerts.c.creator_id)
