"""The console in-process over a real SQLite file and a real socket: fully translated in
Chinese (summaries, severities, variants, the metric select, chart titles, placeholders), a
banner while calls are paused, each overview column naming its metric, times in
``budget.timezone`` with the zone in the header, the rolling-median note once, and an empty
chart that says "no data" in Chromium."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from sqlalchemy import insert
from support.alerting import points
from support.tls import tls_context

from monitor.config import parse_config
from monitor.model import AlertState, Creator, Phase, Severity, Variant
from monitor.ops.telemetry import Telemetry, serve
from monitor.policy.budget_state import BudgetState
from monitor.store import FetchRecord, Store, migrate
from monitor.store.engine import make_engine
from monitor.store.schema import budget_state
from monitor.web.server import console_mount

ADMIN = "admin-secret-surfaces-1"
LILYY = Creator("5c3bf7f7000000000602fd63", "莉莉健身", ("fitness",))
START = date(2025, 11, 20)
NOW = datetime.now(UTC).replace(microsecond=0)
FIRED = datetime(2025, 12, 11, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai
CHROMIUM = "/usr/bin/chromium"


async def _seed(url: str) -> None:
    await migrate.upgrade(url)
    async with Store.open(url) as store:
        ids = await store.sync_creators([LILYY])
        await store.schedule_new([(ids[LILYY.user_id], Variant(), FIRED)])
        await store.record_fetches(
            [
                FetchRecord(
                    ids[LILYY.user_id],
                    Variant(),
                    started_at=FIRED,
                    due_at=None,
                    latency_ms=1234,
                    http_status=200,
                    code=0,
                    billed=True,
                    error=None,
                    data=points(START, [1000 + 10 * i for i in range(21)]),  # no cpuv at all
                    raw_body=None,
                )
            ]
        )
        alerts = [
            AlertState(
                rule="reads-down",
                scope=LILYY.user_id,
                variant=Variant().label,
                creator_id=ids[LILYY.user_id],
                severity=Severity.WARNING,
                state=Phase.FIRING,
                metric="read",
                value=800.0,
                baseline=1200.0,
                fired_at=FIRED,
                summary="read 1200 → 800 (-33.3 %) from 2025-12-03 to 2025-12-10; values are "
                "rolling medians per note, not daily totals",
                details={
                    "kind": "change",
                    "rolling_median": True,
                    "change_pct": -100 / 3,
                    "date": "2025-12-10",
                    "baseline_date": "2025-12-03",
                },
            ),
            AlertState(
                rule="reads-anomaly",
                scope=LILYY.user_id,
                variant=Variant().label,
                creator_id=ids[LILYY.user_id],
                severity=Severity.CRITICAL,
                state=Phase.FIRING,
                metric="read",
                value=800.0,
                baseline=1190.0,
                fired_at=FIRED,
                summary="read 800 is -5.2 robust deviations from the median 1190 of 14 points",
                details={"kind": "anomaly", "score": -5.2, "rolling_median": True},
            ),
            AlertState(
                rule="account",
                scope="account",
                severity=Severity.CRITICAL,
                state=Phase.FIRING,
                fired_at=FIRED,
                summary="account-wide error 601: all calls paused",
                details={"kind": "api_error", "code": 601, "reason": "insufficient balance"},
            ),
        ]
        for alert in alerts:
            assert await store.commit_transition(alert, [], now=FIRED, expect=None)


async def _pause(url: str, code: int, reason: str, until: datetime) -> None:
    engine = make_engine(url)
    try:
        row = BudgetState(
            tokens=1.0,
            refilled_at=NOW,
            paused_until=until,
            pause_code=code,
            pause_reason=reason,
        ).to_row()
        async with engine.begin() as conn:
            await conn.execute(insert(budget_state).values(name="global", updated_at=NOW, **row))
    finally:
        await engine.dispose()


@pytest_asyncio.fixture
async def console(tmp_path: Path) -> AsyncIterator[tuple[str, str]]:
    """(console URL, database URL) of a console over a seeded SQLite file."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'c.db'}"
    await _seed(url)
    token = tmp_path / "admin"
    token.write_text(ADMIN + "\n")
    token.chmod(0o600)
    config = parse_config(
        {
            "storage": {"url": url},
            "budget": {"timezone": "Asia/Shanghai"},
            "http": {"token_file": str(token)},
        }
    )

    async def healthy() -> bool:
        return True

    async with AsyncExitStack() as stack:
        mount = await console_mount(config, stack, {})
        endpoint = await serve("127.0.0.1:0", Telemetry(), healthy, mount=mount)
        stack.push_async_callback(endpoint.close)
        yield endpoint.url, url


