"""Drill 8: the simulator and every HTTP endpoint listen on 127.0.0.1 only (read from /proc)."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from drills.sockets import listening_addresses, loopback, supported
from monitor.ops.telemetry import Telemetry, serve
from monitor.upstream.simulator import Simulator

pytestmark = [
    pytest.mark.drills,
    pytest.mark.skipif(not supported(), reason="needs Linux /proc/net/tcp"),
]


async def test_the_simulator_and_the_telemetry_endpoint_bind_loopback_only() -> None:
    before = listening_addresses()

    async def healthy() -> bool:
        return True

    async with Simulator() as sim:
        endpoint = await serve("127.0.0.1:0", Telemetry(), healthy)
        try:
            opened = listening_addresses() - before
        finally:
            await endpoint.close()
    ports = {port for _host, port in opened}
    assert endpoint.port in ports
    assert int(sim.base_url.rsplit(":", 1)[1]) in ports
    assert len(opened) == 2
    assert all(host == "127.0.0.1" for host, _port in opened), opened


@pytest.mark.slow
async def test_the_simulate_command_binds_loopback_only(tmp_path: Path) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "monitor",
        "-c",
        str(tmp_path / "absent.toml"),
        "simulate",
        "--port",
        "0",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), timeout=30)).decode()
        assert "simulated Just One API on http://127.0.0.1:" in line
        addresses = listening_addresses(process.pid)
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), timeout=10)
    assert addresses
    assert all(loopback(host) and host == "127.0.0.1" for host, _port in addresses), addresses
