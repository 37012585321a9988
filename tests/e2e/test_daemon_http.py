"""``[http] listen``: /healthz follows the database's writability, /metrics shows what the daemon
does (calls by code, billed, budget, pause, in flight, oldest overdue, outbox). Real PostgreSQL:
the database is made read-only under the running daemon, then writable again.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from urllib.parse import urlparse

import httpx
import pytest
from support.daemon import creators, daemon_config
from support.ports import free_port
from support.wait import until

from monitor.config import parse_config
from monitor.daemon import Daemon
from monitor.daemon.options import Options
from monitor.ops.telemetry import GAUGES
from monitor.store import migrate
from monitor.upstream.simulator import SimKnobs, Simulator

pytestmark = pytest.mark.postgres


async def _admin(url: str, sql: str) -> None:
    import asyncpg

    parsed = urlparse(url.replace("postgresql+asyncpg", "postgresql"))
    conn = await asyncpg.connect(f"postgresql://{parsed.netloc}/postgres", timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def _metric(text: str, name: str) -> float:
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    assert match, f"{name} missing from /metrics"
    return float(match.group(1))


async def _poll(get: httpx.AsyncClient, path: str, status: int, timeout: float = 10) -> str:
    seen: list[httpx.Response] = []

    async def answers() -> bool:
        seen.append(await get.get(path))
        return seen[-1].status_code == status

    try:
        await until(answers, timeout, f"{path} answering {status}", every=0.1)
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {seen[-1].status_code} {seen[-1].text}") from None
    return seen[-1].text


async def test_healthz_follows_the_database_and_metrics_show_the_daemon(
    pg_url: str, token: str
) -> None:
    await migrate.upgrade(pg_url)
    database = urlparse(pg_url).path.lstrip("/")
    started = time.time()
    async with Simulator(SimKnobs(latency_ms=20)) as sim:
        sim.force_code(creators(1)[0], 500)  # one creator keeps failing
        doc = daemon_config(
            sim.base_url,
            pg_url,
            creators(6),
            budget={"calls_per_minute": 600, "burst": 3},
            schedule={"retry_attempts": 0},
            extra={"http": {"listen": f"127.0.0.1:{free_port()}"}},
        )
        options = Options(environ={"JUSTONEAPI_TOKEN": token}, health_timeout=3.0, tick=0.2)
        daemon = Daemon(parse_config(doc), options)
        running = asyncio.get_running_loop().create_task(daemon.run())
        try:
            # six fetches and the balance reading made at start
            while daemon.endpoint is None or sim.counters().calls < 7:
                assert not running.done()
                await asyncio.sleep(0.05)
            async with httpx.AsyncClient(base_url=daemon.endpoint.url) as get:
                assert (await _poll(get, "/healthz", 200)) == "ok\n"
                await asyncio.sleep(0.3)  # let the last answers be recorded
                metrics = (await get.get("/metrics")).text
                await _admin(
                    pg_url, f'ALTER DATABASE "{database}" SET default_transaction_read_only = on'
                )
                await _admin(pg_url, _terminate(database))
                unhealthy = await _poll(get, "/healthz", 503)
                await _admin(
                    pg_url, f'ALTER DATABASE "{database}" SET default_transaction_read_only = off'
                )
                await _admin(pg_url, _terminate(database))
                await _poll(get, "/healthz", 200)
        finally:
            daemon.request_stop()
            assert await asyncio.wait_for(running, timeout=15) == 0

    assert "read-only transaction" in unhealthy
    assert _metric(metrics, 'creator_monitor_upstream_calls_total{code="0"}') == 5 + 1
    assert _metric(metrics, 'creator_monitor_upstream_calls_total{code="500"}') == 1
    assert _metric(metrics, "creator_monitor_upstream_billed_calls_total") == 5
    assert _metric(metrics, "creator_monitor_budget_daily_calls_left") == 5000 - 7
    # the simulator's unlimited balance shows 1,000,000 less what was spent before the reading
    assert 1_000_000 - 5 <= _metric(metrics, "creator_monitor_balance") <= 1_000_000
    # one reading gives no price yet, so no days left: the gauge is absent, not 0
    assert re.search(r"^creator_monitor_balance_days_left ", metrics, re.MULTILINE) is None
    assert 0 <= _metric(metrics, "creator_monitor_budget_tokens_left") <= 3
    assert _metric(metrics, 'creator_monitor_paused{reason=""}') == 0
    assert _metric(metrics, "creator_monitor_inflight_calls") == 0
    assert _metric(metrics, "creator_monitor_oldest_overdue_seconds") == 0
    assert _metric(metrics, "creator_monitor_outbox_depth") == 0
    assert _metric(metrics, "creator_monitor_outbox_dead_letters") == 0
    assert token not in metrics
    # every reading the daemon declares, it sets: a success stamps its time, nothing stays NaN
    assert started <= _metric(metrics, "creator_monitor_last_success_timestamp_seconds")
    assert _metric(metrics, "creator_monitor_last_success_timestamp_seconds") <= time.time()
    for name, _ in GAUGES:
        assert not math.isnan(_metric(metrics, f"creator_monitor_{name}")), name
    assert "upstream_quota_left" not in metrics


def _terminate(database: str) -> str:
    # drop the daemon's pooled sessions so the new default applies to the next ones
    return (
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        f"WHERE datname = '{database}' AND pid <> pg_backend_pid()"
    )
