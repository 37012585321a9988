"""``creator-monitor run`` as systemd runs it: a subprocess with NOTIFY_SOCKET and WATCHDOG_USEC
against the simulator over real HTTP. READY / WATCHDOG / STATUS / STOPPING, SIGTERM with calls in
flight, SIGHUP reloads (a broken config is refused), and kill -9 then restart.
"""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from support.daemon import (
    NotifySocket,
    child_env,
    creators,
    daemon_config,
    start_run,
    write_toml,
)
from support.receiver import Receiver
from support.wait import until
from support.zygote import Child as Process

from monitor.store import migrate
from monitor.upstream.simulator import SimKnobs, Simulator

pytestmark = pytest.mark.slow


@dataclass
class Child:
    proc: Process
    stderr: Path

    def log(self) -> str:
        return self.stderr.read_text(encoding="utf-8", errors="replace")

    async def wait_log(self, text: str, timeout: float = 60.0) -> None:
        def ended() -> str | None:
            return None if self.proc.returncode is None else "the daemon exited"

        try:
            await until(lambda: text in self.log(), timeout, f"{text!r} in the log", ended=ended)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; the daemon's log:\n{self.log()[-3000:]}") from None


@dataclass
class World:
    folder: Path
    sim: Simulator
    db: Path
    token: str
    children: list[Process] = field(default_factory=list)

    @property
    def db_url(self) -> str:
        return f"sqlite+aiosqlite:///{self.db}"

    def config(self, users: list[str], **kwargs: Any) -> Path:
        doc = daemon_config(self.sim.base_url, self.db_url, users, **kwargs)
        return write_toml(self.folder / "config.toml", doc)

    async def start(self, config: Path, name: str, **env: str) -> Child:
        stderr = self.folder / f"{name}.stderr"
        proc = await start_run(config, stderr, child_env(self.token, **env), self.folder)
        self.children.append(proc)
        return Child(proc, stderr)

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        with sqlite3.connect(self.db) as db:
            return db.execute(sql).fetchall()

    def assert_no_token(self, *children: Child) -> None:
        for child in children:
            assert self.token not in child.log()
        dump = "\n".join(sqlite3.connect(self.db).iterdump())
        assert self.token not in dump


@pytest_asyncio.fixture
async def world(tmp_path: Path, token: str) -> AsyncIterator[World]:
    db = tmp_path / "history.db"
    await migrate.upgrade(f"sqlite+aiosqlite:///{db}")
    async with Simulator(SimKnobs(latency_ms=50)) as sim:
        world = World(tmp_path, sim, db, token)
        try:
            yield world
        finally:  # a test that failed half-way leaves no daemon running
            for proc in world.children:
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()


async def test_notify_socket_watchdog_and_sigterm_with_calls_in_flight(world: World) -> None:
    world.sim.set_knobs(latency_ms=1500)  # every call is in flight for 1.5 s
    config = world.config(
        creators(12),
        budget={"calls_per_minute": 600, "burst": 4},
        schedule={"max_in_flight": 4, "grace": "6s"},
    )
    notify = NotifySocket(world.folder)
    try:
        child = await world.start(config, "run", NOTIFY_SOCKET=notify.path, WATCHDOG_USEC="300000")
        ready = await notify.wait_for("READY=1")
        assert "STATUS=12 series, 0 calls in flight, 0 fetches done" in ready.split("\n")
        await until(lambda: world.sim.counters().calls >= 4)  # four calls on the wire
        await until(lambda: notify.count("WATCHDOG=1") >= 2, timeout=5)
        sent_before_stop = world.sim.counters().calls
        asked = time.monotonic()
        child.proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(child.proc.wait(), timeout=10)
        took = time.monotonic() - asked
        stopping = await notify.wait_for("STOPPING=1", timeout=1)
    finally:
        notify.close()

    assert code == 0, child.log()
    assert took < 6.0  # inside the grace period
    assert any(line.startswith("STATUS=stopping") for line in stopping.split("\n"))
    # no new call after SIGTERM (one already on its way when it was sent arrives within
    # moments), and every call that was on the wire finished and was recorded
    late = [r for r in world.sim.counters().log if r.monotonic > asked + 0.5]
    assert late == [], (late, sent_before_stop)
    (recorded,) = world.rows("SELECT count(*) FROM fetches WHERE code = 0")[0]
    assert recorded == world.sim.counters().by_endpoint["core"]  # beside the balance reading
    assert "stopped with" not in child.log()  # nothing abandoned
    # the new series' first due times were stored after READY, not before it
    log = child.log()
    assert log.index("running: 12 series") < log.index("stored the first due times of 12 new")
    assert world.rows("SELECT count(*) FROM schedule") == [(12,)]
    world.assert_no_token(child)


