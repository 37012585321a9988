"""``rules test``: the backtest over a stored history with a scripted fall reports the firing and
the resolution on the right days, writes nothing, and leaves out rules it cannot replay.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest_asyncio
from support.alerting import BO, LILYY, open_store, points, seed, table
from support.sim import FakeClock

from monitor.config import Config, parse_config
from monitor.model import Balance, Creator, FollowerPoint, ListedNote, Note, NoteStats
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


async def test_followers_notes_and_the_balance_are_replayed(store: Store) -> None:
    """Followers day by day, notes at each stored visit (each event once, the baseline never),
    and the balance at each reading, with the days left its own fall shows."""
    ids = {LILYY: await store.find_creator(LILYY), BO: await store.find_creator(BO)}
    lilyy = ids[LILYY]
    assert lilyy is not None
    counts = [10_000] * 10 + [9_800] * 5 + [10_000] * 5  # 2025-11-01 … 2025-11-20
    await store.store_followers(
        lilyy, [FollowerPoint(START + timedelta(days=i), n) for i, n in enumerate(counts)]
    )
    at = datetime(2025, 11, 10, 2, tzinfo=UTC)  # 10:00 in Shanghai
    old = ListedNote(Note(f"{1:024x}", "old", date(2025, 11, 1), False, False), NoteStats(50))
    await store.store_notes(lilyy, [old], at)  # the baseline
    hit = Note(f"{2:024x}", "hit", date(2025, 11, 11), True, True, "Dior")
    for day, reads in ((1, 3_000), (2, 15_000), (3, 40_000)):
        seen = [ListedNote(hit, NoteStats(reads)), old]
        await store.store_notes(lilyy, seen, at + timedelta(days=day))
    for hours, amount in ((0, "1000"), (24, "600"), (48, "200"), (50, "2200")):
        await store.store_balance(at + timedelta(hours=hours), Balance(Decimal(amount)))
    config = parse_config(
        {
            "defaults": {"sources": ["core", "fans", "notes"]},
            "creators": [{"user_id": LILYY, "name": "Lilyy"}, {"user_id": BO, "name": "Bo"}],
            "rules": [
                {"name": "followers", "kind": "change", "metric": "fans", "pct": -1},
                {"name": "new", "kind": "new_note"},
                {
                    "name": "hit",
                    "kind": "note",
                    "metric": "reads",
                    "op": ">=",
                    "value": 10_000,
                    "within": "3d",
                },
                {"name": "money", "kind": "balance", "days_left": 1},
            ],
        }
    )
    lines = await run_backtest(config, store)
    assert [(x.day.isoformat(), x.rule, x.scope, x.event, x.summary) for x in lines] == [
        (
            "2025-11-11",
            "followers",
            LILYY,
            "firing",
            "followers 10,000 → 9,800 (-2.0 %) from 2025-11-10 to 2025-11-11",
        ),
        (
            "2025-11-11",
            "new",
            LILYY,
            "firing",
            "new note “hit” (video, published 2025-11-11, ad: Dior)",
        ),
        (
            "2025-11-12",
            "followers",
            LILYY,
            "resolved",
            "followers 9,800 → 9,800 (+0.0 %) from 2025-11-11 to 2025-11-12",
        ),
        (
            "2025-11-12",
            "hit",
            LILYY,
            "firing",
            "reads 15,000 >= 10,000 within 3d of publishing: “hit” (video, published 2025-11-11, "
            "ad: Dior)",
        ),
        ("2025-11-12", "money", "account", "firing", "balance 200.00 CNY, 0.5 days left < 1"),
        ("2025-11-12", "money", "account", "resolved", "balance 2,200.00 CNY, 5.7 days left ≥ 1"),
    ]
