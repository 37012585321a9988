"""The alerting glue on a real store (SQLite file and PostgreSQL): inhibition of per-creator
errors and staleness by the account, orphaned alerts resolving, and two instances evaluating the
same alert writing one transition and one message.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import pytest_asyncio
from support.alerting import BO, LILYY, open_store, points, seed, table
from support.sim import FakeClock

from monitor.config import Config, parse_config
from monitor.model import Creator, Variant
from monitor.policy.rules import AccountSubject
from monitor.service.alerting.evaluation import Alerting, SeriesFacts
from monitor.store import Store

T0 = datetime.fromisoformat("2025-12-11T02:00:00+00:00")
START = date(2025, 11, 20)
LILYY_C = Creator(LILYY, "Lilyy", ("fitness",))
BO_C = Creator(BO, "Bo", ("food",))
FALL = {"name": "reads-down", "kind": "change", "metric": "read", "pct": -30}
SLOW = {"name": "reads-down-slow", "kind": "change", "metric": "read", "pct": -30, "for": 3}
ACCOUNT = {"name": "out-of-money", "kind": "api_error", "codes": [601], "severity": "critical"}


def config_of(*rules: dict[str, Any], creators: tuple[Creator, ...] = (LILYY_C, BO_C)) -> Config:
    return parse_config(
        {
            "creators": [{"user_id": c.user_id, "name": c.name, "tags": c.tags} for c in creators],
            "channels": [
                {"name": "slack", "url": "json://127.0.0.1:9/a"},
                {"name": "mail", "url": "json://127.0.0.1:9/b", "language": "zh"},
            ],
            "rules": list(rules),
        }
    )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest_asyncio.fixture
async def store(db_url: str, clock: FakeClock) -> AsyncIterator[Store]:
    opened = await open_store(db_url, clock)
    try:
        yield opened
    finally:
        await opened.close()


def account(*, paused: int | None = None, now: datetime = T0) -> AccountSubject:
    return AccountSubject(now=now, used_today=10, daily_calls=2000, pause_code=paused)


def facts(
    *, code: int | None = 0, failures: int = 0, success: datetime | None = T0
) -> list[SeriesFacts]:
    return [SeriesFacts(Variant(), success, failures, code, T0 - timedelta(days=30))]


async def fire_fall(store: Store, alerting: Alerting, ids: dict[str, int]) -> None:
    """Lilyy's reads fall 40 % on the newest day: evaluate her."""
    await alerting.evaluate_creator(ids[LILYY], LILYY_C, facts(), account())


async def seeded(store: Store) -> dict[str, int]:
    series = {LILYY: points(START, [1000] * 20 + [600]), BO: points(START, [800] * 21)}
    return await seed(store, [LILYY_C, BO_C], series, T0)


async def test_an_account_wide_code_never_fires_a_creator_error_even_after_the_pause(
    store: Store, clock: FakeClock
) -> None:
    # a creator with two variants: one was the probe that resumed the account, the other still
    # carries the 601 of its last attempt; only a real per-creator failure may fire
    rule = {"name": "failing", "kind": "api_error", "codes": [301, 601], "consecutive": 3}
    ids = await seeded(store)
    alerting = Alerting(config_of(rule), store, clock=clock)
    assert await alerting.evaluate_creator(ids[LILYY], LILYY_C, facts(code=601), account()) == 0
    assert (
        await alerting.evaluate_creator(
            ids[LILYY], LILYY_C, facts(code=601, failures=5), account(paused=601)
        )
        == 0
    )
    assert await table(store, "alerts") == []
    assert await alerting.evaluate_creator(ids[BO], BO_C, facts(code=301, failures=3), account())
    [alert] = await table(store, "alerts")
    assert (alert["rule"], alert["scope"], alert["state"]) == ("failing", BO, "firing")


async def test_stale_is_held_while_the_account_is_paused(store: Store, clock: FakeClock) -> None:
    rule = {"name": "stale", "kind": "stale", "after": "48h"}
    ids = await seeded(store)
    alerting = Alerting(config_of(rule), store, clock=clock)
    old = facts(code=601, failures=4, success=T0 - timedelta(days=3))
    assert await alerting.evaluate_creator(ids[LILYY], LILYY_C, old, account(paused=601)) == 0
    assert await table(store, "alerts") == []
    # the account works again but this creator still has no fresh data: now it fires
    assert await alerting.evaluate_creator(ids[LILYY], LILYY_C, old, account()) == 2
    [alert] = await table(store, "alerts")
    assert (alert["rule"], alert["state"]) == ("stale", "firing")