async def page(base: str, path: str, lang: str) -> str:
    headers = {"Authorization": f"Bearer {ADMIN}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, verify=tls_context()) as client:
        reply = await client.get(f"{path}{'&' if '?' in path else '?'}lang={lang}")
    assert reply.status_code == 200, reply.text
    return reply.text


def text_of(html: str) -> str:
    """The page's visible words: no tags, scripts, attribute values or class names."""
    html = re.sub(r"<script.*?</script>", " ", html, flags=re.S)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


async def test_the_chinese_alerts_page_has_no_english_left(console: tuple[str, str]) -> None:
    base, _ = console
    html = await page(base, "/alerts", "zh")
    shown = text_of(html)
    assert "阅读 1,200 → 800（-33.3 %），2025-12-03 至 2025-12-10" in shown
    assert "阅读 800 偏离中位数 1,190 -5.2 个稳健标准差" in shown
    assert "账户级错误 601（账户余额不足）：所有调用已暂停" in shown
    assert "警告" in shown
    assert "严重" in shown
    for english in ("warning", "critical", "robust", "rolling", "account-wide", "read "):
        assert english not in shown, english
    # the note once, for the whole table; the zone once, in the header of each time column
    assert shown.count("滚动中位数") == 1
    assert "触发于 (Asia/Shanghai)" in shown
    assert "2025-12-11 10:00" in shown
    assert 'placeholder="用户 ID / 名称 / account"' in html


async def test_the_english_alerts_page_uses_the_shared_vocabulary(
    console: tuple[str, str],
) -> None:
    base, _ = console
    shown = text_of(await page(base, "/alerts", "en"))
    # a row stored in the old words reads in the shared ones: label, separators, no note
    assert "reads 1,200 → 800 (-33.3 %) from 2025-12-03 to 2025-12-10" in shown
    assert "not daily totals" not in shown.split("Values are rolling medians")[0]
    assert shown.count("rolling medians") == 1
    assert "Fired (Asia/Shanghai)" in shown


async def test_overview_names_the_metric_of_its_columns(console: tuple[str, str]) -> None:
    base, _ = console
    zh = await page(base, "/", "zh")
    assert re.search(r"最新数据 \(曝光\)", text_of(zh))
    assert re.search(r"7 日变化 \(曝光\)", text_of(zh))
    assert '<option value="imp" selected>曝光</option>' in zh
    assert '<option value="engage" >互动</option>' in zh
    assert "日常·全部类型·30天·全部" in zh
    en = await page(base, "/?metric=read", "en")
    assert "Last point (reads)" in text_of(en)


async def test_creator_page_names_charts_by_their_labels(console: tuple[str, str]) -> None:
    base, _ = console
    html = await page(base, f"/creators/{LILYY.user_id}", "zh")
    captions = re.findall(r"<figcaption>(.*?)</figcaption>", html)
    assert captions[:3] == ["曝光", "阅读", "互动"]
    assert 'data-empty="暂无数据"' in html
    # the fetch log: its time column names the zone, numbers carry the shared separators
    assert re.search(r"<th>时间 \(Asia/Shanghai\)</th>", html)
    assert '<td class="n">1,234</td>' in html
    assert "日常·全部类型·30天·全部" in html
    assert text_of(html).count("滚动中位数") == 1


async def test_a_banner_while_calls_are_paused(console: tuple[str, str]) -> None:
    base, db = console
    for path in ("/", "/alerts", "/account"):
        assert 'id="pause-banner"' not in await page(base, path, "en")
    probe = NOW + timedelta(minutes=15)
    await _pause(db, 601, "insufficient account balance", probe)
    local = probe.astimezone(__import__("zoneinfo").ZoneInfo("Asia/Shanghai"))
    for path in ("/", "/alerts", f"/creators/{LILYY.user_id}", "/account", "/instances"):
        en = text_of(await page(base, path, "en"))
        assert (
            "Calls are paused : insufficient balance (code 601) · Next probe "
            f"{local:%Y-%m-%d %H:%M} Asia/Shanghai"
        ) in en, path
    zh = text_of(await page(base, "/", "zh"))
    assert "调用已暂停 : 账户余额不足 (代码 601) · 下次探测" in zh


@pytest.mark.slow
@pytest.mark.skipif(
    not Path(CHROMIUM).exists() and not shutil.which("chromium"), reason="no Chromium"
)
async def test_an_empty_chart_says_no_data_in_chromium(console: tuple[str, str]) -> None:
    from playwright.async_api import async_playwright

    base, _ = console
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium"),
            args=["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"],
            headless=True,
        )
        try:
            context = await browser.new_context(
                extra_http_headers={"Authorization": f"Bearer {ADMIN}"}
            )
            tab = await context.new_page()
            for lang, words in (("en", "No data"), ("zh", "暂无数据")):
                await tab.goto(f"{base}/creators/{LILYY.user_id}?lang={lang}")
                empty = tab.locator('svg.chart[data-metric="cpuv"][data-drawn="1"] text.empty')
                assert await empty.text_content() == words
                drawn = tab.locator('svg.chart[data-metric="read"] path.line')
                assert await drawn.count() == 1  # a chart with data is drawn, not emptied
            if folder := os.environ.get("CONSOLE_SCREENS"):
                await tab.screenshot(path=str(Path(folder) / "surfaces-zh.png"), full_page=True)
        finally:
            await browser.close()
