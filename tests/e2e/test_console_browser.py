"""The console in Debian's headless Chromium, driven by Playwright (nothing downloaded: the
system browser via ``executable_path``), against a real ``creator-monitor run`` on the
simulator: log in, filter the overview, a creator's chart drawn, silence an alert and find it
in ``creator-monitor silence list``, acknowledge an alert, a write without the CSRF token
refused, log out. Screenshots of each page go to $CONSOLE_SCREENS (when set).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.console import LiveConsole, alerts_json, live_console, no_secret_in

#: one worker runs the module (ONE_WORKER_MODULES in conftest.py): its daemon starts once
pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
LAUNCH_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveConsole]:
    from conftest import TEST_TOKEN

    yield from live_console(tmp_path_factory.mktemp("console-browser"), TEST_TOKEN)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not Path(CHROMIUM).exists() and shutil.which("chromium") is None:
        if os.environ.get("CI"):
            pytest.fail("Chromium is required under CI (.ci/run installs it)")
        pytest.skip("no system Chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(
            executable_path=CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium"),
            args=LAUNCH_ARGS,
            headless=True,
        )
        yield chromium
        chromium.close()


def _shot(page: object, name: str) -> None:
    folder = os.environ.get("CONSOLE_SCREENS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=True)  # type: ignore[attr-defined]


def test_console_flows_in_chromium(live: LiveConsole, browser: object) -> None:
    from playwright.sync_api import expect

    context = browser.new_context(  # type: ignore[attr-defined]
        base_url=live.url, locale="en-US", viewport={"width": 1360, "height": 900}
    )
    page = context.new_page()
    try:
        # log in: a wrong token is refused, the right one lands on the overview
        page.goto("/")
        expect(page).to_have_url(f"{live.url}/login?next=/")
        _shot(page, "login")
        page.fill("input[name=token]", "wrong-token")
        page.click("button[type=submit]")
        expect(page.locator(".error")).to_have_text("Wrong token.")
        page.fill("input[name=token]", live.admin)
        page.click("form.login button[type=submit]")
        expect(page.locator("h1")).to_have_text("Overview")
        cookie = next(c for c in context.cookies() if c["name"] == "cm_session")
        assert cookie["httpOnly"]
        assert cookie["sameSite"] == "Strict"
        expect(page.locator("#overview tbody tr")).to_have_count(6)
        expect(page.locator("#overview svg.spark polyline").first).to_be_visible()
        _shot(page, "overview")
        no_secret_in(page.content(), live)

        # filter the overview by tag, then by name
        page.fill("input[name=tag]", "food")
        page.click("#filters button[type=submit]")
        rows = page.locator("#overview tbody tr")
        expect(rows).to_have_count(2)
        assert sorted(rows.locator("td:first-child a").all_inner_texts()) == [
            "Bob Wang",
            "Eve Sun",
        ]
        page.fill("input[name=tag]", "")
        page.fill("input[name=q]", "carol")
        page.click("#filters button[type=submit]")
        expect(rows).to_have_count(1)
        _shot(page, "overview-filtered")

        # a creator's chart is drawn (a real path with points) with its alert marker
        rows.locator("td:first-child a").first.click()
        expect(page.locator("h1")).to_contain_text("Carol Li")
        chart = page.locator('svg.chart[data-metric="imp"]')
        expect(chart).to_have_attribute("data-drawn", "1")
        d = chart.locator("path.line").get_attribute("d") or ""
        assert d.count("L") >= 20
        expect(chart.locator("circle.marker")).to_have_count(1)
        expect(page.locator("#fetch-log tbody tr").first).to_contain_text("200")
        _shot(page, "creator")

        # silence an alert in the UI; the CLI sees it
        page.goto("/alerts")
        first = page.locator("#alerts tbody tr").first
        scope_link = first.locator("td:nth-child(3) a").get_attribute("href") or ""
        first.locator("input[name=reason]").fill("browser silence")
        first.locator("input[name=for]").fill("3h")
        first.locator(".silence-button").click()
        expect(page.locator("#silences")).to_contain_text("browser silence")
        listed = live.cli("silence", "list")
        assert listed.returncode == 0
        assert "browser silence" in listed.stdout
        assert scope_link.rsplit("/", 1)[-1] in listed.stdout

        # acknowledge an alert: stored, shown, the button gone
        row = page.locator("#alerts tbody tr").filter(has=page.locator(".ack-button")).first
        alert_id = int(row.get_attribute("data-alert") or 0)
        row.locator(".ack-button").click()
        acked = page.locator(f'#alerts tr[data-alert="{alert_id}"] td.ack')
        expect(acked).to_contain_text("by console")
        stored = next(a for a in alerts_json(live) if a["id"] == alert_id)
        assert stored["acked_by"] == "console"
        _shot(page, "alerts")

        # a write without (or with a wrong) CSRF token is refused, and changes nothing
        before = live.cli("silence", "list").stdout
        for form in ({"rule": "imp-seen", "for": "1h"}, {"rule": "x", "for": "1h", "csrf": "no"}):
            refused = page.request.post(f"{live.url}/silences", form=form)
            assert refused.status == 403
            assert "CSRF" in refused.text()
        api = page.request.post(f"{live.url}/api/v1/silences", data={"rule": "x", "for": "1h"})
        assert api.status == 403
        assert live.cli("silence", "list").stdout == before

        page.goto("/account")
        expect(page.locator("#calls-today")).not_to_have_text("0")
        _shot(page, "account")
        page.goto("/instances")
        _shot(page, "instances")
        page.goto("/?lang=zh")
        expect(page.locator("h1")).to_have_text("总览")
        _shot(page, "overview-zh")
        page.goto("/?lang=en")

        # log out: the session is gone, the pages ask for a login again
        page.click("#logout")
        expect(page).to_have_url(f"{live.url}/login")
        page.goto("/alerts")
        expect(page).to_have_url(f"{live.url}/login?next=/alerts")
        gone = page.request.get(f"{live.url}/api/v1/alerts")
        assert gone.status == 401
    finally:
        context.close()


def test_failed_logins_are_rate_limited(live: LiveConsole, browser: object) -> None:
    context = browser.new_context(base_url=live.url)  # type: ignore[attr-defined]
    page = context.new_page()
    try:
        statuses = []
        for _ in range(7):
            page.goto("/login")
            page.fill("input[name=token]", "guess")
            with page.expect_response(lambda r: r.request.method == "POST") as reply:
                page.click("form.login button[type=submit]")
            statuses.append(reply.value.status)
        assert statuses[:4] == [401] * 4
        assert 429 in statuses[4:]
        # even the right token waits out the lock
        page.fill("input[name=token]", live.admin)
        with page.expect_response(lambda r: r.request.method == "POST") as reply:
            page.click("form.login button[type=submit]")
        assert reply.value.status == 429
        assert int(reply.value.headers["retry-after"]) > 0
    finally:
        context.close()
