"""The one gate as users meet it, through the commands against the simulator, on SQLite and
PostgreSQL: ``fetch --dry-run`` at the daily cap and a zone change (in this process); then, in
real subprocesses, ``fetch --all`` beside a running daemon counted at the upstream in every
(shortened) rate window, and a second daemon through a symlink."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import pytest_asyncio
from support import tuned
from support.cli import run_cli, simulator_thread
from support.daemon import child_env, cli, creators, daemon_config, write_toml
from support.wait import until
from support.zygote import Child, spawn

from monitor.store import migrate
from monitor.upstream.simulator import SimKnobs, Simulator

#: the rate window the two processes of the window test share: the bucket (20 calls, refilled
#: at 20 a minute) is the same, only the window that caps them is shorter than the upstream's
WINDOW_S = 10.0


@dataclass
class Ran:
    code: int
    out: str
    err: str


@dataclass
class World:
    folder: Path
    sim: Simulator
    db_url: str
    token: str

    def config(self, users: list[str], name: str = "config.toml", **kwargs: Any) -> Path:
        doc = daemon_config(self.sim.base_url, self.db_url, users, **kwargs)
        return write_toml(self.folder / name, doc)

    async def cli(self, config: Path, *args: str) -> Ran:
        proc = await spawn(
            *cli(),
            "-c",
            str(config),
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=child_env(self.token),
            cwd=self.folder,
        )
        out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
        assert proc.returncode is not None
        return Ran(proc.returncode, out.decode(), err.decode())

    def cli_here(self, config: Path, *args: str) -> Ran:
        """``creator-monitor -c CONFIG ARGS`` in this process (``support.cli.run_cli``)."""
        done = run_cli("-c", config, *args, env={"JUSTONEAPI_TOKEN": self.token}, cwd=self.folder)
        return Ran(done.returncode, done.stdout, done.stderr)

    async def spawn(self, config: Path, *args: str, window: float | None = None) -> Child:
        """``creator-monitor -c CONFIG ARGS`` in the background; ``window``: the budget's rate
        window shortened to that many seconds (``support.tuned``)."""
        return await spawn(
            *(cli() if window is None else tuned.cli(window=window)),
            "-c",
            str(config),
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            env=child_env(self.token),
            cwd=self.folder,
        )

    async def query(self, sql: str) -> list[tuple[Any, ...]]:
        if self.db_url.startswith("sqlite"):
            with sqlite3.connect(self.db_url.split("///", 1)[1]) as db:
                return db.execute(sql).fetchall()
        conn = await asyncpg.connect(self.db_url.replace("postgresql+asyncpg", "postgresql"))
        try:
            return [tuple(r) for r in await conn.fetch(sql)]
        finally:
            await conn.close()

    def calls(self) -> int:
        return len(self.sim.counters().log)


@pytest_asyncio.fixture
async def world(tmp_path: Path, token: str, db_url: str) -> AsyncIterator[World]:
    await migrate.upgrade(db_url)
    async with Simulator(SimKnobs(latency_ms=5)) as sim:
        yield World(tmp_path, sim, db_url, token)


def test_dry_run_spends_inside_the_cap_and_a_zone_change_opens_no_fresh_day(
    tmp_path: Path, token: str, db_url: str
) -> None:
    """The commands run in this process (``support.cli``), the simulator in a thread: what is
    checked is what they print, spend and store, not how a process starts."""
    asyncio.run(migrate.upgrade(db_url))
    with simulator_thread(SimKnobs(latency_ms=5)) as sim:
        _dry_run_then_zone_changes(World(tmp_path, sim, db_url, token))


def _dry_run_then_zone_changes(world: World) -> None:
    user = creators(1)[0]
    config = world.config([user], budget={"daily_calls": 3, "burst": 5})
    for _ in range(3):
        ran = world.cli_here(config, "fetch", user, "--dry-run")
        assert ran.code == 0, ran.err
        assert "dry run: 1 call(s) spent inside the budget" in ran.err
    assert world.calls() == 3
    assert asyncio.run(world.query("SELECT count(*) FROM fetches")) == [(0,)]  # nothing stored
    refused = world.cli_here(config, "fetch", user, "--dry-run")
    assert refused.code == 1
    line = refused.err.strip().splitlines()[-1]
    assert "daily_calls (3) used up" in line
    assert "frees up at" in line
    assert world.calls() == 3  # refused before anything was sent
    # the day is counted in the configured zone: moving it cannot buy more calls today
    for zone in ("America/Los_Angeles", "Pacific/Kiritimati", "UTC"):
        moved = world.config([user], budget={"daily_calls": 3, "timezone": zone})
        again = world.cli_here(moved, "fetch", user)
        assert again.code == 1, (zone, again.err)
        assert "daily_calls (3) used up" in again.err
    assert world.calls() == 3
    (calls,) = asyncio.run(world.query("SELECT sum(calls) FROM budget_days"))
    assert calls == (3,)


@pytest.mark.slow
async def test_fetch_all_beside_a_running_daemon_keeps_every_window(world: World) -> None:
    """Both processes run with the rate window shortened to ``WINDOW_S`` (the product's 60 s is
    the pure policy's default, checked in tests/service/test_gate.py): the calls past the first
    window come seconds after it, not a minute, and each process still has to read the other's
    sends from the stored state to keep the window."""
    per_minute = 20
    # one roster for both, as in real use (a fetch syncs the configured creators: a different
    # list would mark the daemon's inactive on a shared database)
    users = creators(60)
    budget = {"calls_per_minute": per_minute, "burst": per_minute}
    daemon_cfg = world.config(users, budget=budget)
    fetch_cfg = world.config(users, name="fetch.toml", budget=budget)
    daemon = await world.spawn(daemon_cfg, "run", window=WINDOW_S)
    fetch_all = await world.spawn(fetch_cfg, "fetch", "--all", window=WINDOW_S)
    try:
        # the first window fills at once (burst = the limit); the next calls must wait for it
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 90
        while world.calls() < per_minute + 5 and loop.time() < deadline:
            await asyncio.sleep(0.5)
    finally:
        for proc in (fetch_all, daemon):
            if proc.returncode is None:
                proc.terminate()
            await proc.wait()
    counters = world.sim.counters()
    times = sorted(r.monotonic for r in counters.log)
    assert len(times) >= per_minute + 5, "both processes kept fetching"
    # the shortened window was in force: the calls past the first one came long before 60 s
    assert times[per_minute] - times[0] < 45, times
    # fetch --all goes down the list from the first; the daemon serves every due series, most
    # overdue first, and reads the balance once at start: all those calls meet the one window
    assert {r.user_id for r in counters.log if r.endpoint == "core"} <= set(users)
    # (the reading waits at the gate like any call: on a loaded machine the window may be
    # full until the test stops, so it is there at most once)
    assert [r.endpoint for r in counters.log].count("balance") <= 1
    busiest = max(sum(1 for t in times if s <= t <= s + WINDOW_S) for s in times)
    log = [round(r.monotonic - times[0], 2) for r in counters.log]
    assert busiest <= per_minute, f"{busiest} calls in one {WINDOW_S} s window: {log}"


@pytest.mark.slow
async def test_a_second_daemon_through_a_symlink_is_refused(world: World) -> None:
    if not world.db_url.startswith("sqlite"):
        pytest.skip("the one-instance lock is SQLite's; PostgreSQL shares the work")
    db = Path(world.db_url.split("///", 1)[1])
    link = world.folder / "elsewhere" / "same.db"
    link.parent.mkdir()
    os.symlink(db, link)
    first_cfg = world.config(creators(2))
    first = await world.spawn(first_cfg, "run")
    try:
        # two fetches and the balance reading made at start
        await until(lambda: world.calls() >= 3, 30, "the first daemon's calls")
        doc = daemon_config(world.sim.base_url, f"sqlite+aiosqlite:///{link}", creators(2))
        second = await world.cli(write_toml(world.folder / "second.toml", doc), "run")
    finally:
        first.terminate()
        await first.wait()
    assert second.code != 0
    assert "another creator-monitor" in second.err
    assert world.calls() == 3  # the second one spent nothing
