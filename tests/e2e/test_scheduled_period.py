"""Issue 18 items 10 and 11: a scheduled report covers its own period (the days its header
names: points, alerts, calls and movers alike), a ``[[reports]]`` entry a reload adds starts
with the next period, and the stored HTML of old runs is dropped while their rows stay. A real
SQLite file seeded through the store, the real ``queue_due_reports`` and ``Daemon.reload``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest_asyncio
from sqlalchemy import insert, select
from support.alerting import LILYY, MIA, open_store, points, seed
from support.daemon import daemon_config, in_process, write_toml
from support.sim import FakeClock

from monitor.config import Config, load_config, parse_config
from monitor.model import Creator
from monitor.service.reporting.scheduled import queue_due_reports
from monitor.store import Store
from monitor.store.schema import alerts, budget_calls, notifications, report_runs

# 09:00 on Friday 2026-12-11 in Shanghai: the daily 08:00 report of Thursday 2026-12-10 is due
NOW = datetime(2026, 12, 11, 1, 0, tzinfo=UTC)
DAY = date(2026, 12, 10)


def _config(db_url: str, **storage: Any) -> Config:
    return parse_config(
        {
            "storage": {"url": db_url, **storage},
            "budget": {"daily_calls": 2000, "timezone": "Asia/Shanghai"},
            "creators": [
                {"user_id": LILYY, "name": "Lilyy"},
                {"user_id": MIA, "name": "Mia"},
            ],
            "channels": [{"name": "team", "url": "json://127.0.0.1:9/hook"}],
            "reports": [{"name": "daily", "cadence": "daily", "at": "08:00"}],
        }
    )


@pytest_asyncio.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    clock = FakeClock(NOW)
    opened = await open_store(f"sqlite+aiosqlite:///{tmp_path}/h.db", clock)
    try:
        yield opened
    finally:
        await opened.close()


async def _insert(store: Store, table: Any, rows: list[dict[str, Any]]) -> None:
    async with store._write() as conn:
        await conn.execute(insert(table), rows)


async def _rows(store: Store, table: Any) -> list[dict[str, Any]]:
    async with store._read() as conn:
        return [dict(r) for r in (await conn.execute(select(table))).mappings()]


def _local(day: date, hour: int) -> datetime:
    """``hour`` o'clock of ``day`` in Shanghai, as UTC."""
    return datetime(day.year, day.month, day.day, hour, tzinfo=UTC) - timedelta(hours=8)


async def _seed_a_month(store: Store) -> dict[str, int]:
    """30 daily points per creator ending on DAY (Lilyy's reads jump on DAY), calls counted on
    the day before, on DAY and on the morning after, and alerts in, before and after DAY."""
    start = DAY - timedelta(days=29)
    ids = await seed(
        store,
        [Creator(LILYY, "Lilyy"), Creator(MIA, "Mia")],
        {LILYY: points(start, [1000] * 29 + [3000]), MIA: points(start, [500] * 30)},
        NOW - timedelta(hours=2),
    )
    calls = [
        (DAY - timedelta(days=1), 13, 7),  # the day before
        (DAY, 1, 20),  # 01:00 on DAY: inside
        (DAY, 23, 14),  # 23:00 on DAY: inside
        (DAY + timedelta(days=1), 3, 5),  # 03:00 the next morning: after the period
    ]
    await _insert(
        store,
        budget_calls,
        [
            {"slot_at": _local(d, h), "day": d.isoformat(), "calls": n, "billed": n}
            for d, h, n in calls
        ],
    )
    fired = {
        "before": _local(DAY - timedelta(days=1), 12),
        "inside": _local(DAY, 12),
        "after": _local(DAY + timedelta(days=1), 8) + timedelta(minutes=30),
    }
    await _insert(
        store,
        alerts,
        [
            {
                "rule": f"rule-{name}",
                "creator_id": ids[LILYY],
                "scope": LILYY,
                "severity": "warning",
                "state": "firing",
                "fired_at": at,
                "summary": f"fired {name}",
            }
            for name, at in fired.items()
        ],
    )
    return ids


