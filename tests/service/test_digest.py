"""The daily digest on a real store: its content (the top mover first, alerts of the last 24 h,
yesterday's budget, failing creators), queued once per channel per local day across restarts and
two instances, and delivered by the real notifier to a ``json://`` receiver.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import pytest_asyncio
from support.alerting import BO, LILYY, MIA, open_store, points, seed, table
from support.receiver import Receiver
from support.sim import FakeClock

from monitor.config import Config, parse_config
from monitor.model import AlertState, Balance, Creator, DailyPoint, Phase, Severity, Variant
from monitor.notify.sender import Notifier
from monitor.policy.budget import BudgetPolicy
from monitor.policy.delivery import DeliveryPolicy
from monitor.service.fetching.budget_view import ledger_day
from monitor.service.fetching.gate import BudgetGate
from monitor.service.reporting.digest import build_digest, queue_due_digest, week_movers
from monitor.store import FetchRecord, Store

#: 2025-12-11 09:00 in Asia/Shanghai
NINE = datetime.fromisoformat("2025-12-11T01:00:00+00:00")
SHANGHAI = ZoneInfo("Asia/Shanghai")
START = date(2025, 11, 20)  # 21 points: the newest is 2025-12-10
CREATORS = (
    Creator(LILYY, "Lilyy", ("fitness",)),
    Creator(BO, "Bo", ("food",)),
    Creator(MIA, "Mia", ("beauty",)),
)
URL = "https://pgy.xiaohongshu.com/solar/pre-trade/blogger-detail/"


def config_of(db_url: str, hook: str = "json://127.0.0.1:9", **notify: Any) -> Config:
    return parse_config(
        {
            "budget": {"daily_calls": 2000, "timezone": "Asia/Shanghai"},
            "storage": {"url": db_url},
            "notify": {"digest_at": "09:00", **notify},
            "creators": [{"user_id": c.user_id, "name": c.name, "tags": c.tags} for c in CREATORS],
            "channels": [
                {"name": "slack", "url": f"{hook}/slack"},
                {"name": "mail", "url": f"{hook}/mail", "language": "zh"},
                {"name": "pager", "url": f"{hook}/pager", "digest": False},
            ],
        }
    )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NINE)


@pytest_asyncio.fixture
async def store(db_url: str, clock: FakeClock) -> AsyncIterator[Store]:
    opened = await open_store(db_url, clock)
    try:
        await _history(opened)
        yield opened
    finally:
        await opened.close()


async def _history(store: Store) -> None:
    """Week over week: Lilyy -50 %, Bo +20 %, Mia -10 % and failing twice; three alerts; calls."""
    series = {
        LILYY: points(START, [1000] * 14 + [500] * 7),
        BO: points(START, [800] * 14 + [960] * 7),
        MIA: points(START, [700] * 14 + [630] * 7),
    }
    ids = await seed(store, CREATORS, series, NINE - timedelta(hours=20))
    for minutes in (10, 20):
        await store.record_fetches(
            [
                FetchRecord(
                    ids[MIA],
                    Variant(),
                    started_at=NINE - timedelta(minutes=minutes),
                    due_at=None,
                    latency_ms=3,
                    http_status=200,
                    code=500,
                    billed=False,
                    error="SERVER ERROR",
                    data=None,
                    raw_body=None,
                )
            ]
        )
    day = timedelta(days=1)
    await _alert(store, ids[LILYY], LILYY, "reads-down", fired=NINE - timedelta(hours=2))
    await _alert(
        store, ids[BO], BO, "engage-floor", fired=NINE - 2 * day, resolved=NINE - timedelta(hours=1)
    )
    await _alert(store, ids[BO], BO, "old-news", fired=NINE - 3 * day, resolved=NINE - 2 * day)
    # calls through the one gate: three on the 10th and one on the 11th (Shanghai days)
    for moment in [NINE - day] * 3 + [NINE - timedelta(minutes=30)]:
        budget = BudgetPolicy(calls_per_minute=600, burst=100, daily_calls=2000, zone=SHANGHAI)
        gate = await BudgetGate.open(budget, store, clock=lambda moment=moment: moment)
        await gate.acquire(wait=False)
        gate.answered()


async def _alert(
    store: Store,
    creator_id: int,
    scope: str,
    rule: str,
    *,
    fired: datetime,
    resolved: datetime | None = None,
) -> None:
    row = AlertState(
        rule=rule,
        creator_id=creator_id,
        scope=scope,
        severity=Severity.WARNING,
        state=Phase.FIRING if resolved is None else Phase.RESOLVED,
        summary=f"{rule} summary",
        pending_since=fired,
        fired_at=fired,
        resolved_at=resolved,
        firing_sent=True,
    )
    assert await store.commit_transition(row, [], now=fired, expect=None)


async def test_the_digest_ranks_the_top_mover_first(store: Store, db_url: str) -> None:
    digest = await build_digest(config_of(db_url), store, NINE)
    assert digest.day == date(2025, 12, 10)
    assert (digest.budget_used, digest.daily_calls) == (3, 2000)
    assert [(a.rule, a.creator.name if a.creator else None) for a in digest.fired] == [
        ("reads-down", "Lilyy")
    ]
    assert [a.rule for a in digest.resolved] == ["engage-floor"]
    assert [(f.creator.name, f.failures, f.last_code) for f in digest.failing] == [("Mia", 2, 500)]

    await queue_due_digest(config_of(db_url), store, NINE)
    slack = next(n for n in await table(store, "notifications") if n["channel"] == "slack")
    assert slack["title"] == "Daily digest 2025-12-10: 1 fired, 1 resolved, 1 failing"
    reads = slack["body"].split("**Reads**\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert reads == [
        f"- [Lilyy]({URL}{LILYY}): 1,000 → 500 (-50.0 %)",
        f"- [Bo]({URL}{BO}): 800 → 960 (+20.0 %)",
        f"- [Mia]({URL}{MIA}): 700 → 630 (-10.0 %)",
    ]
    assert "**Budget:** 3 of 2,000 calls used (0.1 %)" in slack["body"]
    assert "`reads-down` Lilyy (warning): reads-down summary" in slack["body"]
    assert "old-news" not in slack["body"]
    assert "Mia](" in slack["body"].split("## Creators failing", 1)[1]
    assert "**Balance:**" not in slack["body"]  # never read: no line rather than a guess


async def test_the_digest_shows_the_balance_the_price_per_call_and_the_days_left(
    store: Store, db_url: str
) -> None:
    # read at 07:00 and 08:00 Shanghai, 40 calls billed between: 2.00 spent at 0.05 a call
    budget = BudgetPolicy(calls_per_minute=600, burst=100, daily_calls=2000, zone=SHANGHAI)
    first = NINE - timedelta(hours=2)
    await store.store_balance(first, Balance(Decimal("100.0000")))
    creator_id = await store.find_creator(LILYY)
    assert creator_id is not None
    for quarter in range(4):
        for n in range(10):
            sent = first + timedelta(minutes=15 * quarter, seconds=n + 1)
            await store.count_billed(ledger_day(budget, sent))
            # recorded as the fetch records it: the price counts these billed calls
            await store.record_fetch(FetchRecord(creator_id, Variant(), sent, code=0, billed=True))
    await store.store_balance(NINE - timedelta(hours=1), Balance(Decimal("98.0000")))
    digest = await build_digest(config_of(db_url), store, NINE)
    assert (digest.balance, digest.price_per_call) == (Decimal("98.0000"), Decimal("0.05"))
    assert digest.days_left == pytest.approx(98 / (0.05 * 3))  # 3 creators once a day

    await queue_due_digest(config_of(db_url), store, NINE)
    bodies = {n["channel"]: n["body"] for n in await table(store, "notifications")}
    assert (
        "**Budget:** 3 of 2,000 calls used (0.1 %)\n\n"
        "**Balance:** 98.00 CNY · 0.0500 CNY per call · 653 days left at the plan\n\n"
        "## Top movers"
    ) in bodies["slack"]
    assert "**余额：** 98.00 CNY · 每次调用 0.0500 CNY · 按当前计划约可用 653 天" in bodies["mail"]


async def test_the_digest_says_each_alert_in_the_channel_language(
    store: Store, db_url: str
) -> None:
    """A Chinese channel's digest reads its alerts in Chinese, from their stored numbers."""
    [row] = [r for r in await store.list_alerts() if r.rule == "reads-down"]
    fired = NINE - timedelta(hours=2)
    assert await store.commit_transition(
        AlertState(
            id=row.id,
            rule="reads-down",
            creator_id=1,
            scope=LILYY,
            severity=Severity.WARNING,
            state=Phase.FIRING,
            metric="read",
            value=500.0,
            baseline=1000.0,
            summary="reads 1,000 → 500 (-50.0 %) from 2025-12-03 to 2025-12-10",
            details={
                "kind": "change",
                "change_pct": -50.0,
                "date": "2025-12-10",
                "baseline_date": "2025-12-03",
                "rolling_median": True,
            },
            pending_since=fired,
            fired_at=fired,
            firing_sent=True,
        ),
        [],
        now=fired,
        expect=None,
    )
    await queue_due_digest(config_of(db_url), store, NINE)
    bodies = {n["channel"]: n["body"] for n in await table(store, "notifications")}
    assert "Lilyy（警告）：阅读 1,000 → 500（-50.0 %），2025-12-03 至 2025-12-10" in bodies["mail"]
    assert (
        "Lilyy (warning): reads 1,000 → 500 (-50.0 %) from 2025-12-03 to 2025-12-10"
        in (bodies["slack"])
    )