async def test_sigterm_while_a_drain_hangs_on_a_channel_ends_it_without_a_traceback(
    world: World,
) -> None:
    """The drain job is half way through a send to a channel that does not answer when
    SIGTERM comes: the stop waits up to 5 s for it to end (here the send times out first),
    else cuts it short itself in one line. APScheduler's own shutdown would cancel it and
    log a traceback, as the previous commit did."""
    async with Receiver() as receiver:
        receiver.hang()
        config = world.config(
            creators(2),
            extra={
                "channels": [{"name": "hook", "url": receiver.url("/hook")}],
                "notify": {"group_wait": "1s", "group_interval": "1s"},
                "rules": [
                    {"name": "any", "kind": "threshold", "metric": "imp", "op": ">=", "value": 0}
                ],
            },
        )
        child = await world.start(config, "run")
        await until(lambda: receiver.hits >= 1, timeout=30)  # a send hangs
        child.proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(child.proc.wait(), timeout=40)
        receiver.recover()
    log = child.log()
    assert code == 0, log[-3000:]
    assert "Traceback" not in log, log[-3000:]
    assert "Error running job" not in log
    assert "stopped" in log
    world.assert_no_token(child)


async def test_sighup_keeps_the_old_config_when_the_new_one_is_broken(world: World) -> None:
    old = creators(2)
    config = world.config(old)
    notify = NotifySocket(world.folder)
    try:
        child = await world.start(config, "run", NOTIFY_SOCKET=notify.path)
        await notify.wait_for("READY=1")
        await until(lambda: len(world.sim.counters().by_series) == 2)

        config.write_text(config.read_text() + "\n[budget_typo]\nx = 1\n", encoding="utf-8")
        child.proc.send_signal(signal.SIGHUP)
        await child.wait_log("reload rejected, keeping the running config")
        await until(lambda: notify.count("RELOADING=1") == 1, timeout=5)

        new = creators(3, start=100)
        world.config([*old, *new])
        child.proc.send_signal(signal.SIGHUP)
        await child.wait_log("config reloaded: 5 series")
        await until(lambda: len(world.sim.counters().by_series) == 5)
        child.proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(child.proc.wait(), timeout=10)
        readies = notify.count("READY=1")
    finally:
        notify.close()

    assert code == 0
    assert readies == 3, notify.messages  # at start, and after each reload (kept or new)
    log = child.log()
    rejected = [line for line in log.splitlines() if "reload rejected" in line]
    assert len(rejected) == 1
    assert "budget_typo" in rejected[0]
    assert log.count("config reloaded") == 1
    assert {u for u, _ in world.sim.counters().by_series} == {*old, *new}
    world.assert_no_token(child)


async def test_kill_9_and_restart_refetches_nothing_served_and_counts_every_call(
    world: World,
) -> None:
    world.sim.set_knobs(latency_ms=300)
    users = creators(24)
    config = world.config(
        users,
        budget={"calls_per_minute": 600, "burst": 3},
        schedule={"max_in_flight": 3},
    )
    first = await world.start(config, "first")
    served_sql = "SELECT DISTINCT c.user_id FROM fetches f JOIN creators c ON c.id = f.creator_id"
    await until(lambda: len(world.rows(served_sql + " WHERE f.code = 0")) >= 8)
    first.proc.send_signal(signal.SIGKILL)
    assert await asyncio.wait_for(first.proc.wait(), timeout=5) == -signal.SIGKILL
    served = {u for (u,) in world.rows(served_sql + " WHERE f.code = 0")}
    sent_by_first = world.sim.counters().calls

    second = await world.start(config, "second")
    await until(lambda: len(world.rows(served_sql + " WHERE f.code = 0")) == 24)
    second.proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(second.proc.wait(), timeout=10) == 0

    counters = world.sim.counters()
    assert sent_by_first >= len(served)
    for user in served:  # served before the kill: never fetched again for that due time
        assert counters.by_series[(user, "DAILY_NOTE/PHOTO_TEXT_AND_VIDEO/DAY_30/ALL")] == 1
    assert {u for u, _ in counters.by_series} == set(users)
    # at most the calls on the wire at the kill went twice; a balance reading at each start
    assert counters.by_endpoint["core"] <= 24 + 3
    assert counters.by_endpoint["balance"] == 2
    (ledger,) = world.rows("SELECT sum(calls) FROM budget_days")[0]
    assert ledger >= counters.calls  # every call was counted before it was sent
    assert ledger <= counters.calls + 3
    # journald-friendly: a handful of lines, none per call
    for child in (first, second):
        assert len(child.log().splitlines()) < 12, child.log()
    world.assert_no_token(first, second)
