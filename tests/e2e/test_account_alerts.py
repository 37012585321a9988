"""Account-wide errors are told when the pause begins and ends, not at the next periodic tick:
``creator-monitor run`` in a subprocess against the simulator, whose balance runs out, and a
``json://`` receiver. The critical message must arrive within 10 s of the first 601."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from support.daemon import child_env, cli, creators, daemon_config, write_toml
from support.receiver import Receiver
from support.wait import until
from support.zygote import spawn

from monitor.store import migrate
from monitor.upstream.simulator import SimKnobs, Simulator

pytestmark = pytest.mark.slow


async def test_balance_running_out_is_critical_within_10_s_and_its_end_is_told(
    tmp_path: Path, token: str
) -> None:
    db_url = f"sqlite+aiosqlite:///{tmp_path / 'h.db'}"
    await migrate.upgrade(db_url)
    async with Simulator(SimKnobs(latency_ms=20, balance=2)) as sim, Receiver() as receiver:
        doc = daemon_config(
            sim.base_url,
            db_url,
            creators(6),
            budget={"calls_per_minute": 60, "burst": 1},
            schedule={"probe_every": "3s", "retry_attempts": 0},
            extra={"channels": [{"name": "ops", "url": receiver.url("/ops")}]},
        )
        config = write_toml(tmp_path / "config.toml", doc)
        stderr = tmp_path / "run.stderr"
        with stderr.open("wb") as sink:
            proc = await spawn(
                *cli(), "-c", str(config), "run",
                stdin=asyncio.subprocess.DEVNULL, stdout=sink, stderr=sink,
                env=child_env(token), cwd=tmp_path,
            )  # fmt: skip
        try:
            first_601 = await until(
                lambda: any(r.code == 601 for r in sim.counters().log), 60, "a 601"
            )
            at_601 = next(r.monotonic for r in sim.counters().log if r.code == 601)
            told = await until(lambda: receiver.bodies("/ops"), 15, "the critical message")
            [paused] = receiver.bodies("/ops")
            assert paused["type"] == "failure"
            assert paused["title"] == "[CRITICAL] insufficient balance (601): all calls paused"
            assert told - at_601 < 10, f"{told - at_601:.1f} s after the first 601"
            assert first_601 - at_601 < 1

            sim.set_balance(None)  # topped up: the next probe succeeds
            resumed = await until(
                lambda: any(r.code == 0 and r.monotonic > first_601 for r in sim.counters().log),
                30,
                "a successful probe",
            )
            back = await until(lambda: len(receiver.bodies("/ops")) == 2, 15, "the resolution")
            resolution = receiver.bodies("/ops")[1]
            assert resolution["title"].startswith("[RESOLVED] insufficient balance (601)")
            assert back - resumed < 10
        finally:
            proc.terminate()
            await asyncio.wait_for(proc.wait(), 30)
    log = stderr.read_text(encoding="utf-8")
    assert token not in log
    assert proc.returncode == 0, log[-2000:]
