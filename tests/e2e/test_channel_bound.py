"""Every delivery to a channel is bounded in time, whatever its server does: here a server that
answers 200 with ``Content-Length: 100000`` and then one byte every 2 s, so no single read ever
reaches apprise's read timeout. ``notify test`` ends, and ``run`` ends within its stop bound
after SIGTERM (apprise's own pool threads used to hold the process 90-150 s after "stopped").
Real processes, a real socket server, real signals."""

from __future__ import annotations

import asyncio
import signal
import time
from datetime import timedelta
from pathlib import Path

import pytest
from support.daemon import child_env, cli, creators, daemon_config, start_run, write_toml
from support.outbox import T0, OutboxDb, fire, rows
from support.receiver import Receiver, Trickler
from support.zygote import spawn

from monitor.config import NotifyConfig
from monitor.notify.sender import Notifier
from monitor.store import migrate
from monitor.upstream.simulator import SimKnobs, Simulator

#: fixtures db, db_url, sdb, sqlite_url


async def _run(args: list[str], env: dict[str, str], cwd: Path, limit: float) -> tuple[int, str]:
    proc = await spawn(
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=env,
        cwd=cwd,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout=limit)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError(f"{args[-2:]} still running after {limit:g}s") from None
    return proc.returncode or 0, out.decode()


@pytest.mark.slow
async def test_notify_test_ends_when_a_channel_trickles_its_answer(
    tmp_path: Path, token: str
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'h.db'}"
    await migrate.upgrade(url)
    async with Trickler(every=2.0) as trickle, Receiver() as fine:
        doc = daemon_config("http://127.0.0.1:9", url, creators(1))
        doc["channels"] = [
            {"name": "slow", "url": trickle.url()},
            {"name": "fine", "url": fine.url()},
        ]
        doc["notify"] = {"send_timeout": "5s"}  # the bound the config gives (default 30s)
        config = write_toml(tmp_path / "config.toml", doc)
        started = time.monotonic()
        code, out = await _run(
            [*cli(), "-c", str(config), "notify", "test"], child_env(token), tmp_path, 90
        )
        took = time.monotonic() - started
    assert code == 1, out
    assert "slow: timed out after 5s" in out
    assert "fine: delivered" in out
    assert trickle.hits == 1
    assert len(fine.received) == 1
    assert took < 45, took  # 5 s for the send; the rest is starting up on a loaded machine


async def test_a_trickling_channel_fails_its_send_and_is_not_sent_again_while_stuck(
    sdb: OutboxDb,
) -> None:
    """One send past its bound is a failed attempt; while its thread still reads the trickle,
    the channel's next due message fails at once instead of starting a second thread."""
    await fire(sdb, "slow")
    config = NotifyConfig(backoff_base=timedelta(seconds=1), backoff_max=timedelta(seconds=1))
    async with Trickler(every=0.5) as trickle:
        async with Notifier(
            sdb, {"slow": trickle.url()}, config, owner="t", send_timeout=timedelta(seconds=1.5)
        ) as notifier:
            started = time.monotonic()
            first = await notifier.drain(T0)
            assert time.monotonic() - started < 4
            second = await notifier.drain(T0 + timedelta(seconds=5))
        assert (first.failed, second.failed) == (1, 1)
        assert trickle.hits == 1  # no second connection while the first is stuck
    (row,) = await rows(sdb)
    assert row["status"] == "pending"
    assert row["attempts"] == 2
    assert "previous send is still running" in row["last_error"]


@pytest.mark.slow
async def test_sigterm_ends_run_within_its_bound_while_a_channel_trickles(
    tmp_path: Path, token: str
) -> None:
    db = tmp_path / "history.db"
    await migrate.upgrade(f"sqlite+aiosqlite:///{db}")
    async with Simulator(SimKnobs(latency_ms=50)) as sim, Trickler(every=2.0) as trickle:
        doc = daemon_config(sim.base_url, f"sqlite+aiosqlite:///{db}", creators(2))
        doc["channels"] = [{"name": "hook", "url": trickle.url()}]
        doc["notify"] = {"group_wait": "1s", "group_interval": "1s"}
        doc["rules"] = [
            {"name": "any", "kind": "threshold", "metric": "imp", "op": ">=", "value": 0}
        ]
        config = write_toml(tmp_path / "config.toml", doc)
        log = tmp_path / "run.log"
        proc = await start_run(config, log, child_env(token), tmp_path)
        deadline = time.monotonic() + 40
        while trickle.hits < 1:
            assert time.monotonic() < deadline, log.read_text()
            await asyncio.sleep(0.1)
        await asyncio.sleep(1)  # the send is past its headers, reading the trickle
        asked = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            code = await asyncio.wait_for(proc.wait(), timeout=60)
        finally:
            if proc.returncode is None:
                proc.kill()
        took = time.monotonic() - asked
    text = log.read_text()
    assert code == 0, text[-3000:]
    assert "stopped" in text
    assert "Traceback" not in text, text[-3000:]
    # the documented bound: grace (5 s here) + 5 + 5 + 5 + 10 s
    assert took < 30, (took, text[-2000:])
