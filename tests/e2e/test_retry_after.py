"""``Retry-After`` on a 302 is a hint, never trusted: 1e12, inf, -5, garbage and HTTP-dates give
a bounded pause, no traceback and no storm of calls, through the client, the budget and the
real daemon on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from aiohttp import web
from pydantic import SecretStr
from support.daemon import creators, daemon_config
from support.wait import until

from monitor.config import parse_config
from monitor.daemon import Daemon
from monitor.daemon.options import Options
from monitor.errors import RateLimited
from monitor.policy.budget import BudgetPolicy
from monitor.store import migrate
from monitor.upstream.client import (
    CORE_DATA_PATH,
    MAX_RETRY_AFTER_S,
    JustOneClient,
    parse_retry_after,
)

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
HOUR = timedelta(seconds=MAX_RETRY_AFTER_S)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("120", 120.0),
        (" 7 ", 7.0),
        ("1.5", 1.5),
        ("0", 0.0),
        ("1e12", MAX_RETRY_AFTER_S),
        ("1e400", None),  # float() says inf
        ("inf", None),
        ("-inf", None),
        ("nan", None),
        ("-5", None),
        ("abc", None),
        ("", None),
        (None, None),
        ("9" * 100, None),  # no reading a 100-digit "number"
        (format_datetime(NOW + timedelta(seconds=90), usegmt=True), 90.0),
        (format_datetime(NOW - timedelta(days=3), usegmt=True), 0.0),  # already past
        ("Fri, 31 Dec 9999 23:59:59 GMT", MAX_RETRY_AFTER_S),
        ("Thu, 01 Jan 1970 00:00:00 GMT", 0.0),
        ("Mon, 99 Foo 2026 99:99:99 GMT", None),
    ],
)
def test_retry_after_is_parsed_and_clamped(value: str | None, seconds: float | None) -> None:
    assert parse_retry_after(value, NOW) == seconds


@pytest.mark.parametrize("hint", [1e12, 1e308, math.inf, math.nan, -5.0, 0.0, None])
def test_the_budget_never_trusts_a_hint(hint: float | None) -> None:
    """Even a hint the client would never pass (inf, NaN, 1e308) cannot overflow the pause."""
    budget = BudgetPolicy(
        calls_per_minute=30, burst=5, daily_calls=2000, zone=ZoneInfo("Asia/Shanghai")
    )
    state = budget.on_result(budget.initial(NOW), RateLimited("x", retry_after=hint), NOW)

    assert state.paused_until is not None
    assert budget.slow_pause <= state.paused_until - NOW <= HOUR


# --------------------------------------------------------------------------- over real HTTP


@dataclass
class _Throttling:
    """A tiny upstream that answers every call with code 302 and one ``Retry-After``."""

    retry_after: str
    calls: int = 0
    url: str = ""

    async def answer(self, request: web.Request) -> web.Response:
        self.calls += 1
        return web.json_response(
            {"code": 302, "message": "rate limit exceeded", "data": None},
            headers={"Retry-After": self.retry_after},
        )


@asynccontextmanager
async def throttling(retry_after: str) -> AsyncIterator[_Throttling]:
    upstream = _Throttling(retry_after)
    app = web.Application()
    app.router.add_get(CORE_DATA_PATH, upstream.answer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    upstream.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield upstream
    finally:
        await runner.cleanup()


FAR_DATE = "Fri, 31 Dec 9999 23:59:59 GMT"


@pytest.mark.parametrize(
    ("header", "expected"),
    [("1e12", MAX_RETRY_AFTER_S), ("inf", None), ("-5", None), ("abc", None), (FAR_DATE, 3600.0)],
)
async def test_the_client_reads_the_header_of_a_302(
    header: str, expected: float | None, token: str
) -> None:
    async with (
        throttling(header) as upstream,
        JustOneClient(base_url=upstream.url, token=SecretStr(token)) as client,
    ):
        with pytest.raises(RateLimited) as limited:
            await client.core_data("5c3bf7f7000000000602fd63")

    assert limited.value.retry_after == expected
    assert upstream.calls == 1


@pytest.mark.parametrize("header", ["1e12", "inf", "-5", "abc", FAR_DATE])
async def test_the_daemon_backs_off_without_a_storm(
    header: str, db_url: str, token: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Five creators due at once on real time: the five calls in flight may land (burst 5),
    then the pause holds for the rest of the window; reported was 503 calls in 35 s."""
    await migrate.upgrade(db_url)
    caplog.set_level(logging.INFO)
    async with throttling(header) as upstream:
        document = daemon_config(
            upstream.url,
            db_url,
            creators(5),
            schedule={"max_in_flight": 5, "retry_attempts": 2, "retry_base": "1s"},
        )
        daemon = Daemon(
            parse_config(document),
            Options(tick=0.2, drain_every=60.0, environ={"JUSTONEAPI_TOKEN": token}),
        )
        task = asyncio.get_running_loop().create_task(daemon.run())
        # three seconds from the first call (a loaded host may take a while to send it)
        await until(lambda: upstream.calls >= 1, 30, "the first call", every=0.01)
        await asyncio.sleep(3.0)
        daemon.request_stop()
        assert await asyncio.wait_for(task, timeout=30) == 0
        stopped = datetime.now(UTC)

    assert 1 <= upstream.calls <= 5
    state = daemon.gate.state
    assert state.paused_until is not None
    assert timedelta(seconds=50) <= state.paused_until - stopped <= HOUR
    assert not [r for r in caplog.records if r.exc_info or "Traceback" in r.getMessage()]
