"""``fetch`` and ``fetch --all`` stopped by SIGTERM or Ctrl-C (SIGINT), as real processes against
the simulator over HTTP with slow answers: every call the simulator billed is stored (or kept in
the spill file), the command prints what it has and one line saying what was kept, and exits
143 or 130. Before, SIGTERM killed it with nothing printed and the call on the wire lost."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import closing
from pathlib import Path

import pytest
import pytest_asyncio
from support.daemon import child_env, cli, creators, daemon_config, write_toml
from support.zygote import spawn

from monitor.store import migrate
from monitor.upstream.simulator import SimKnobs, Simulator

pytestmark = pytest.mark.slow


@pytest_asyncio.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(SimKnobs(latency_ms=1500)) as simulator:  # each call 1.5 s on the wire
        yield simulator


async def _interrupted(
    tmp_path: Path, token: str, sim: Simulator, signum: int, args: list[str], after_calls: int
) -> tuple[int, str, str, float]:
    db = tmp_path / "history.db"
    await migrate.upgrade(f"sqlite+aiosqlite:///{db}")
    doc = daemon_config(
        sim.base_url,
        f"sqlite+aiosqlite:///{db}",
        creators(6),
        budget={"calls_per_minute": 600, "burst": 10},
    )
    config = write_toml(tmp_path / "config.toml", doc)
    proc = await spawn(
        *cli(),
        "-c",
        str(config),
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=child_env(token),
        cwd=tmp_path,
    )
    deadline = time.monotonic() + 30
    while sim.counters().calls < after_calls:  # the call counted is now on the wire
        assert time.monotonic() < deadline, "no call reached the simulator"
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.3)
    asked = time.monotonic()
    proc.send_signal(signum)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout=30)
    finally:
        if proc.returncode is None:
            proc.kill()
    return proc.returncode or 0, out.decode(), err.decode(), time.monotonic() - asked


def _kept(tmp_path: Path) -> int:
    """Answers stored, plus answers waiting in the spill file."""
    with closing(sqlite3.connect(tmp_path / "history.db")) as db:
        (stored,) = db.execute("SELECT count(*) FROM fetches").fetchone()
    spill = tmp_path / "history.db.pending.jsonl"
    held = len(spill.read_text().splitlines()) if spill.exists() else 0
    return int(stored) + held


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
async def test_fetch_all_interrupted_stores_every_paid_answer_and_says_so(
    tmp_path: Path, token: str, sim: Simulator, signum: int, code: int
) -> None:
    got, out, err, took = await _interrupted(
        tmp_path, token, sim, signum, ["fetch", "--all"], after_calls=3
    )
    billed = sim.counters().billed
    name = signal.Signals(signum).name
    assert got == code, (out, err)
    assert billed == 3
    assert _kept(tmp_path) == billed  # the third call was on the wire at the signal: kept
    assert "3 of 6 series fetched with 3 calls" in out
    assert f"stopped early: interrupted by {name}" in out
    assert f"interrupted by {name}: 3 answers stored; 3 of 6 series not fetched" in err
    assert "Traceback" not in err
    assert took < 10  # the rest of the call on the wire, storing it, closing


async def test_fetch_interrupted_while_its_call_is_on_the_wire_stores_the_answer(
    tmp_path: Path, token: str, sim: Simulator
) -> None:
    got, out, err, _ = await _interrupted(
        tmp_path, token, sim, signal.SIGTERM, ["fetch", creators(1)[0]], after_calls=1
    )
    assert got == 143, (out, err)
    assert sim.counters().billed == 1
    assert _kept(tmp_path) == 1
    assert "interrupted by SIGTERM: the answer already paid for is stored" in err
    assert "imp" in out or "date" in out  # the history table of what was stored