async def test_queued_once_per_channel_per_local_day(
    store: Store, db_url: str, clock: FakeClock
) -> None:
    config = config_of(db_url)
    clock.now = NINE - timedelta(minutes=1)
    assert await queue_due_digest(config, store, clock()) == []
    clock.now = NINE
    assert len(await queue_due_digest(config, store, clock())) == 2
    clock.advance(minutes=30)
    assert await queue_due_digest(config, store, clock()) == []
    async with Store.open(db_url, clock=clock) as restarted:  # a restart at 15:00 the same day
        clock.now = NINE + timedelta(hours=6)
        assert await queue_due_digest(config, restarted, clock()) == []
    clock.now = NINE + timedelta(hours=23)  # 08:00 the next day: not yet
    assert await queue_due_digest(config, store, clock()) == []
    clock.now = NINE + timedelta(days=1, minutes=5)
    assert len(await queue_due_digest(config, store, clock())) == 2
    rows = [
        (n["channel"], n["event"], n["created_at"]) for n in await table(store, "notifications")
    ]
    assert rows == [
        ("slack", "digest", NINE),
        ("mail", "digest", NINE),
        ("slack", "digest", NINE + timedelta(days=1, minutes=5)),
        ("mail", "digest", NINE + timedelta(days=1, minutes=5)),
    ]
    mail = (await table(store, "notifications"))[1]
    assert mail["title"] == "每日摘要 2025-12-10：新告警 1 条，恢复 1 条，抓取失败达人 1 位"


