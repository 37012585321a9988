"""The console's overview: every active creator × series, filtered and paged in SQL, with the
metric's last point, 7-day change and sparkline, fetch status, open alerts and the creator's
week of followers; sorted by name, by the metric's change or by the followers'.

Pages in SQL (LIMIT/OFFSET over the filtered series), so 100,000 creators cost one page of
rows. Decides nothing: no rule, no delivery, no rendering.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Literal

from sqlalchemy import Select, Text, and_, func, literal, or_, select, type_coerce

from monitor.model import CORE, METRICS, DateType, Variant
from monitor.store.engine import StoreBase
from monitor.store.schema import alerts, creators, daily_metrics, schedule
from monitor.store.source_reads import (
    FollowerChange,
    follower_anchor,
    follower_change_ratio,
    follower_window,
)

#: variant columns, in ``Variant.label`` order
VARIANT = ("business", "note_type", "date_type", "advertise")
#: days before the newest data day that the 7-day change compares with
CHANGE_DAYS = 7
#: days of history a sparkline shows
SPARK_DAYS = 30
Sort = Literal["name", "change", "change_asc", "fans_change", "fans_change_asc"]


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


def series_label(row: Any) -> str:
    """``Variant.label`` of a row of ``schedule``, ``fetches`` or ``daily_metrics`` (core's)."""
    source = row.get("source") or CORE
    if source != CORE:
        return Variant.for_source(source, DateType(row["date_type"])).label
    return "/".join(str(row[name]) for name in VARIANT)


def tags_of(value: Any) -> tuple[str, ...]:
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


class OverviewStore(StoreBase):
    """The overview's one read."""

    def _filtered(self, q: OverviewQuery) -> Select[Any]:
        query = (
            select(
                schedule.c.creator_id,
                *(schedule.c[n] for n in (*VARIANT, "source")),
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
                    select(m.c.creator_id, *(m.c[n] for n in VARIANT), m.c.date_key, m.c[q.metric])
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
        for r in rows:  # the metrics are core's: a follower or note series has none of them
            key = (r["creator_id"], *(r[n] for n in VARIANT))
            series = points.get(key, []) if r["source"] == CORE else []
            opened, followers = open_counts.get(r["user_id"], 0), fans.get(r["creator_id"])
            out.append(_series_row(r, series_label(r), series, anchor, opened, followers))
        return OverviewPage(out, total, anchor)

    @staticmethod
    def _ordered(filtered: Select[Any], q: OverviewQuery, anchor: str | None) -> Select[Any]:
        by_name = (
            creators.c.name,
            creators.c.user_id,
            *(schedule.c[n] for n in (*VARIANT, "source")),
        )
        if q.sort == "name" or anchor is None:
            return filtered.order_by(*by_name)
        if q.sort.startswith("fans"):  # ``anchor``: the newest follower day
            fans = follower_change_ratio(schedule.c.creator_id, anchor, schedule)
            fans = fans.desc() if q.sort == "fans_change" else fans.asc()
            return filtered.order_by(fans.nulls_last(), *by_name)
        # per series, two index seeks: the first and the last point in the window
        m = daily_metrics
        in_window = and_(
            *(m.c[n] == schedule.c[n] for n in VARIANT),
            schedule.c.source == CORE,
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
        tags=tags_of(r["tags"]),
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
