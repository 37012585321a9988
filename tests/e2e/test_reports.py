"""Scheduled reports (``[[reports]]``): the period arithmetic, and a weekly report sent by a
``creator-monitor run`` subprocess to a real SMTP server on 127.0.0.1 (aiosmtpd) with the HTML
attached, and to a ``json://`` receiver; a restart sends that period no second time."""

from __future__ import annotations

import asyncio
import base64
import email
import sqlite3
from datetime import UTC, datetime
from datetime import time as clock_time
from email import policy
from email.message import Message
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from aiosmtpd.controller import Controller
from support.daemon import child_env, creators, daemon_config, start_run, write_toml
from support.ports import free_port
from support.receiver import Receiver
from support.wait import until
from support.zygote import Child

from monitor.config import ReportConfig
from monitor.service.reporting.scheduled import last_period
from monitor.store import migrate
from monitor.upstream.simulator import SimKnobs, Simulator

SHANGHAI = ZoneInfo("Asia/Shanghai")


def test_periods_end_at_the_local_time_of_their_cadence() -> None:
    now = datetime(2026, 12, 3, 2, 0, tzinfo=UTC)  # Thursday 10:00 in Shanghai
    weekly = last_period(ReportConfig(name="w", at=clock_time(9, 0)), now, SHANGHAI)
    assert weekly.key == "weekly:2026-11-30"  # the Monday 09:00 before
    assert (weekly.first_day.isoformat(), weekly.last_day.isoformat()) == (
        "2026-11-23",
        "2026-11-29",
    )
    assert weekly.end == datetime(2026, 11, 30, 1, 0, tzinfo=UTC)
    daily = last_period(
        ReportConfig(name="d", cadence="daily", at=clock_time(11, 0)), now, SHANGHAI
    )
    assert daily.key == "daily:2026-12-02"  # 11:00 today has not come yet
    monthly = last_period(ReportConfig(name="m", cadence="monthly", day=3), now, SHANGHAI)
    assert monthly.key == "monthly:2026-12-03"
    assert monthly.first_day.isoformat() == "2026-11-03"


class Mailbox:
    """aiosmtpd handler keeping every message it is given."""

    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(email.message_from_bytes(envelope.content, policy=policy.default))
        return "250 Message accepted for delivery"


async def _run(folder: Path, config: Path, token: str, name: str) -> Child:
    return await start_run(config, folder / f"{name}.stderr", child_env(token), folder)


@pytest.mark.slow
async def test_weekly_report_reaches_smtp_with_html_and_json_once(
    tmp_path: Path, token: str
) -> None:
    db = tmp_path / "h.db"
    db_url = f"sqlite+aiosqlite:///{db}"
    await migrate.upgrade(db_url)
    mailbox = Mailbox()
    smtp = Controller(mailbox, hostname="127.0.0.1", port=free_port())
    smtp.start()
    try:
        async with Simulator(SimKnobs(latency_ms=10)) as sim, Receiver() as receiver:
            mail = (
                f"mailto://127.0.0.1:{smtp.port}?from=monitor@example.com&to=ops@example.com"
                "&secure=no"
            )
            doc = daemon_config(
                sim.base_url,
                db_url,
                creators(3),
                budget={"calls_per_minute": 600, "burst": 10},
                extra={
                    "channels": [
                        {"name": "mail", "url": mail},
                        {"name": "chat", "url": receiver.url("/chat"), "language": "zh"},
                    ],
                    "reports": [{"name": "weekly", "cadence": "weekly", "at": "09:00"}],
                },
            )
            config = write_toml(tmp_path / "config.toml", doc)
            first = await _run(tmp_path, config, token, "first")
            try:
                await until(lambda: mailbox.messages and receiver.bodies("/chat"), 90, "the report")
            finally:
                first.terminate()
                await asyncio.wait_for(first.wait(), 30)
            second = await _run(tmp_path, config, token, "second")
            try:
                await asyncio.sleep(8)  # its report job runs 3 s after start-up
            finally:
                second.terminate()
                await asyncio.wait_for(second.wait(), 30)
    finally:
        smtp.stop()

    [message] = mailbox.messages
    assert message["Subject"].startswith("Weekly report ")
    parts = list(message.walk())
    attached = [p for p in parts if p.get_filename()]
    assert len(attached) == 1
    assert attached[0].get_filename().startswith("report-weekly-weekly-")
    html = attached[0].get_payload(decode=True).decode("utf-8")
    assert html.startswith("<!DOCTYPE html>")
    assert 'class="chart-data"' in html
    text = "\n".join(
        p.get_payload(decode=True).decode("utf-8")
        for p in parts
        if p.get_content_maintype() == "text" and not p.get_filename()
    )
    assert "Top movers" in text
    assert "calls used" in text

    [chat] = receiver.bodies("/chat")
    assert chat["title"].startswith("周报 ")
    assert "变化最大" in chat["message"]
    [file] = chat["attachments"]
    assert file["filename"].endswith(".html")
    assert base64.b64decode(file["base64"]).decode("utf-8").startswith("<!DOCTYPE html>")

    with sqlite3.connect(db) as conn:
        runs = conn.execute("SELECT name, period FROM report_runs").fetchall()
    assert len(runs) == 1
    assert runs[0][0] == "weekly"
    for name in ("first", "second"):
        assert token not in (tmp_path / f"{name}.stderr").read_text(encoding="utf-8")


async def test_a_period_is_claimed_once_on_both_backends(db_url: str) -> None:
    """Two instances finishing the same period at once: one run row, one set of messages."""
    from monitor.store import Store
    from monitor.store.outbox import NewMessage

    now = datetime(2026, 12, 3, 2, 0, tzinfo=UTC)
    await migrate.upgrade(db_url)
    async with Store.open(db_url, clock=lambda: now) as one, Store.open(db_url) as two:
        message = NewMessage("mail", "report", "info", "Weekly report", "body",
                             attachment={"report": "w", "period": "weekly:2026-11-30"})  # fmt: skip
        results = await asyncio.gather(
            *(
                store.claim_report(
                    "w", "weekly:2026-11-30", html=f"<p>{n}</p>", messages=[message],
                    owner=f"i{n}", now=now,
                )
                for n, store in enumerate((one, two, one, two))
            )
        )  # fmt: skip
        assert sorted(results) == [False, False, False, True]
        assert await one.report_sent("w", "weekly:2026-11-30")
        winner = results.index(True)
        assert await two.report_html("w", "weekly:2026-11-30") == f"<p>{winner}</p>"
        assert (await one.outbox_counts(channel="mail"))["pending"] == 1