async def test_two_instances_queue_one_digest_per_channel(
    store: Store, db_url: str, clock: FakeClock
) -> None:
    config = config_of(db_url)
    async with Store.open(db_url, clock=clock) as other:
        queued = await asyncio.gather(
            queue_due_digest(config, store, NINE), queue_due_digest(config, other, NINE)
        )
    assert sorted(len(ids) for ids in queued) == [0, 2]
    assert [n["channel"] for n in await table(store, "notifications")] == ["slack", "mail"]


async def test_no_digest_without_digest_at(store: Store, db_url: str) -> None:
    config = config_of(db_url).model_copy(
        update={"notify": config_of(db_url).notify.model_copy(update={"digest_at": None})}
    )
    assert await queue_due_digest(config, store, NINE + timedelta(hours=5)) == []


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_the_digest_is_delivered_through_the_outbox(
    store: Store, db_url: str, tmp_path: Path
) -> None:
    async with Receiver() as receiver:
        config = config_of(db_url, hook=receiver.url(""))
        await queue_due_digest(config, store, NINE)
        async with Notifier.from_config(
            store,
            config,
            owner="t",
            environ={},
            policy=DeliveryPolicy.from_config(config),
            jitter=0.0,
        ) as notifier:
            report = await notifier.drain(NINE)
    assert report.sent == 2
    assert [b["title"][:12] for b in receiver.bodies("/slack")] == ["Daily digest"]
    assert [b["type"] for b in receiver.bodies("/mail")] == ["info"]
    assert receiver.bodies("/pager") == []


def test_week_movers_need_a_fresh_point_and_one_a_week_older() -> None:
    creator = Creator(LILYY, "Lilyy")
    series = [DailyPoint(date(2025, 12, d), read=100 * d, imp=1000, engage=None) for d in (1, 3, 8)]
    [imp, read] = week_movers(creator, series, date(2025, 12, 9))
    assert (read.metric, read.old, read.new, imp.change_pct) == ("read", 100.0, 800.0, 0.0)
    assert week_movers(creator, series, date(2025, 12, 16)) == []  # newest is over a week old
    assert week_movers(creator, series[1:], date(2025, 12, 9)) == []  # 3rd → 8th: under a week
