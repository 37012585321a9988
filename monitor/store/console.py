"""What the console reads and writes besides its overview (overview.py): one creator's history
and fetch log, alerts with their acknowledgements, calls per day by code (the ledger's days are
ledger.py's). Decides nothing: no rule, no delivery, no rendering.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

from sqlalchemy import (
    func,
    or_,
    select,
    update,
)

from monitor.model import METRICS
from monitor.store.engine import StoreBase
from monitor.store.overview import VARIANT, series_label, tags_of
from monitor.store.schema import alerts, creators, daily_metrics, fetches

AlertState = Literal["open", "firing", "pending", "resolved", "all"]


@dataclass(frozen=True, slots=True)
class CreatorRef:
    id: int
    user_id: str
    name: str
    tags: tuple[str, ...]
    active: bool


@dataclass(frozen=True, slots=True)
class Point:
    variant: str
    date_key: str
    values: dict[str, float | None] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class FetchLine:
    started_at: datetime
    variant: str
    http_status: int | None
    code: int | None
    billed: bool
    latency_ms: int | None
    points: int
    error: str | None


@dataclass(frozen=True, slots=True)
class ConsoleAlert:
    id: int
    rule: str
    scope: str
    name: str
    severity: str
    state: str
    metric: str | None
    value: float | None
    summary: str
    data_date: str | None  # the data day the finding was about
    pending_since: datetime | None
    fired_at: datetime | None
    resolved_at: datetime | None
    repeats_sent: int
    acked_at: datetime | None
    acked_by: str | None
    baseline: float | None = None
    details: dict[str, Any] = field(default_factory=dict)  # the finding, JSON as stored


AckResult = Literal["acked", "already", "resolved", "missing"]


class ConsoleStore(StoreBase):
    """The console's reads and its one write (an acknowledgement); each one transaction."""

    async def find_creator_ref(self, ref: str) -> CreatorRef | None:
        """A creator by user id, else by exact name (the first by id when names repeat)."""
        query = (
            select(creators)
            .where(or_(creators.c.user_id == ref, creators.c.name == ref))
            .order_by((creators.c.user_id == ref).desc(), creators.c.id)
            .limit(1)
        )
        async with self._read() as conn:
            row = (await conn.execute(query)).mappings().first()
        if row is None:
            return None
        return CreatorRef(
            int(row["id"]), row["user_id"], row["name"], tags_of(row["tags"]), bool(row["active"])
        )

    async def creator_points(
        self, creator_id: int, *, variant: str | None = None, since: str | None = None
    ) -> list[Point]:
        """Every stored daily point of a creator (or one variant), by variant then day."""
        m = daily_metrics
        query = (
            select(m)
            .where(m.c.creator_id == creator_id)
            .order_by(*(m.c[n] for n in VARIANT), m.c.date_key)
        )
        if variant is not None:
            parts = variant.split("/")
            if len(parts) != len(VARIANT):
                raise ValueError(f"a variant is {'/'.join(VARIANT).upper()}, got {variant!r}")
            query = query.where(*(m.c[n] == v for n, v in zip(VARIANT, parts, strict=True)))
        if since is not None:
            query = query.where(m.c.date_key >= since)
        async with self._read() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [
            Point(series_label(r), r["date_key"], {name: r[name] for name in METRICS}) for r in rows
        ]

    async def fetch_log(self, creator_id: int, *, limit: int = 50) -> list[FetchLine]:
        """The creator's newest fetches: when, which variant, HTTP status and upstream code."""
        query = (
            select(fetches)
            .where(fetches.c.creator_id == creator_id)
            .order_by(fetches.c.started_at.desc(), fetches.c.id.desc())
            .limit(limit)
        )
        async with self._read() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [
            FetchLine(
                r["started_at"],
                series_label(r),
                r["http_status"],
                r["code"],
                bool(r["billed"]),
                r["latency_ms"],
                int(r["points"]),
                r["error"],
            )
            for r in rows
        ]

    async def console_alerts(
        self,
        *,
        state: AlertState = "all",
        scope: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[ConsoleAlert]:
        """Alerts newest first, with the creator's name and the acknowledgement."""
        query = (
            select(alerts, func.coalesce(creators.c.name, "").label("creator_name"))
            .outerjoin(creators, creators.c.id == alerts.c.creator_id)
            .order_by(alerts.c.id.desc())
            .limit(limit)
            .offset(offset)
        )
        if state == "open":
            query = query.where(alerts.c.state != "resolved")
        elif state != "all":
            query = query.where(alerts.c.state == state)
        if scope is not None:
            query = query.where(alerts.c.scope == scope)
        async with self._read() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [_console_alert(r) for r in rows]

    async def console_alert(self, alert_id: int) -> ConsoleAlert | None:
        query = (
            select(alerts, func.coalesce(creators.c.name, "").label("creator_name"))
            .outerjoin(creators, creators.c.id == alerts.c.creator_id)
            .where(alerts.c.id == alert_id)
        )
        async with self._read() as conn:
            row = (await conn.execute(query)).mappings().first()
        return None if row is None else _console_alert(row)

    async def ack_alert(self, alert_id: int, *, now: datetime, by: str) -> AckResult:
        """Acknowledge an open alert: its repeats stop until it resolves."""
        async with self._write() as conn:
            done = await conn.execute(
                update(alerts)
                .where(alerts.c.id == alert_id, alerts.c.state != "resolved")
                .where(alerts.c.acked_at.is_(None))
                .values(acked_at=now, acked_by=by[:32])
            )
            if done.rowcount:
                return "acked"
            state = await conn.scalar(select(alerts.c.state).where(alerts.c.id == alert_id))
        if state is None:
            return "missing"
        return "resolved" if state == "resolved" else "already"

    async def calls_by_code(
        self, since: datetime, zone: str, *, now: datetime
    ) -> list[tuple[str, str, int]]:
        """(local day, code, calls) of the fetches since ``since``; the code is the upstream
        code, else ``http NNN``, else ``transport``. SQLite shifts by the zone's offset at
        ``now`` (a daylight-saving change inside the window moves an hour to the next day)."""
        f = fetches
        if self.dialect == "postgresql":
            day = func.to_char(func.timezone(zone, f.c.started_at), "YYYY-MM-DD")
        else:
            offset = ZoneInfo(zone).utcoffset(now.replace(tzinfo=None)) or timedelta(0)
            minutes = int(offset.total_seconds() // 60)
            day = func.substr(func.datetime(f.c.started_at, f"{minutes:+d} minutes"), 1, 10)
        query = (
            select(day.label("day"), f.c.code, f.c.http_status, func.count())
            .where(f.c.started_at >= since)
            .group_by(day, f.c.code, f.c.http_status)
            .order_by(day)
        )
        async with self._read() as conn:
            rows = (await conn.execute(query)).all()
        merged: dict[tuple[str, str], int] = {}
        for d, code, status, n in rows:
            key = (str(d), _code_name(code, status))
            merged[key] = merged.get(key, 0) + int(n)
        return [(d, c, n) for (d, c), n in sorted(merged.items())]


def _code_name(code: int | None, status: int | None) -> str:
    if code is not None:
        return str(code)
    return f"http {status}" if status is not None else "transport"


def _console_alert(r: Any) -> ConsoleAlert:
    details = r["details"] or {}
    return ConsoleAlert(
        id=int(r["id"]),
        rule=r["rule"],
        scope=r["scope"],
        name=r["creator_name"],
        severity=r["severity"],
        state=r["state"],
        metric=r["metric"],
        value=r["value"],
        summary=r["summary"],
        data_date=details.get("date") if isinstance(details, dict) else None,
        pending_since=r["pending_since"],
        fired_at=r["fired_at"],
        resolved_at=r["resolved_at"],
        repeats_sent=int(r["repeats_sent"]),
        acked_at=r["acked_at"],
        acked_by=r["acked_by"],
        baseline=r["baseline"],
        details=dict(details) if isinstance(details, dict) else {},
    )
