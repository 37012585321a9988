"""The daemon inside its budget, over real HTTP against the simulator, on virtual time: a backlog
never breaks calls_per_minute or daily_calls, the most overdue go first and nobody starves;
303, 601 and 302 pause and resume as SPEC §5 says; a restart neither resets nor double-counts.
"""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from support.daemon import (
    MINUTE,
    InProcess,
    calls_per_day,
    creators,
    daemon_config,
    in_process,
    logged,
    next_shanghai_midnight,
    write_toml,
)
from support.store import first_due

from monitor.config import parse_config
from monitor.policy import cadence
from monitor.upstream.sim_log import CallRecord


def _db_path(url: str) -> Path:
    return Path(url.removeprefix("sqlite+aiosqlite:///"))


def _ledger(url: str) -> dict[str, int]:
    with sqlite3.connect(_db_path(url)) as db:
        return dict(db.execute("SELECT day, calls FROM budget_days").fetchall())


def _everyone_answered(env: InProcess, users: list[str]) -> Callable[[], bool]:
    """True once each of ``users`` has had a core answer (the balance reading names nobody:
    counting its empty id once let "30 ids answered" hold with one creator still waiting)."""
    wanted = set(users)
    return lambda: (
        wanted
        <= {r.user_id for r in env.sim.counters().log if r.endpoint == "core" and r.code == 0}
    )


def _codes(log: list[CallRecord], endpoint: str) -> dict[int | None, int]:
    """How many of ``endpoint``'s calls in ``log`` ended with each code."""
    return dict(Counter(r.code for r in log if r.endpoint == endpoint))


def _due_order(users: list[str], document: dict[str, object], now: object) -> list[str]:
    """The users sorted by the first due time the daemon gives them (most overdue first)."""
    config = parse_config(document)
    variant = config.variants_of(config.creators[0])[0]
    every = config.defaults.every
    key = {u: first_due(cadence.slot_key(u, variant), every, now) for u in users}  # type: ignore[arg-type]
    return sorted(users, key=lambda u: (key[u], cadence.slot_key(u, variant)))


async def test_a_backlog_stays_inside_the_rate_and_the_day_most_overdue_first(
    tmp_path: Path, token: str
) -> None:
    users = creators(120)
    async with in_process(tmp_path, token) as env:
        doc = daemon_config(
            env.sim.base_url,
            env.db_url,
            users,
            budget={"calls_per_minute": 30, "burst": 5, "daily_calls": 100},
        )
        started = env.clock.now
        daemon = env.make(doc)
        await env.run_until(daemon, lambda: len(env.sim.counters().by_series) == 120)
        counters = env.sim.counters()

    midnight = next_shanghai_midnight(started)
    # the balance reading made at start is one of the day's 100 calls: one gate, one cap
    assert [r.endpoint for r in counters.log if r.at < midnight].count("balance") == 1
    day_one = [r.user_id for r in counters.log if r.at < midnight and r.endpoint == "core"]
    after = [r.user_id for r in counters.log if r.at >= midnight]
    assert len(day_one) == len(set(day_one)) == 99  # the daily cap, nobody twice
    assert set(after[:21]) == set(users) - set(day_one)  # the rest go first thing next day
    assert counters.log[100].at - midnight < timedelta(seconds=5)
    assert set(counters.by_code) == {"0"}
    assert counters.max_in_window(MINUTE, by_clock=True) == 30  # saturated, never over
    assert counters.max_in_window(timedelta(seconds=1), by_clock=True) == 5  # the burst
    assert _ledger(env.db_url) == calls_per_day(counters.log)  # every call counted, once
    # most overdue first: the calls follow the due order, give or take the pool of 5
    rank = {u: i for i, u in enumerate(_due_order(users, doc, started))}
    first_calls = [*day_one, *after[:21]]
    assert max(abs(rank[u] - i) for i, u in enumerate(first_calls)) < 5


async def test_nobody_starves_when_demand_is_twice_the_budget(tmp_path: Path, token: str) -> None:
    users = creators(30)
    async with in_process(tmp_path, token) as env:
        # 30 creators every 2 min = 15 calls/min wanted, 8/min allowed
        doc = daemon_config(
            env.sim.base_url,
            env.db_url,
            users,
            budget={"calls_per_minute": 8, "burst": 2},
            every="2m",
        )
        started = env.clock.now
        daemon = env.make(doc)
        end = started + timedelta(minutes=16)
        await env.run_until(daemon, lambda: env.clock.now >= end)
        counters = env.sim.counters()

    assert counters.max_in_window(MINUTE, by_clock=True) == 8
    log = [r for r in counters.log if r.at < end]
    assert 8 * 16 - 4 <= len(log) <= 8 * 16 + 2  # the budget is used, not wasted (+ burst)
    seen: dict[str, list[datetime]] = {}
    for record in log:
        if record.endpoint == "core":  # beside the balance reading made at start
            seen.setdefault(str(record.user_id), []).append(record.at)
    assert set(seen) == set(users)
    counts = sorted(len(times) for times in seen.values())
    assert counts[-1] - counts[0] <= 1  # a fair share each
    # the longest anyone waited between two fetches: 30 creators at 8/min is 3.75 min
    gaps = [b - a for times in seen.values() for a, b in itertools.pairwise(times)]
    assert max(gaps) <= timedelta(minutes=4, seconds=30)


