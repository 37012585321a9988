"""The account's money on every surface, from one SQLite file: ``status`` (in this process), the
console's account page in English and Chinese and the API's account answer
(``/api/v1/budget``) over a real socket. Two readings an hour apart with 40 billed calls between
them: 98.00 CNY left, 0.05 a call, 240 calls a day planned, 8.2 days left."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest
import pytest_asyncio
from support.cli import run_cli
from support.daemon import write_toml
from support.sim import creator_id

from monitor.config import parse_config
from monitor.model import Balance, Creator, Variant
from monitor.ops.telemetry import Telemetry, serve
from monitor.policy.budget import BudgetPolicy, quarter_of
from monitor.service.fetching.budget_view import ledger_day
from monitor.store import FetchRecord, Store, migrate
from monitor.web.server import console_mount

ADMIN = "admin-secret-balance-1"
SHANGHAI = ZoneInfo("Asia/Shanghai")
NOW = datetime.now(UTC)
FIRST = quarter_of(NOW) - timedelta(hours=2)  # read at a quarter hour, and an hour later
USERS = [creator_id(n) for n in range(10)]


def _document(db: str, **account: str) -> dict[str, object]:
    """10 creators every hour: 240 calls a day."""
    return {
        "storage": {"url": db},
        "budget": {"timezone": "Asia/Shanghai"},
        "defaults": {"every": "1h"},
        "account": account,
        "creators": [{"user_id": u} for u in USERS],
    }


async def _seed(url: str, *, readings: bool = True) -> None:
    await migrate.upgrade(url)
    if not readings:
        return
    budget = BudgetPolicy(calls_per_minute=600, burst=100, daily_calls=5000, zone=SHANGHAI)
    async with Store.open(url) as store:
        ids = await store.sync_creators([Creator(u) for u in USERS])
        await store.store_balance(FIRST, Balance(Decimal("100.0000")))
        for quarter in range(4):
            for n in range(10):
                sent = FIRST + timedelta(minutes=15 * quarter, seconds=n + 1)
                await store.count_billed(ledger_day(budget, sent))
                # the billed call as the fetch records it: the price counts these
                await store.record_fetch(
                    FetchRecord(ids[USERS[n]], Variant(), sent, code=0, billed=True)
                )
        await store.store_balance(FIRST + timedelta(hours=1), Balance(Decimal("98.0000")))


def _status(tmp_path: Path, *, readings: bool = True, **account: str) -> str:
    url = f"sqlite+aiosqlite:///{tmp_path / 'h.db'}"
    asyncio.run(_seed(url, readings=readings))
    config = write_toml(tmp_path / "config.toml", _document(url, **account))
    done = run_cli("-c", config, "status")
    assert done.returncode == 0, done.stderr
    return done.stdout.split("\naccount\n")[1]


def test_status_shows_the_balance_the_price_per_call_and_the_days_left(tmp_path: Path) -> None:
    account = _status(tmp_path)
    read = (FIRST + timedelta(hours=1)).astimezone(SHANGHAI)
    assert re.search(
        rf"^balance\s+98\.00 CNY \(read {read:%Y-%m-%d %H:%M} Asia/Shanghai, 1h ago\)$",
        account,
        re.M,
    )
    assert re.search(
        r"^price per call\s+0\.0500 CNY \(derived from 2 readings and the billed calls "
        r"between them\)$",
        account,
        re.M,
    )
    assert re.search(r"^days left\s+8\.2 at 240 billed calls/day \(the plan\)$", account, re.M)


@pytest.mark.parametrize(
    ("account", "line"),
    [
        ({}, "not read yet (the daemon reads it every 1h)"),
        ({"balance_every": "off"}, 'not read (account.balance_every = "off")'),
    ],
)
def test_status_says_why_there_is_no_balance(
    tmp_path: Path, account: dict[str, str], line: str
) -> None:
    shown = _status(tmp_path, readings=False, **account)
    assert re.search(rf"^balance\s+{re.escape(line)}$", shown, re.M)
    assert "price per call" not in shown
    assert "days left" not in shown


@pytest_asyncio.fixture
async def console(tmp_path: Path) -> AsyncIterator[str]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'c.db'}"
    await _seed(url)
    token = tmp_path / "admin"
    token.write_text(ADMIN + "\n")
    token.chmod(0o600)
    document = _document(url) | {"http": {"token_file": str(token)}}
    config = parse_config(document)

    async def healthy() -> bool:
        return True

    async with AsyncExitStack() as stack:
        mount = await console_mount(config, stack, {})
        endpoint = await serve("127.0.0.1:0", Telemetry(), healthy, mount=mount)
        stack.push_async_callback(endpoint.close)
        yield endpoint.url


async def _get(base: str, path: str) -> httpx.Response:
    headers = {"Authorization": f"Bearer {ADMIN}"}
    async with httpx.AsyncClient(base_url=base, headers=headers) as client:
        reply = await client.get(path)
    assert reply.status_code == 200, reply.text
    return reply


def _text(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


async def test_the_account_page_and_the_api_show_the_money(console: str) -> None:
    read = (FIRST + timedelta(hours=1)).astimezone(SHANGHAI)
    en = _text((await _get(console, "/account?lang=en")).text)
    assert f"Balance 98.00 CNY Read: {read:%Y-%m-%d %H:%M} Asia/Shanghai" in en
    assert "Price per call 0.0500 CNY derived from the readings" in en
    assert "Days left 8.2 at the plan: 240 calls/day" in en
    zh = _text((await _get(console, "/account?lang=zh")).text)
    assert f"余额 98.00 CNY 读取于: {read:%Y-%m-%d %H:%M} Asia/Shanghai" in zh
    assert "每次调用价格 0.0500 CNY 由余额读数推算" in zh
    assert "剩余天数 8.2 按当前计划: 240 次/天" in zh

    budget = (await _get(console, "/api/v1/budget")).json()
    assert budget["balance"] == {
        "amount": "98.0000",
        "currency": "CNY",
        "read_at": (FIRST + timedelta(hours=1)).isoformat(),
        "price_per_call": "0.050000",
        "days_left": 8.17,
        "calls_per_day": 240.0,
    }