async def test_a_removed_rule_resolves_with_a_note_where_its_firing_went(
    store: Store, clock: FakeClock
) -> None:
    ids = await seeded(store)
    firing_to_slack = {**FALL, "channels": ["slack"]}
    alerting = Alerting(config_of(firing_to_slack, SLOW), store, clock=clock)
    await fire_fall(store, alerting, ids)
    before = await table(store, "alerts")
    assert [(a["rule"], a["state"]) for a in before] == [
        ("reads-down", "firing"),
        ("reads-down-slow", "pending"),
    ]

    clock.advance(hours=1)
    alerting.reconfigure(config_of())  # both rules removed
    assert await alerting.evaluate_account(account(now=clock())) == 1
    [alert] = await table(store, "alerts")  # the pending one is dropped quietly
    assert (alert["rule"], alert["state"], alert["resolved_at"]) == (
        "reads-down",
        "resolved",
        clock(),
    )
    assert alert["details"]["orphaned"] is True
    messages = [(n["channel"], n["event"]) for n in await table(store, "notifications")]
    assert messages == [("slack", "firing"), ("slack", "resolved")]
    resolution = (await table(store, "notifications"))[1]
    assert resolution["title"].startswith("[RESOLVED] Lilyy: reads 1,000 → 600 (-40.0 %)")
    assert resolution["body"].endswith(
        "_No longer evaluated: the rule 'reads-down' was removed from the config._\n"
    )
    # swept once per configuration: a second account evaluation queues nothing more
    assert await alerting.evaluate_account(account(now=clock())) == 0


async def test_a_creator_leaving_the_scope_or_the_config_resolves(
    store: Store, clock: FakeClock
) -> None:
    ids = await seeded(store)
    alerting = Alerting(config_of(FALL), store, clock=clock)
    await fire_fall(store, alerting, ids)
    alerting.reconfigure(config_of({**FALL, "tags": ["food"]}))  # Lilyy is not 'food'
    assert await alerting.evaluate_account(account()) == 2
    resolved = [n for n in await table(store, "notifications") if n["event"] == "resolved"]
    assert [n["channel"] for n in resolved] == ["slack", "mail"]
    assert resolved[1]["body"].endswith(
        f"_不再评估：the creator {LILYY} left the scope of the rule 'reads-down'_\n"
    )

    await store.sync_creators([LILYY_C, BO_C])
    await fire_fall(store, Alerting(config_of(FALL), store, clock=clock), ids)
    gone = Alerting(config_of(FALL, creators=(BO_C,)), store, clock=clock)
    assert await gone.evaluate_account(account()) == 2
    states = [(a["rule"], a["scope"], a["state"]) for a in await table(store, "alerts")]
    assert states == [("reads-down", LILYY, "resolved")] * 2
    last = (await table(store, "notifications"))[-2]
    assert last["body"].endswith(
        f"_No longer evaluated: the creator {LILYY} is no longer tracked._\n"
    )


async def test_two_instances_write_one_firing_and_one_resolution(
    store: Store, db_url: str, clock: FakeClock
) -> None:
    other = Store.open(db_url, clock=clock)
    try:
        config = config_of(ACCOUNT)
        a = Alerting(config, store, clock=clock)
        b = Alerting(config, other, clock=clock)
        await asyncio.gather(a.evaluate_account(account()), b.evaluate_account(account()))
        paused = account(paused=601)
        await asyncio.gather(a.evaluate_account(paused), b.evaluate_account(paused))
        clock.advance(minutes=5)
        resumed = account(now=clock())
        await asyncio.gather(a.evaluate_account(resumed), b.evaluate_account(resumed))
    finally:
        await other.close()
    events = [(n["channel"], n["event"]) for n in await table(store, "notifications")]
    assert events == [
        ("slack", "firing"),
        ("mail", "firing"),
        ("slack", "resolved"),
        ("mail", "resolved"),
    ]
    [alert] = await table(store, "alerts")
    assert (alert["scope"], alert["state"], alert["resolved_at"]) == (
        "account",
        "resolved",
        clock(),
    )


async def test_a_pause_that_ends_and_comes_back_within_seconds_is_one_alert(
    store: Store, clock: FakeClock
) -> None:
    """The balance ran out with calls on the wire: the pause ends for 0.1 s and comes back.
    The account rules see it through the gate, as the daemon evaluates them at each change:
    one [CRITICAL] is queued, not [CRITICAL], [RESOLVED], [CRITICAL]."""
    from monitor.errors import AccountBlocked
    from monitor.policy.budget import BudgetPolicy
    from monitor.service.fetching.gate import ACCOUNT_HYSTERESIS, BudgetGate

    alerting = Alerting(config_of(ACCOUNT), store, clock=clock)
    budget = BudgetPolicy(calls_per_minute=60, burst=5, daily_calls=2000, zone=ZoneInfo("UTC"))
    gate = await BudgetGate.open(budget, store, clock=clock)
    queued = []
    for outcome in (AccountBlocked("no balance", code=601), None, AccountBlocked("x", code=601)):
        await gate.probe_now()
        ticket = await gate.acquire(probe=True, wait=False)
        clock.advance(milliseconds=50)
        await gate.feedback(outcome, billed=outcome is None, sent_at=ticket.sent_at)
        gate.answered()
        queued.append(await alerting.evaluate_account(await gate.account()))
    assert queued == [2, 0, 0]  # one [CRITICAL] (to both channels); no resolution, no repeat
    # the end that holds is told, once the hysteresis has passed
    await gate.probe_now()
    ticket = await gate.acquire(probe=True, wait=False)
    await gate.feedback(None, billed=True, sent_at=ticket.sent_at)
    assert await alerting.evaluate_account(await gate.account()) == 0
    clock.advance(seconds=ACCOUNT_HYSTERESIS.total_seconds() + 1)
    assert await alerting.evaluate_account(await gate.account()) == 2  # resolved, 2 channels
