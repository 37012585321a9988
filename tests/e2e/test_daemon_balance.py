"""The daemon's balance job, in process on virtual time against the simulator over HTTP: a 601
pause ends at the first reading that shows money, not at the next probe; an endpoint that does
not answer is warned about once while every creator is still fetched; a reload applies a
changed ``[account] balance_every``. The job runs on the daemon's scheduler (``balance_tick``
shortened); virtual time waits while a reading is due, as it waits for a call on the wire."""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from support.daemon import InProcess, creators, daemon_config, in_process, logged, write_toml

from monitor.daemon import Daemon

TICK = 0.01  # real seconds between the balance job's looks


def _reading_due(env: InProcess, daemon: Daemon) -> Callable[[], bool]:
    return lambda: hasattr(daemon, "balance") and daemon.balance.due(env.clock.now)


async def test_a_601_pause_ends_at_the_first_reading_with_money_not_the_next_probe(
    tmp_path: Path, token: str, info_logs: pytest.LogCaptureFixture
) -> None:
    users = creators(20)
    async with in_process(tmp_path, token, balance=Decimal("0.5"), call_price="0.05") as env:
        doc = daemon_config(
            env.sim.base_url,
            env.db_url,
            users,
            budget={"calls_per_minute": 30, "burst": 5},
            schedule={"probe_every": "15m"},
        )
        daemon = env.make(doc, balance_tick=TICK)
        topped_up: list[datetime] = []

        async def top_up_50_minutes_after_the_first_601() -> None:
            while not any(r.code == 601 for r in env.sim.counters().log):
                await env.vt.sleep(1)
            first = next(r for r in env.sim.counters().log if r.code == 601)
            await env.vt.sleep_until(first.at + timedelta(minutes=50))
            env.sim.set_balance(Decimal(100))
            topped_up.append(env.clock.now)

        helper = asyncio.get_running_loop().create_task(top_up_50_minutes_after_the_first_601())
        ok = lambda: {r.user_id for r in env.sim.counters().log if r.code == 0}  # noqa: E731
        await env.run_until(daemon, lambda: len(ok()) == 21, busy=_reading_due(env, daemon))
        await helper
        log = env.sim.counters().log

    core = [r for r in log if r.endpoint == "core"]
    blocked = [r for r in core if r.code == 601]
    start = blocked[0].at
    # probes at 0, 15, 30 and 45 minutes; none at 60: the reading after the top-up ended it
    assert [r.at - start for r in blocked] == [timedelta(minutes=15 * k) for k in range(4)]
    resumed = next(r for r in core if r.at > topped_up[0])
    assert resumed.code == 0
    assert resumed.at - topped_up[0] <= timedelta(minutes=1, seconds=5)
    assert resumed.at < start + timedelta(minutes=60)
    # while money was wanting, the balance was read about once a minute, past the pause
    readings = [r for r in log if r.endpoint == "balance" and start < r.at <= resumed.at]
    assert 45 <= len(readings) <= 52
    assert {r.code for r in readings} == {0}
    assert all(b.at - a.at >= timedelta(minutes=1) for a, b in itertools.pairwise(readings))
    assert (
        len(logged(info_logs.records, "calls paused: insufficient account balance (code 601)")) == 1
    )
    assert len(logged(info_logs.records, "calls resumed")) == 1
    assert token not in info_logs.text


async def test_an_endpoint_that_does_not_answer_is_warned_about_once_and_fetching_goes_on(
    tmp_path: Path, token: str, info_logs: pytest.LogCaptureFixture
) -> None:
    users = creators(8)
    async with in_process(tmp_path, token, balance_endpoint=False) as env:
        doc = daemon_config(env.sim.base_url, env.db_url, users, every="1h")
        daemon = env.make(doc, balance_tick=TICK)
        end = env.clock.now + timedelta(hours=3)
        await env.run_until(daemon, lambda: env.clock.now >= end, busy=_reading_due(env, daemon))
        counters = env.sim.counters()

    assert counters.by_endpoint["balance"] == 1  # at start; never again until the next start
    assert len(counters.by_series) == 8
    assert min(counters.by_series.values()) >= 3  # every creator, every hour
    assert logged(info_logs.records, "the balance endpoint does not answer") == [
        "the balance endpoint does not answer (gateway error without envelope: 404 Not Found, "
        "HTTP 404): the balance is not read again until the next start; fetching goes on"
    ]


