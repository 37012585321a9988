"""``schedule.max_in_flight``: "auto" sizes the pool from the budget and the observed latency."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from pathlib import Path

import pytest
from support.daemon import creators, daemon_config

from monitor.config import parse_config
from monitor.daemon import Daemon
from monitor.daemon.options import Options
from monitor.errors import ConfigError
from monitor.policy.concurrency import AUTO_CAP, WINDOW, InFlightSizer, needed_in_flight, pool_size
from monitor.store import migrate
from monitor.upstream.simulator import SimKnobs, Simulator


def test_auto_is_the_default_and_an_integer_is_a_fixed_cap() -> None:
    assert parse_config({}).schedule.max_in_flight == "auto"
    fixed = parse_config({"schedule": {"max_in_flight": 7}})
    sizer = InFlightSizer.from_config(fixed)
    for _ in range(50):
        sizer.observe(30.0)
    assert sizer.limit() == 7
    assert pool_size(fixed) == 7 + 1  # and one for the balance reading
    assert pool_size(parse_config({})) == AUTO_CAP + 1
    assert pool_size(parse_config({"account": {"balance_every": "off"}})) == AUTO_CAP


@pytest.mark.parametrize("bad", ["fast", 0, 257])
def test_other_values_are_config_errors(bad: object) -> None:
    with pytest.raises(ConfigError, match=r"schedule\.max_in_flight"):
        parse_config({"schedule": {"max_in_flight": bad}})


def test_littles_law_with_headroom_within_the_cap() -> None:
    # 10 calls/s at 0.5 s: 5 in flight on average, more for the bunching of a long tail
    assert needed_in_flight(600, 0.5) == 16
    assert needed_in_flight(600, 1.0) == 26
    assert needed_in_flight(30, 1.0) == 4
    assert needed_in_flight(30, 0.0) == 1
    assert needed_in_flight(600, 30.0) == AUTO_CAP
    # the pool covers the mean in flight (rate x latency) in every case below the cap
    for rate in (30, 120, 600):
        for latency in (0.2, 0.5, 1.0, 2.0):
            size = needed_in_flight(rate, latency)
            assert size == AUTO_CAP or size >= 1.5 * rate / 60 * latency


def test_auto_follows_the_latency_up_and_down() -> None:
    sizer = InFlightSizer.from_config(parse_config({"budget": {"calls_per_minute": 600}}))
    assert sizer.limit() == 26  # the 1 s guess before any answer
    for _ in range(300):
        sizer.observe(2.0)
    slow = sizer.limit()
    assert sizer.latency == pytest.approx(2.0, rel=0.01)
    assert slow == needed_in_flight(600, 2.0)
    for _ in range(300):
        sizer.observe(0.25)
    assert sizer.latency == pytest.approx(0.25, rel=0.01)
    assert sizer.limit() == needed_in_flight(600, 0.25) < slow


def test_a_reload_keeps_the_latency_and_takes_the_new_rate() -> None:
    sizer = InFlightSizer.from_config(parse_config({}))
    for _ in range(100):
        sizer.observe(1.0)
    sizer.retune(parse_config({"budget": {"calls_per_minute": 600}}))
    assert sizer.latency == pytest.approx(1.0)
    assert sizer.limit() == 26
    sizer.retune(parse_config({"schedule": {"max_in_flight": 2}}))
    assert sizer.limit() == 2


def test_the_latency_is_the_mean_of_recent_calls_not_their_median() -> None:
    """Little's law needs the mean: one 20 s call among nineteen 1 s ones counts fully."""
    sizer = InFlightSizer.from_config(parse_config({"budget": {"calls_per_minute": 600}}))
    for n in range(WINDOW * 3):
        sizer.observe(20.0 if n % 20 == 0 else 1.0)
    assert sizer.latency == pytest.approx((19 + 20) / 20, rel=0.02)
    assert sizer.limit() == needed_in_flight(600, sizer.latency)


async def test_the_daemon_with_auto_keeps_enough_calls_on_the_wire(
    tmp_path: Path, token: str
) -> None:
    """600/min against a 0.5 s upstream needs about 5 calls under way: the old fixed default
    (4) could not get there; "auto" does, and the budget still gates every call."""
    db_url = f"sqlite+aiosqlite:///{tmp_path}/auto.db"
    await migrate.upgrade(db_url)
    async with Simulator(SimKnobs(latency_ms=500, calls_per_minute=600)) as sim:
        config = parse_config(
            daemon_config(
                sim.base_url,
                db_url,
                creators(80),
                budget={"calls_per_minute": 600, "burst": 10},
                schedule={"max_in_flight": "auto", "retry_attempts": 0, "grace": "2s"},
            )
        )
        daemon = Daemon(config, Options(environ={"JUSTONEAPI_TOKEN": token}, tick=0.2))
        task = asyncio.get_running_loop().create_task(daemon.run())
        peak = 0
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline and sim.counters().calls < 60:
            if hasattr(daemon, "gate"):
                peak = max(peak, daemon.gate.on_the_wire)
            await asyncio.sleep(0.02)
        limit = daemon.dispatcher.sizer.limit()
        daemon.request_stop()
        assert await task == 0
    counters = sim.counters()
    assert peak > 4  # more calls on the wire than the old fixed default allowed
    assert limit >= needed_in_flight(600, 0.5)  # it learnt the 0.5 s latency (or more, loaded)
    assert counters.by_code.get("302", 0) == 0
    assert counters.max_in_window(timedelta(minutes=1)) <= 600
