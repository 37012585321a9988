"""Issue 4's "Done when", end to end over real HTTP: the simulator as the upstream, the real
``fetch.Fetcher`` + ``alerting.Alerting`` + ``notify.Notifier`` with real apprise posting to a
``json://`` receiver, a real SQLite file; the clock is injected and nothing sleeps.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio
from support.alerting import Loop, falling_creator, loop_config, running, table
from support.receiver import Receiver
from support.sim import CAPTURE_TIME, FakeClock, plain_creator

from monitor.service.fetching.slot import SlotFate
from monitor.upstream.simulator import Simulator

PGY = "https://pgy.xiaohongshu.com/solar/pre-trade/blogger-detail/"
CHANGE_RULE = {
    "name": "reads-down",
    "kind": "change",
    "metric": "read",
    "baseline": "previous",
    "pct": -30,
}


@pytest_asyncio.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with Receiver() as r:
        yield r


@pytest_asyncio.fixture
def clock() -> FakeClock:
    return FakeClock(CAPTURE_TIME)


def titles(receiver: Receiver) -> list[str]:
    return [b["title"] for b in receiver.bodies("/alerts")]


async def test_a_40_pct_fall_fires_once_and_resolves_once(
    tmp_path: Path, sim: Simulator, receiver: Receiver, clock: FakeClock, token: str
) -> None:
    user_id, old, new = falling_creator(sim.today())
    config = loop_config(
        f"sqlite+aiosqlite:///{tmp_path}/history.db",
        sim.base_url,
        receiver.url("/alerts"),
        [user_id],
        [CHANGE_RULE],
    )
    async with running(config, clock, token) as loop:
        assert await loop.fetch(user_id) is SlotFate.DONE  # the natural series: nothing fires
        await loop.drain()
        assert titles(receiver) == []

        sim.script_change(user_id, metric="read", factor=0.6)
        for _ in range(3):  # the fall, then two more fetches while it lasts: one message
            clock.advance(minutes=10)
            await loop.fetch(user_id)
            await loop.drain()
        firing = f"[FIRING] Creator 0: reads {old:,} → {new:,} (-40.0 %) · reads-down"
        assert titles(receiver) == [firing]
        [body] = receiver.bodies("/alerts")
        assert body["type"] == "warning"
        assert f"- Reads: {old:,} → {new:,} (-40.0 %), by -{old - new:,}" in body["message"]
        assert f"{PGY}{user_id})" in body["message"]

        sim.clear_script(user_id)
        for _ in range(2):  # the recovery, then one more fetch: one resolution
            clock.advance(minutes=10)
            await loop.fetch(user_id)
            await loop.drain()
        [_, resolution] = titles(receiver)
        # the reading that cleared it (its own drift keeps it within a unit of the old value)
        assert re.fullmatch(
            r"\[RESOLVED\] Creator 0: reads back to [\d,]+ · reads-down", resolution
        )
        assert receiver.bodies("/alerts")[1]["type"] == "success"
        [alert] = await table(loop.store, "alerts")
        assert (alert["rule"], alert["scope"], alert["state"]) == (
            "reads-down",
            user_id,
            "resolved",
        )
        sent = [(n["event"], n["status"]) for n in await table(loop.store, "notifications")]
        assert sent == [("firing", "sent"), ("resolved", "sent")]


async def test_out_of_balance_one_critical_alert_then_a_resume_notice(
    tmp_path: Path, sim: Simulator, receiver: Receiver, clock: FakeClock, token: str
) -> None:
    creators = [plain_creator(), "5c3bf7f70000000000000101", "5c3bf7f70000000000000102"]
    rules = [
        # sensitive on purpose: without inhibition every creator's 601 would fire these
        {"name": "any-failure", "kind": "api_error", "consecutive": 1},
        {"name": "no-fresh-data", "kind": "stale", "after": "2h"},
        {
            "name": "out-of-money",
            "kind": "api_error",
            "codes": [100, 303, 600, 601, 602],
            "severity": "critical",
        },
    ]
    config = loop_config(
        f"sqlite+aiosqlite:///{tmp_path}/history.db",
        sim.base_url,
        receiver.url("/alerts"),
        creators,
        rules,
    )
    async with running(config, clock, token) as loop:
        for user_id in creators:
            assert await loop.fetch(user_id) is SlotFate.DONE
        await loop.account()
        await loop.drain()
        assert titles(receiver) == []

        sim.set_balance(0)
        clock.advance(minutes=1)
        assert await loop.fetch(creators[0]) is SlotFate.KEEP  # 601: every call pauses
        await _paused_for_three_hours(loop, creators)
        assert titles(receiver) == [
            "[CRITICAL] insufficient balance (601): all calls paused",
        ]
        assert receiver.bodies("/alerts")[0]["type"] == "failure"

        sim.set_balance(None)
        clock.advance(minutes=30)
        assert await loop.fetch(creators[0], probe=True) is SlotFate.DONE
        for user_id in creators[1:]:
            assert await loop.fetch(user_id) is SlotFate.DONE
        await loop.account()
        await loop.drain()
        assert titles(receiver) == [
            "[CRITICAL] insufficient balance (601): all calls paused",
            "[RESOLVED] insufficient balance (601): calls resumed",
        ]
        rows = [(a["rule"], a["scope"], a["state"]) for a in await table(loop.store, "alerts")]
        assert rows == [("out-of-money", "account", "resolved")]


async def _paused_for_three_hours(loop: Loop, creators: list[str]) -> None:
    """What the daemon does during the pause: the account job, refused ordinary calls, one
    probe per ``probe_every`` (each one a 601 for another creator), drains."""
    for step in range(6):
        await loop.account()
        assert await loop.fetch(creators[1]) is None  # refused by the budget: not sent
        loop.clock.advance(minutes=30)
        assert await loop.fetch(creators[step % 3], probe=True) is SlotFate.KEEP
        await loop.drain()
