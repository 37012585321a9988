"""Helpers for the store tests: a settable clock, sample bodies as CoreData, point builders.

The sample bodies are turned into CoreData here (not through monitor.upstream.client) so the store
tests stand on their own while the client evolves; one test checks the two agree.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select

from monitor.model import COST_METRICS, CoreData, Creator, DailyPoint, Variant
from monitor.policy import cadence
from monitor.store import Store
from monitor.store.schema import creators, schedule
from monitor.store.variants import VARIANT_COLUMNS, variant_of

T0 = datetime(2025, 12, 11, 2, 0, tzinfo=UTC)


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


CREATORS = (
    Creator("5c3bf7f7000000000602fd63", "Lilyy", ("fitness", "tier-a")),
    Creator("5a0b1c2d3e4f5a6b7c8d9e0f", "Bo", ("food",)),
)


def _point(raw: dict[str, Any]) -> DailyPoint:
    costs = {name: (float(raw[name]) or None) for name in COST_METRICS}
    return DailyPoint(
        date_key=date.fromisoformat(raw["dateKey"]),
        imp=int(raw["imp"]),
        read=int(raw["read"]),
        engage=int(raw["engage"]),
        third_user_num=int(raw["thirdUserNum"]),
        **costs,
    )


def load_sample(data_dir: Path, name: str) -> tuple[CoreData, str]:
    """(CoreData, raw body) of one sample file."""
    body = (data_dir / name).read_text(encoding="utf-8")
    data = json.loads(body)["data"]
    core = CoreData(
        summary=_point(data["sumData"]),
        daily=tuple(_point(p) for p in data["dailyData"]),
    )
    return core, body


def make_series(
    start: date, days: int, *, read0: int = 1000, skip: frozenset[int] = frozenset()
) -> CoreData:
    """A synthetic response: ``days`` points from ``start`` with read = read0 + i, some skipped."""
    points = tuple(
        DailyPoint(
            date_key=start + timedelta(days=i),
            imp=10 * (read0 + i),
            read=read0 + i,
            engage=(read0 + i) // 10,
            cpm=12.5,
            cpe=None,
            cpv=0.5,
            cpuv=None,
            third_user_num=0,
        )
        for i in range(days)
        if i not in skip
    )
    return CoreData(summary=points[-1], daily=points)


def revise(core: CoreData, day: date, **values: Any) -> CoreData:
    """``core`` with the point of ``day`` changed (a revised past value)."""
    daily = tuple(replace(p, **values) if p.date_key == day else p for p in core.daily)
    return CoreData(summary=daily[-1], daily=daily)


def first_due(key: str, every: timedelta, now: datetime) -> datetime:
    """The first slot the live timetable gives a new series (``cadence.first_due_micros``) as
    a datetime: the latest slot of its cadence at or before ``now``."""
    us = timedelta(microseconds=1)
    due = cadence.first_due_micros(key, every // us, (now - cadence.EPOCH) // us)
    return cadence.EPOCH + timedelta(microseconds=due)


@dataclass(frozen=True, slots=True)
class ScheduleRow:
    """One (creator, variant) row of the ``schedule`` table, as a test reads it back."""

    creator_id: int
    user_id: str
    variant: Variant
    next_due_at: datetime
    last_attempt_at: datetime | None
    last_success_at: datetime | None
    last_code: int | None
    last_error: str | None
    consecutive_failures: int
    broken_at: datetime | None
    broken_reason: str | None
    lease_owner: str | None
    lease_until: datetime | None


async def schedule_rows(store: Store) -> list[ScheduleRow]:
    """Every row of the active creators' schedule, soonest due first (ties by key)."""
    query = (
        select(schedule, creators.c.user_id)
        .join(creators, creators.c.id == schedule.c.creator_id)
        .where(creators.c.active.is_(True))
        .order_by(
            schedule.c.next_due_at,
            schedule.c.creator_id,
            *(schedule.c[name] for name in VARIANT_COLUMNS),
        )
    )
    async with store._read() as conn:
        rows = (await conn.execute(query)).all()
    return [
        ScheduleRow(
            creator_id=int(row.creator_id),
            user_id=row.user_id,
            variant=variant_of(row),
            next_due_at=row.next_due_at,
            last_attempt_at=row.last_attempt_at,
            last_success_at=row.last_success_at,
            last_code=row.last_code,
            last_error=row.last_error,
            consecutive_failures=int(row.consecutive_failures),
            broken_at=row.broken_at,
            broken_reason=row.broken_reason,
            lease_owner=row.lease_owner,
            lease_until=row.lease_until,
        )
        for row in rows
    ]
