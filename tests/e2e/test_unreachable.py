"""An upstream that does not answer, as an operator meets it: ``run`` says so in one ERROR line
when it starts and one line when it ends, ``/healthz`` answers 503 with the reason meanwhile, and
``status`` shows it from the database."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import httpx
import pytest
from support.cli import run_cli
from support.daemon import child_env, cli, creators, daemon_config, write_toml
from support.ports import free_port, refusing_port
from support.tls import tls_context
from support.wait import until
from support.zygote import spawn

from monitor.store import migrate
from monitor.upstream.simulator import SimKnobs, Simulator

pytestmark = pytest.mark.slow


async def _health(port: int) -> tuple[int, str]:
    async with httpx.AsyncClient(verify=tls_context()) as http:
        try:
            answer = await http.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
        except httpx.HTTPError:
            return 0, ""
        return answer.status_code, answer.text


async def test_an_unreachable_upstream_is_told_once_in_healthz_and_in_status(
    tmp_path: Path, token: str
) -> None:
    db_url = f"sqlite+aiosqlite:///{tmp_path}/h.db"
    await migrate.upgrade(db_url)
    held = contextlib.ExitStack()  # the upstream's port refuses until it comes back below
    upstream, http_port = held.enter_context(refusing_port()), free_port()
    doc = daemon_config(
        f"http://127.0.0.1:{upstream}",
        db_url,
        creators(6),
        every="10s",  # a failed creator is tried again within 10 s
        schedule={"retry_attempts": 0},
        extra={"http": {"listen": f"127.0.0.1:{http_port}"}},
    )
    doc["api"] |= {"connect_retries": 0}
    config = write_toml(tmp_path / "config.toml", doc)
    stderr = tmp_path / "run.stderr"
    with stderr.open("wb") as sink:
        proc = await spawn(
            *cli(), "-c", str(config), "run", stdout=sink, stderr=sink, env=child_env(token)
        )
    try:
        health = [(0, "")]

        async def healthz(expected: int) -> bool:
            health[0] = await _health(http_port)
            return health[0][0] == expected

        async def unhealthy() -> bool:
            return await healthz(503) and "cannot reach" in health[0][1]

        with contextlib.suppress(AssertionError):
            await until(unhealthy, 60, "/healthz telling the upstream is unreachable", every=0.3)
        status, text = health[0]
        assert status == 503, (status, text, stderr.read_text())
        assert f"cannot reach the upstream 127.0.0.1:{upstream}" in text
        assert "check api.base_url" in text
        # in this process: beside the daemon all the same, reading the database it writes
        shown = await asyncio.to_thread(
            run_cli, "-c", config, "status", env={"JUSTONEAPI_TOKEN": token}
        )
        assert shown.returncode == 0, shown.stderr
        assert "UNREACHABLE: the last" in shown.stdout
        # the upstream comes back: the daemon says so once, and /healthz is 200 again
        held.close()
        async with Simulator(SimKnobs(latency_ms=5), port=upstream):
            with contextlib.suppress(AssertionError):
                await until(lambda: healthz(200), 90, "/healthz answering 200", every=0.3)
            status, text = health[0]
            assert status == 200, text
    finally:
        held.close()
        proc.terminate()
        await proc.wait()
    log = stderr.read_text()
    errors = [line for line in log.splitlines() if "ERROR" in line]
    assert [line for line in errors if "cannot reach the upstream" in line] == errors, log
    assert len(errors) == 1, log
    assert log.count("answers again") == 1, log
    assert "failing:" not in log  # no line per creator for an upstream that does not answer
    assert token not in log
    assert "Traceback" not in log