async def test_a_daily_report_counts_its_own_day(store: Store) -> None:
    await _seed_a_month(store)
    config = _config("sqlite+aiosqlite:///unused.db")
    assert await queue_due_reports(config, store, NOW, owner="t") == 1
    [message] = await _rows(store, notifications)
    [run] = await _rows(store, report_runs)
    html = run["html"]

    assert message["title"] == "Daily report 2026-12-10 – 2026-12-10: 1 alerts, 34 calls"
    body = message["body"]
    assert "34 calls used (34 billed) over 1 days" in body
    assert "rule-inside" in body
    assert "rule-before" not in body
    assert "rule-after" not in body
    assert "+200.0 %" in body  # Lilyy's jump: a mover, from the month of history
    assert "2026-12-10 – 2026-12-10 (Asia/Shanghai" in html
    assert "not enough history" not in html
    assert "no calls in the period" not in html
    period = html.split('id="period-alerts"', 1)[1].split("</section>", 1)[0]
    assert "fired inside" in period
    assert "fired after" not in period
    assert "fired before" not in period


async def test_not_enough_history_only_when_there_is_not(store: Store) -> None:
    await seed(
        store,
        [Creator(LILYY, "Lilyy")],
        {LILYY: points(DAY - timedelta(days=2), [1000, 1100, 1200])},
        NOW - timedelta(hours=2),
    )
    assert await queue_due_reports(_config("sqlite+aiosqlite:///u.db"), store, NOW, owner="t")
    [run] = await _rows(store, report_runs)
    assert "not enough history yet" in run["html"]
    assert "no calls in the period" in run["html"]


async def test_old_report_html_is_dropped_and_the_run_row_stays(store: Store) -> None:
    config = _config("sqlite+aiosqlite:///u.db")
    assert await queue_due_reports(config, store, NOW - timedelta(days=20), owner="t") == 1
    assert await queue_due_reports(config, store, NOW, owner="t") == 1
    old_key, new_key = "daily:2026-11-21", "daily:2026-12-11"
    assert await store.report_html("daily", old_key)
    assert await store.prune_report_html(NOW - timedelta(days=14)) == 1
    assert await store.report_html("daily", old_key) is None
    assert (await store.report_html("daily", new_key) or "").startswith("<!DOCTYPE html>")
    assert await store.report_sent("daily", old_key)  # still sent once: the row stays
    assert await queue_due_reports(config, store, NOW, owner="t") == 0
    assert await store.prune_report_html(NOW - timedelta(days=14)) == 0


def test_report_html_retention_is_a_storage_setting() -> None:
    config = _config("sqlite+aiosqlite:///u.db")
    assert config.storage.report_html_retention == timedelta(days=14)
    kept = _config("sqlite+aiosqlite:///u.db", report_html_retention="3d")
    assert kept.storage.report_html_retention == timedelta(days=3)


async def test_a_report_added_by_reload_starts_with_the_next_period(
    tmp_path: Path, token: str
) -> None:
    async with in_process(tmp_path, token) as world:
        doc = daemon_config(world.sim.base_url, world.db_url, [LILYY])
        doc["channels"] = [{"name": "team", "url": "json://127.0.0.1:9/hook"}]
        path = write_toml(tmp_path / "config.toml", doc)
        daemon = world.make(doc, config_path=path, report_every=60.0)
        added_at: list[datetime] = []
        reloads: list[asyncio.Task[bool]] = []
        reloaded_at: list[datetime] = []

        def done() -> bool:
            if not hasattr(daemon, "dispatcher") or not hasattr(daemon, "store"):
                return False
            if not added_at:
                write_toml(path, doc | {"reports": [{"name": "daily", "cadence": "daily"}]})
                added_at.append(world.clock())
                reloads.append(asyncio.get_running_loop().create_task(daemon.reload()))
                return False
            if not reloads[0].done():  # a loaded host: the reload's reads take real time
                return False
            if not reloaded_at:
                reloaded_at.append(world.clock())
            return world.clock() > reloaded_at[0] + timedelta(minutes=10)  # 10 report checks

        await world.run_until(daemon, done, real_timeout=120.0)
        store = await open_store(world.db_url, world.clock)
        try:
            runs = await _rows(store, report_runs)
            sent = [m for m in await _rows(store, notifications) if m["event"] == "report"]
            assert [(r["name"], r["html"]) for r in runs] == [("daily", "")]  # skipped, not sent
            assert sent == []
            # the first period that ends after the entry was added is sent
            config = load_config(path)
            later = added_at[0] + timedelta(days=1)
            assert await queue_due_reports(config, store, later, owner="t") == 1
        finally:
            await store.close()
