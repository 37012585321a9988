"""The outbox as ``creator-monitor run`` lives with it, in a real process against the simulator
over HTTP: a database lock is one "outbox drain failed" line and one recovery line, not one
per interval; and messages still pending at SIGTERM go out with the stop."""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from support.daemon import child_env, creators, daemon_config, start_run, write_toml
from support.zygote import Child

from monitor.store import migrate
from monitor.upstream.simulator import SimKnobs, Simulator

pytestmark = pytest.mark.slow


class Run:
    def __init__(self, proc: Child, log: Path) -> None:
        self.proc, self.path = proc, log

    def log(self) -> str:
        return self.path.read_text(encoding="utf-8", errors="replace")

    async def wait_log(self, text: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.log():
            if time.monotonic() > deadline or self.proc.returncode is not None:
                raise AssertionError(f"no {text!r} in the log:\n{self.log()[-3000:]}")
            await asyncio.sleep(0.05)

    async def stop(self, limit: float = 60) -> tuple[int, float]:
        asked = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = await asyncio.wait_for(self.proc.wait(), timeout=limit)
        finally:
            if self.proc.returncode is None:
                self.proc.kill()
        return code, time.monotonic() - asked


@pytest_asyncio.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(SimKnobs(latency_ms=50)) as simulator:
        yield simulator


async def start(tmp_path: Path, token: str, doc: dict[str, Any]) -> Run:
    config = write_toml(tmp_path / "config.toml", doc)
    log = tmp_path / "run.log"
    return Run(await start_run(config, log, child_env(token), tmp_path), log)


def _fetches(db: Path) -> int:
    with contextlib.closing(sqlite3.connect(db, timeout=5)) as check:
        return int(check.execute("SELECT count(*) FROM fetches").fetchone()[0])


async def test_a_database_lock_is_one_drain_failure_line_and_one_recovery_line(
    tmp_path: Path, token: str, sim: Simulator
) -> None:
    db = tmp_path / "history.db"
    await migrate.upgrade(f"sqlite+aiosqlite:///{db}")
    doc = daemon_config(sim.base_url, f"sqlite+aiosqlite:///{db}", creators(1))
    doc["storage"]["busy_timeout"] = "1s"  # a drain meets the lock for 1 s, not 5 s, then fails
    run = await start(tmp_path, token, doc)
    await run.wait_log("running:")
    await run.wait_log("stored the first due times")
    # the creator's first fetch is stored before the lock (it queues at the gate behind the
    # start's balance reading): the lock is the drain's trouble alone
    deadline = asyncio.get_running_loop().time() + 30
    while _fetches(db) < 1:
        assert asyncio.get_running_loop().time() < deadline, run.log()[-3000:]
        await asyncio.sleep(0.2)
    locker = sqlite3.connect(db, timeout=30, isolation_level=None)
    try:
        locker.execute("BEGIN EXCLUSIVE")
        # at least two drains (every 5 s) start and fail inside the lock: one line for both
        await asyncio.sleep(13)
        locker.execute("COMMIT")
    finally:
        locker.close()
    await run.wait_log("outbox drain working again", timeout=20)
    code, _ = await run.stop()
    log = run.log()
    assert code == 0, log[-3000:]
    assert log.count("outbox drain failed") == 1, log
    assert log.count("outbox drain working again after") == 1, log
    # the one line stood for several failed drains, not for one
    failed = re.search(r"outbox drain working again after (\d+) failed drain", log)
    assert failed is not None, log
    assert int(failed[1]) >= 2, log
    assert "Traceback" not in log
    with contextlib.closing(sqlite3.connect(db)) as check:
        assert check.execute("SELECT count(*) FROM fetches").fetchone() == (1,)


async def test_messages_pending_at_sigterm_go_out_with_the_stop(
    tmp_path: Path, token: str, sim: Simulator
) -> None:
    """Three creators fire one wave; the group waits ``group_wait`` (10 min) for more. SIGTERM
    comes first: the stop's flush sends the group as one message, within the stop's bound."""
    from support.receiver import Receiver

    db = tmp_path / "history.db"
    await migrate.upgrade(f"sqlite+aiosqlite:///{db}")
    async with Receiver() as receiver:
        doc = daemon_config(sim.base_url, f"sqlite+aiosqlite:///{db}", creators(3))
        doc["channels"] = [{"name": "team", "url": receiver.url("/team")}]
        doc["notify"] = {"group_wait": "10m", "group_interval": "1h"}
        doc["rules"] = [
            {"name": "any", "kind": "threshold", "metric": "imp", "op": ">=", "value": 0}
        ]
        run = await start(tmp_path, token, doc)

        def pending() -> int:
            with contextlib.closing(sqlite3.connect(db, timeout=10)) as check:
                (count,) = check.execute(
                    "SELECT count(*) FROM notifications WHERE status = 'pending'"
                ).fetchone()
            return int(count)

        deadline = time.monotonic() + 40
        while pending() < 3:
            assert time.monotonic() < deadline, run.log()[-3000:]
            await asyncio.sleep(0.1)
        await asyncio.sleep(6)  # a drain or two has held the group for its wave
        assert receiver.received == []
        code, took = await run.stop()
    log = run.log()
    assert code == 0, log[-3000:]
    assert took < 30, took  # the documented bound at grace 5 s: 5 + 5 + 5 + 5 + 10 s
    assert len(receiver.received) == 1, log[-3000:]  # the wave, as one message
    assert pending() == 0