async def test_303_pauses_every_call_until_the_quota_day_turns(
    tmp_path: Path, token: str, info_logs: pytest.LogCaptureFixture
) -> None:
    users = creators(30)
    async with in_process(tmp_path, token, daily_quota=20) as env:
        doc = daemon_config(
            env.sim.base_url, env.db_url, users, budget={"calls_per_minute": 30, "burst": 5}
        )
        midnight = next_shanghai_midnight(env.clock.now)
        daemon = env.make(doc)
        # time stops once every creator has an answer: the counts below are exact
        everyone = _everyone_answered(env, users)
        await env.run_until(daemon, everyone, busy=everyone)
        log = env.sim.counters().log

    # the balance reading made at start is one of the day's 20 calls: 19 creators, then 303
    assert _codes(log, "balance") == {0: 1}
    assert _codes(log, "core") == {0: 30, 303: 1}
    quota = next(r for r in log if r.code == 303)
    assert [r for r in log if quota.at < r.at < midnight] == []  # nothing sent while paused
    resumed = min(r.at for r in log if r.at > quota.at)
    assert midnight <= resumed < midnight + timedelta(seconds=1)
    assert quota.user_id in {r.user_id for r in log if r.at >= midnight and r.code == 0}
    assert len(logged(info_logs.records, "calls paused: daily quota exceeded (code 303)")) == 1
    assert len(logged(info_logs.records, "calls resumed")) == 1
    assert (
        logged(info_logs.records, "failing") == []
    )  # an account-wide pause is not a creator failure


async def test_601_pauses_probes_once_per_interval_and_resumes_by_itself(
    tmp_path: Path, token: str, info_logs: pytest.LogCaptureFixture
) -> None:
    users = creators(20)
    async with in_process(tmp_path, token, balance=10) as env:
        doc = daemon_config(
            env.sim.base_url,
            env.db_url,
            users,
            budget={"calls_per_minute": 30, "burst": 5},
            schedule={"probe_every": "15m"},
        )
        daemon = env.make(doc)
        topped_up: list[datetime] = []

        async def top_up_50_minutes_after_the_first_601() -> None:
            while not any(r.code == 601 for r in env.sim.counters().log):
                await env.vt.sleep(1)
            first = next(r for r in env.sim.counters().log if r.code == 601)
            await env.vt.sleep_until(first.at + timedelta(minutes=50))
            env.sim.set_balance(None)
            topped_up.append(env.clock.now)

        helper = asyncio.get_running_loop().create_task(top_up_50_minutes_after_the_first_601())
        everyone = _everyone_answered(env, users)
        await env.run_until(daemon, everyone, busy=everyone)
        await helper
        log = env.sim.counters().log

    assert _codes(log, "balance") == {0: 1}  # at start, then the probes are the creators'
    assert _codes(log, "core") == {0: 20, 601: 4}
    blocked = [r for r in log if r.code == 601]
    start = blocked[0].at
    # one probe per probe_every, send to send, and nothing else while paused
    assert [r.at - start for r in blocked] == [timedelta(minutes=15 * k) for k in range(4)]
    assert [r for r in log if start < r.at < topped_up[0] and r.code != 601] == []
    # the first probe after the top-up succeeds, and everyone else follows at full rate
    after = [r for r in log if r.at > topped_up[0]]
    assert after[0].at == start + timedelta(minutes=60)
    assert after[0].code == 0
    assert after[-1].at - after[0].at < timedelta(seconds=30)
    assert (
        len(logged(info_logs.records, "calls paused: insufficient account balance (code 601)")) == 1
    )
    assert len(logged(info_logs.records, "calls resumed")) == 1


async def test_302_slows_the_whole_client_then_returns_to_the_configured_rate(
    tmp_path: Path, token: str, info_logs: pytest.LogCaptureFixture
) -> None:
    users = creators(200)
    async with in_process(tmp_path, token) as env:
        doc = daemon_config(
            env.sim.base_url, env.db_url, users, budget={"calls_per_minute": 6, "burst": 2}
        )
        first = _due_order(users, doc, env.clock.now)[0]
        env.sim.force_code(first, 302, times=1)
        t0 = env.clock.now
        daemon = env.make(doc)
        await env.run_until(daemon, lambda: env.clock.now >= t0 + timedelta(minutes=27))
        log = env.sim.counters().log

    limited = [r for r in log if r.code == 302]
    assert len(limited) == 1
    assert limited[0].at == t0
    assert set(env.sim.counters().by_code) == {"0", "302"}

    def calls(start: timedelta, end: timedelta) -> int:
        return sum(t0 + start <= r.at < t0 + end for r in log)

    minute = timedelta(minutes=1)
    assert calls(timedelta(microseconds=1), minute) == 0  # the whole client waits 60 s
    assert calls(minute, 6 * minute) <= 5 * 3 + 1  # then half the rate (3/min) …
    assert calls(21 * minute, 26 * minute) >= 5 * 6 - 1  # … and back at 6/min
    assert env.sim.counters().max_in_window(MINUTE, by_clock=True) <= 6
    assert len(logged(info_logs.records, "upstream rate limit (302)")) == 1
    assert len(logged(info_logs.records, "calls resumed")) == 1


