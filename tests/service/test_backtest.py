"""``rules test``: the backtest over a stored history with a scripted fall reports the firing and
the resolution on the right days, writes nothing, and leaves out rules it cannot replay.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest_asyncio
from support.alerting import BO, LILYY, open_store, points, seed, table
from support.sim import FakeClock

from monitor.config import Config, parse_config
from monitor.model import Creator
from monitor.service.alerting.backtest import BacktestLine, run_backtest
from monitor.store import Store

START = date(2025, 11, 1)
FALL_DAY = START + timedelta(days=19)  # 2025-11-20: reads 1,000 → 600
RECOVERY_DAY = START + timedelta(days=24)  # 2025-11-25: back to 1,000
CHANGE = {
    "name": "reads-down-week",
    "kind": "change",
    "metric": "read",
    "baseline": "7d",
    "pct": -30,
}


def config_of(*rules: dict[str, Any]) -> Config:
    return parse_config(
        {
            "creators": [
                {"user_id": LILYY, "name": "Lilyy", "tags": ["fitness"]},
                {"user_id": BO, "name": "Bo"},
            ],
            "rules": list(rules),
        }
    )


@pytest_asyncio.fixture
async def store(db_url: str) -> AsyncIterator[Store]:
    opened = await open_store(db_url, FakeClock(datetime(2025, 12, 1, tzinfo=UTC)))
    reads = [1000] * 19 + [600] * 5 + [1000] * 6  # 30 days; the fall lasts five days
    try:
        await seed(
            opened,
            [Creator(LILYY, "Lilyy", ("fitness",)), Creator(BO, "Bo")],
            {LILYY: points(START, reads), BO: points(START, [800] * 30)},
            datetime(2025, 12, 1, tzinfo=UTC),
        )
        yield opened
    finally:
        await opened.close()


def fall_line(day: date) -> BacktestLine:
    return BacktestLine(
        day=day,
        rule="reads-down-week",
        user_id=LILYY,
        name="Lilyy",
        event="firing",
        severity="warning",
        summary=f"reads 1,000 → 600 (-40.0 %) from {day - timedelta(days=7)} to {day}",
        metric="read",
        value=600.0,
        baseline=1000.0,
        change_pct=-40.0,
    )


async def test_the_fall_fires_on_its_day_and_resolves_on_the_recovery(store: Store) -> None:
    lines = await run_backtest(config_of(CHANGE), store)
    assert lines[0] == fall_line(FALL_DAY)
    assert [(x.day, x.event) for x in lines] == [
        (FALL_DAY, "firing"),
        (RECOVERY_DAY, "resolved"),
    ]
    assert lines[1].summary == "reads 1,000 → 1,000 (+0.0 %) from 2025-11-18 to 2025-11-25"
    assert await table(store, "alerts") == []
    assert await table(store, "notifications") == []


async def test_since_starts_the_lifecycle_fresh_with_earlier_points_as_baseline(
    store: Store,
) -> None:
    since = FALL_DAY + timedelta(days=2)
    lines = await run_backtest(config_of(CHANGE), store, since)
    assert lines[0] == fall_line(since)
    assert [(x.day, x.event) for x in lines] == [(since, "firing"), (RECOVERY_DAY, "resolved")]


async def test_for_scope_and_unreplayable_kinds(store: Store) -> None:
    slow = {**CHANGE, "name": "slow", "for": 3}
    fitness_only = {**CHANGE, "name": "fitness", "tags": ["fitness"], "baseline": "previous"}
    floor = {"name": "floor", "kind": "threshold", "metric": "engage", "op": "<", "value": 70}
    stale = {"name": "stale", "kind": "stale", "after": "1h"}
    lines = await run_backtest(config_of(slow, fitness_only, floor, stale), store)
    got = [(x.day.isoformat(), x.rule, x.user_id, x.event) for x in lines]
    assert got == [
        ("2025-11-20", "fitness", LILYY, "firing"),
        ("2025-11-20", "floor", LILYY, "firing"),
        ("2025-11-21", "fitness", LILYY, "resolved"),  # previous day: 600 → 600
        ("2025-11-22", "slow", LILYY, "firing"),  # the third day of the fall
        ("2025-11-25", "floor", LILYY, "resolved"),
        ("2025-11-25", "slow", LILYY, "resolved"),
    ]


async def test_progress_counts_creators_and_lines_read_as_the_cli_prints_them(
    store: Store,
) -> None:
    seen: list[tuple[int, int]] = []
    lines = await run_backtest(config_of(CHANGE), store, progress=lambda *p: seen.append(p))
    assert seen == [(0, 2), (1, 2), (2, 2)]
    assert (lines[0].when, lines[0].scope) == (FALL_DAY, LILYY)