async def test_a_reload_applies_a_changed_balance_every(tmp_path: Path, token: str) -> None:
    users = creators(3)
    async with in_process(tmp_path, token) as env:
        doc = daemon_config(
            env.sim.base_url, env.db_url, users, extra={"account": {"balance_every": "off"}}
        )
        path = write_toml(tmp_path / "config.toml", doc)
        daemon = env.make(doc, balance_tick=TICK, config_path=path)
        seen_before: list[int] = []

        async def reload_once_fetched() -> None:
            while len(env.sim.counters().by_series) < 3:
                await asyncio.sleep(0.01)
            seen_before.append(env.sim.counters().by_endpoint.get("balance", 0))
            write_toml(path, doc | {"account": {"balance_every": "2h"}})
            assert await daemon.reload()

        helper = asyncio.get_running_loop().create_task(reload_once_fetched())
        started = env.clock.now
        await env.run_until(
            daemon,
            lambda: env.clock.now >= started + timedelta(hours=5),
            busy=_reading_due(env, daemon),
        )
        await helper
        readings = [r.at for r in env.sim.counters().log if r.endpoint == "balance"]

    assert seen_before == [0]  # "off": not even at start
    # read at once after the reload, then every 2 hours (give or take the dispatcher's nap of
    # 60 s, the step in which virtual time moves while nothing is due)
    assert len(readings) == 3
    gaps = [b - a for a, b in itertools.pairwise(readings)]
    assert all(timedelta(hours=2) <= gap <= timedelta(hours=2, minutes=1) for gap in gaps)


def _alerts(url: str, rule: str) -> list[tuple[str, str]]:
    with sqlite3.connect(url.removeprefix("sqlite+aiosqlite:///")) as db:
        return db.execute(
            "SELECT state, summary FROM alerts WHERE rule = ? ORDER BY id", (rule,)
        ).fetchall()


async def test_money_running_low_fires_the_balance_rule_and_a_top_up_resolves_it(
    tmp_path: Path, token: str
) -> None:
    """The whole way for ``kind = "balance"``: billed calls take the simulator's balance down,
    the job reads it through the gate, the price per call and the days left are derived, the
    rule fires on the account once below its line, and resolves at the reading after money is
    added."""
    users = creators(10)
    async with in_process(tmp_path, token, balance=Decimal("40"), call_price="1") as env:
        doc = daemon_config(
            env.sim.base_url,
            env.db_url,
            users,
            every="1h",
            extra={
                "account": {"balance_every": "10m"},
                "rules": [{"name": "money-low", "kind": "balance", "below": 25}],
                "channels": [{"name": "team", "url": "json://127.0.0.1:9/t"}],
            },
        )
        daemon = env.make(doc, balance_tick=TICK)
        fired = lambda: any(s == "firing" for s, _ in _alerts(env.db_url, "money-low"))  # noqa: E731
        await env.run_until(daemon, fired, busy=_reading_due(env, daemon))
        funds = daemon.gate.funds
        env.sim.set_balance(Decimal(500))
        daemon = env.make(doc, balance_tick=TICK)
        resolved = lambda: _alerts(env.db_url, "money-low")[-1][0] == "resolved"  # noqa: E731
        await env.run_until(daemon, resolved, busy=_reading_due(env, daemon))

    # one unit per billed call, as the simulator takes: derived from the readings and the
    # billed calls recorded between them
    assert funds.price == Decimal(1)
    assert funds.balance is not None
    assert funds.balance < 25
    assert funds.days_left is not None
    assert funds.days_left < 1  # 10 creators hourly: 240 billed calls a day, at 1 CNY each
    states = [s for s, _ in _alerts(env.db_url, "money-low")]
    assert states == ["resolved"]  # one alert: fired, then resolved by the top-up