async def test_a_restart_neither_resets_nor_double_counts_nor_refetches(
    tmp_path: Path, token: str
) -> None:
    users = creators(40)
    async with in_process(tmp_path, token) as env:
        doc = daemon_config(
            env.sim.base_url,
            env.db_url,
            users,
            budget={"calls_per_minute": 10, "burst": 5},
            every="1h",
        )
        first = env.make(doc)
        await env.run_until(first, lambda: env.sim.counters().calls >= 25)
        # at once, with the minute's window full: the new process must not burst again
        second = env.make(doc)
        await env.run_until(second, lambda: len(env.sim.counters().by_series) == 40)
        before = env.sim.counters()
        assert before.by_endpoint == {"core": 40, "balance": 2}  # nobody fetched twice; a
        # balance reading at each start
        assert before.max_in_window(MINUTE, by_clock=True) <= 10
        assert _ledger(env.db_url) == calls_per_day(before.log)

        # three hours down: every creator missed two or three slots; each is fetched once,
        # inside the budget, without a burst beyond `burst`
        env.clock.advance(hours=3)
        back = env.clock.now
        third = env.make(doc)
        await env.run_until(third, lambda: env.sim.counters().by_endpoint["core"] >= 80)
        catch_up = [r for r in env.sim.counters().log if r.at >= back and r.endpoint == "core"]

    assert sorted(str(r.user_id) for r in catch_up[:40]) == sorted(users)
    assert env.sim.counters().max_in_window(MINUTE, by_clock=True) <= 10
    assert env.sim.counters().max_in_window(timedelta(seconds=1), by_clock=True) <= 5
    assert catch_up[39].at - back >= timedelta(minutes=3, seconds=30)  # paced, not burst
    assert _ledger(env.db_url) == calls_per_day(env.sim.counters().log)


async def test_a_failing_creator_logs_once_when_it_starts_and_once_when_it_ends(
    tmp_path: Path, token: str, info_logs: pytest.LogCaptureFixture
) -> None:
    flaky, *others = creators(3)
    async with in_process(tmp_path, token) as env:
        env.sim.force_code(flaky, 301, times=5)  # two due times: 3 attempts, then 2 + success
        doc = daemon_config(
            env.sim.base_url,
            env.db_url,
            [flaky, *others],
            schedule={"retry_attempts": 2, "retry_base": "10s", "retry_max": "60s"},
            every="10m",
        )
        daemon = env.make(doc)
        ok = lambda: [r for r in env.sim.counters().log if r.user_id == flaky and r.code == 0]  # noqa: E731
        await env.run_until(daemon, lambda: len(ok()) == 1)
        calls = [r for r in env.sim.counters().log if r.user_id == flaky]

    assert [r.code for r in calls] == [301, 301, 301, 301, 301, 0]
    retries = [b.at - a.at for a, b in itertools.pairwise(calls[:3])]
    assert all(timedelta(0) <= gap <= timedelta(seconds=61) for gap in retries)  # capped backoff
    monitor_lines = [r.getMessage() for r in info_logs.records if r.name.startswith("monitor")]
    failing = [line for line in monitor_lines if "failing" in line]
    assert len(failing) == 1
    assert flaky in failing[0]
    assert "301" in failing[0]
    assert logged(info_logs.records, "recovered after 5 failed calls") == [
        f"creator ({flaky}, DAILY_NOTE/PHOTO_TEXT_AND_VIDEO/DAY_30/ALL) recovered after 5 failed "
        "calls"
    ]
    assert token not in info_logs.text


async def test_a_reload_while_calls_are_on_the_wire_fetches_nothing_twice(
    tmp_path: Path, token: str
) -> None:
    """The reloaded schedule adopts the fetches still running: each records its next due time
    into the new schedule, so the series is not fetched again when its call ends."""
    users = creators(4)
    async with in_process(tmp_path, token, latency_ms=2_000) as env:
        doc = daemon_config(env.sim.base_url, env.db_url, users, every="24h")
        path = write_toml(tmp_path / "config.toml", doc)
        daemon = env.make(doc, config_path=path)
        reloads: list[asyncio.Task[bool]] = []
        started = env.clock.now

        def reload_midway() -> bool:
            wire = daemon.gate.on_the_wire if hasattr(daemon, "gate") else 0
            if not reloads and wire >= len(users):
                reloads.append(asyncio.get_running_loop().create_task(daemon.reload()))
            return env.clock.now - started > timedelta(hours=2)

        await env.run_until(daemon, reload_midway)
        assert reloads, "the calls never were all on the wire at once"
        assert reloads[0].result() is True
    by_user = {user: calls for (user, _label), calls in env.sim.counters().by_series.items()}
    assert by_user == dict.fromkeys(users, 1)
