"""What the console reads and writes: the paged overview, one creator's history and fetch log,
alerts with their acknowledgements, calls per day by code (the ledger's days are ledger.py's).

Pages in SQL (LIMIT/OFFSET over the filtered series), so 100,000 creators cost one page of
rows. Decides nothing: no rule, no delivery, no rendering.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

from sqlalchemy import (
    Select,
    Text,
    and_,
    func,
    literal,
    or_,
    select,
    type_coerce,
    update,
)

from monitor.model import METRICS
from monitor.store.engine import StoreBase
from monitor.store.schema import alerts, creators, daily_metrics, fetches, schedule
from monitor.store.sources import (
    FollowerChange,
    follower_anchor,
    follower_change_ratio,
    follower_window,
)

#: variant columns, in ``Variant.label`` order
_VARIANT = ("business", "note_type", "date_type", "advertise")
#: days before the newest data day that the 7-day change compares with
CHANGE_DAYS = 7
#: days of history a sparkline shows
SPARK_DAYS = 30
Sort = Literal["name", "change", "change_asc", "fans_change", "fans_change_asc"]
AlertState = Literal["open", "firing", "pending", "resolved", "all"]


@dataclass(frozen=True, slots=True)
class OverviewQuery:
    metric: str = "imp"
    tag: str = ""
    text: str = ""  # a part of the name, or the start of the user id
    sort: Sort = "name"
    page: int = 1
    per_page: int = 50


@dataclass(frozen=True, slots=True)
class SeriesRow:
    """One creator × variant line of the overview."""

    creator_id: int
    user_id: str
    name: str
    tags: tuple[str, ...]
    variant: str  # Variant.label
    last_date: str | None
    last_value: float | None
    change_pct: float | None  # over CHANGE_DAYS days, None without two points
    spark: tuple[float | None, ...]  # oldest first, one per data day
    status: str  # ok | failing | broken | never
    last_code: int | None
    last_attempt_at: datetime | None
    last_success_at: datetime | None
    failures: int
    open_alerts: int
    followers: FollowerChange | None = None  # the creator's week of follower counts, if any


@dataclass(frozen=True, slots=True)
class OverviewPage:
    rows: list[SeriesRow]
    total: int
    anchor: str | None  # the newest data day of the whole store


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


def _label(row: Any) -> str:
    return "/".join(str(row[name]) for name in _VARIANT)


def _tags(value: Any) -> tuple[str, ...]:
    return tuple(value or ())


def _status(row: Any) -> str:
    if row["broken_at"] is not None:
        return "broken"
    if row["last_attempt_at"] is None:
        return "never"
    return "failing" if row["consecutive_failures"] else "ok"


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def change_of(first: float | None, last: float | None) -> float | None:
    """Relative change from ``first`` to ``last`` (0.25 = +25 %); None when undefined."""
    if first is None or last is None or first == 0:
        return None
    return (last - first) / abs(first)


def _day_before(day: str, days: int) -> str:
    return (date.fromisoformat(day) - timedelta(days=days)).isoformat()


class ConsoleStore(StoreBase):
    """The console's reads and its one write (an acknowledgement); each one transaction."""

    def _filtered(self, q: OverviewQuery) -> Select[Any]:
        query = (
            select(
                schedule.c.creator_id,
                *(schedule.c[n] for n in _VARIANT),
                creators.c.user_id,
                creators.c.name,
                creators.c.tags,
                schedule.c.last_code,
                schedule.c.last_attempt_at,
                schedule.c.last_success_at,
                schedule.c.consecutive_failures,
                schedule.c.broken_at,
            )
            .join(creators, creators.c.id == schedule.c.creator_id)
            .where(creators.c.active.is_(True))
        )
        if q.tag:
            needle = "%" + _like_escape(json.dumps(q.tag, ensure_ascii=False)) + "%"
            # the JSON text itself (the column's type would JSON-encode the pattern)
            tags_text = type_coerce(creators.c.tags, Text)
            query = query.where(tags_text.like(needle, escape="\\"))
        if q.text:
            part = _like_escape(q.text.lower())
            query = query.where(
                or_(
                    func.lower(creators.c.name).like(f"%{part}%", escape="\\"),
                    creators.c.user_id.like(f"{part}%", escape="\\"),
                )
            )
        return query

    async def overview(self, q: OverviewQuery) -> OverviewPage:
        """One page of active creator × variant series, filtered and sorted in SQL."""
        if q.metric not in METRICS:
            raise ValueError(f"unknown metric {q.metric!r}")
        filtered = self._filtered(q)
        async with self._read() as conn:
            anchor = await conn.scalar(select(func.max(daily_metrics.c.date_key)))
            total = int(
                await conn.scalar(select(func.count()).select_from(filtered.subquery())) or 0
            )
            by_fans = q.sort.startswith("fans")  # then the change's window ends at its own anchor
            edge = await follower_anchor(conn) if by_fans else anchor
            page_query = self._ordered(filtered, q, edge)
            page_query = page_query.limit(q.per_page).offset((q.page - 1) * q.per_page)
            rows = (await conn.execute(page_query)).mappings().all()
            ids = sorted({int(r["creator_id"]) for r in rows})
            points: dict[tuple[Any, ...], list[tuple[str, Any]]] = {}
            if ids and anchor is not None:
                m = daily_metrics
                spark = (
                    select(m.c.creator_id, *(m.c[n] for n in _VARIANT), m.c.date_key, m.c[q.metric])
                    .where(m.c.creator_id.in_(ids))
                    .where(m.c.date_key > _day_before(anchor, SPARK_DAYS))
                    .order_by(m.c.date_key)
                )
                # plain tuples keyed by (creator_id, *variant): 1,500 rows a page
                for *ident, day, value in (await conn.execute(spark)).all():
                    points.setdefault(tuple(ident), []).append((day, value))
            users = [str(r["user_id"]) for r in rows]
            open_counts: dict[str, int] = {}
            if users:
                counts = (
                    select(alerts.c.scope, func.count())
                    .where(alerts.c.state != "resolved", alerts.c.scope.in_(users))
                    .group_by(alerts.c.scope)
                )
                open_counts = {s: int(n) for s, n in (await conn.execute(counts)).all()}
            fans = await follower_window(conn, ids)
        out = []
        for r in rows:
            key = (r["creator_id"], *(r[n] for n in _VARIANT))
            opened, followers = open_counts.get(r["user_id"], 0), fans.get(r["creator_id"])
            out.append(_series_row(r, _label(r), points.get(key, []), anchor, opened, followers))
        return OverviewPage(out, total, anchor)

    @staticmethod
    def _ordered(filtered: Select[Any], q: OverviewQuery, anchor: str | None) -> Select[Any]:
        by_name = (creators.c.name, creators.c.user_id, *(schedule.c[n] for n in _VARIANT))
        if q.sort == "name" or anchor is None:
            return filtered.order_by(*by_name)
        if q.sort.startswith("fans"):  # ``anchor``: the newest follower day
            fans = follower_change_ratio(schedule.c.creator_id, anchor, schedule)
            fans = fans.desc() if q.sort == "fans_change" else fans.asc()
            return filtered.order_by(fans.nulls_last(), *by_name)
        # per series, two index seeks: the first and the last point in the window
        m = daily_metrics
        in_window = and_(
            *(m.c[n] == schedule.c[n] for n in _VARIANT),
            m.c.creator_id == schedule.c.creator_id,
            m.c.date_key >= _day_before(anchor, CHANGE_DAYS),
        )

        def edge(newest: bool) -> Any:
            order = m.c.date_key.desc() if newest else m.c.date_key.asc()
            return (
                select(m.c[q.metric])
                .where(in_window)
                .order_by(order)
                .limit(1)
                .correlate(schedule)
                .scalar_subquery()
            )

        # last/first orders as (last - first)/first does for the metrics' non-negative values,
        # and names each subquery once: two seeks per series, not three
        ratio = edge(newest=True) * literal(1.0) / func.nullif(edge(newest=False), 0)
        ordered = ratio.desc() if q.sort == "change" else ratio.asc()
        return filtered.order_by(ordered.nulls_last(), *by_name)

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
            int(row["id"]), row["user_id"], row["name"], _tags(row["tags"]), bool(row["active"])
        )

    async def creator_points(
        self, creator_id: int, *, variant: str | None = None, since: str | None = None
    ) -> list[Point]:
        """Every stored daily point of a creator (or one variant), by variant then day."""
        m = daily_metrics
        query = (
            select(m)
            .where(m.c.creator_id == creator_id)
            .order_by(*(m.c[n] for n in _VARIANT), m.c.date_key)
        )
        if variant is not None:
            parts = variant.split("/")
            if len(parts) != len(_VARIANT):
                raise ValueError(f"a variant is {'/'.join(_VARIANT).upper()}, got {variant!r}")
            query = query.where(*(m.c[n] == v for n, v in zip(_VARIANT, parts, strict=True)))
        if since is not None:
            query = query.where(m.c.date_key >= since)
        async with self._read() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [Point(_label(r), r["date_key"], {name: r[name] for name in METRICS}) for r in rows]

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
                _label(r),
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


def _series_row(
    r: Any,
    label: str,
    series: Sequence[tuple[str, Any]],
    anchor: str | None,
    open_alerts: int,
    followers: FollowerChange | None,
) -> SeriesRow:
    last_date, last_value = series[-1] if series else (None, None)
    change = None
    if anchor is not None:
        cutoff = _day_before(anchor, CHANGE_DAYS)
        window = [(d, v) for d, v in series if d >= cutoff]
        if len(window) >= 2:
            change = change_of(window[0][1], window[-1][1])
    return SeriesRow(
        creator_id=int(r["creator_id"]),
        user_id=r["user_id"],
        name=r["name"],
        tags=_tags(r["tags"]),
        variant=label,
        last_date=last_date,
        last_value=None if last_value is None else float(last_value),
        change_pct=change,
        spark=tuple(None if v is None else float(v) for _, v in series),
        status=_status(r),
        last_code=r["last_code"],
        last_attempt_at=r["last_attempt_at"],
        last_success_at=r["last_success_at"],
        failures=int(r["consecutive_failures"]),
        open_alerts=open_alerts,
        followers=followers,
    )


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
