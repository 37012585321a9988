"""Alerts per (rule, creator, variant) on a real store (SQLite file and PostgreSQL): a creator
tracking two variants, one of which falls, gets one alert that names the variant; rows stored
before the variant column are migrated by alembic (0003_alert_variant)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest_asyncio
from sqlalchemy import text
from support.alerting import LILYY, open_store, points, table
from support.cli import run_cli
from support.daemon import write_toml
from support.sim import FakeClock

from monitor.config import parse_config
from monitor.model import AlertState, Creator, NoteType, Phase, Severity, Variant
from monitor.policy.rules import AccountSubject
from monitor.service.alerting.evaluation import Alerting, SeriesFacts
from monitor.store import FetchRecord, Store, migrate
from monitor.store.engine import make_engine

T0 = datetime.fromisoformat("2025-12-11T02:00:00+00:00")
START = date(2025, 11, 20)
LILYY_C = Creator(LILYY, "Lilyy", ("fitness",))
VIDEO = Variant(note_type=NoteType.VIDEO)
PHOTO = Variant(note_type=NoteType.PHOTO_TEXT)


@pytest_asyncio.fixture
async def store(db_url: str) -> AsyncIterator[Store]:
    opened = await open_store(db_url, FakeClock(T0))
    try:
        yield opened
    finally:
        await opened.close()


async def record(store: Store, creator_id: int, variant: Variant, reads: list[int]) -> None:
    await store.record_fetches(
        [
            FetchRecord(
                creator_id,
                variant,
                started_at=T0,
                due_at=None,
                latency_ms=5,
                http_status=200,
                code=0,
                billed=True,
                error=None,
                data=points(START, reads),
                raw_body=None,
            )
        ]
    )


async def test_two_variants_one_falls_one_alert_naming_it(store: Store) -> None:
    config = parse_config(
        {
            "creators": [
                {
                    "user_id": LILYY,
                    "name": "Lilyy",
                    "variants": [{"note_type": "VIDEO"}, {"note_type": "PHOTO_TEXT"}],
                }
            ],
            "channels": [
                {"name": "slack", "url": "json://127.0.0.1:9/a"},
                {"name": "mail", "url": "json://127.0.0.1:9/b", "language": "zh"},
            ],
            "rules": [
                {"name": "engage-low", "kind": "threshold", "metric": "engage", "op": "<",
                 "value": 100}
            ],
        }
    )  # fmt: skip
    ids = await store.sync_creators([LILYY_C])
    await record(store, ids[LILYY], VIDEO, [1500] * 20 + [990])  # engage 99: falls under 100
    await record(store, ids[LILYY], PHOTO, [1500] * 21)  # engage 150: fine
    alerting = Alerting(config, store, clock=lambda: T0)
    facts = [SeriesFacts(v, T0, 0, 0, T0 - timedelta(days=30)) for v in (VIDEO, PHOTO)]
    account = AccountSubject(now=T0, used_today=1, daily_calls=100)
    queued = await alerting.evaluate_creator(ids[LILYY], LILYY_C, facts, account)

    rows = await table(store, "alerts")
    assert [(r["rule"], r["variant"], r["state"]) for r in rows] == [
        ("engage-low", VIDEO.label, "firing")
    ]
    assert rows[0]["summary"] == "engagements 99 < 100 (threshold) on 2025-12-10"
    messages = await table(store, "notifications")
    assert queued == len(messages) == 2
    en, zh = messages
    assert en["title"] == "[FIRING] Lilyy: engagements 99 < 100 (threshold) · engage-low"
    assert VIDEO.label in en["body"]
    assert "（阈值）" in zh["title"]
    assert VIDEO.label in zh["body"]
    listed = await store.list_alerts()
    assert [(a.variant, a.variants) for a in listed] == [(VIDEO.label, 2)]

    # the variant recovers: one resolution, worded as such
    await record(store, ids[LILYY], VIDEO, [1500] * 20 + [990, 1020])
    await alerting.evaluate_creator(ids[LILYY], LILYY_C, facts, account)
    messages = await table(store, "notifications")
    assert [m["event"] for m in messages] == ["firing", "firing", "resolved", "resolved"]
    assert messages[2]["title"] == (
        "[RESOLVED] Lilyy: engagements back to 102 (≥ 100) · engage-low"
    )
    assert messages[3]["title"].startswith("【已恢复】Lilyy：互动 回到 102（≥ 100）")


async def test_migration_gives_old_alerts_their_variant(db_url: str) -> None:
    await migrate.upgrade(db_url, "0001")
    engine = make_engine(db_url)
    now = "2025-12-11T02:00:00.000000Z" if db_url.startswith("sqlite") else "2025-12-11 02:00Z"
    stmts = [
        "INSERT INTO creators (id, user_id, name, tags, created_at, updated_at) VALUES "
        f"(1, '{LILYY}', 'Lilyy', '[]', '{now}', '{now}'), "
        f"(2, '5a0b1c2d3e4f5a6b7c8d9e0f', 'Bo', '[]', '{now}', '{now}')",
        "INSERT INTO schedule (creator_id, business, note_type, date_type, advertise, "
        f"next_due_at) VALUES (1, 'DAILY_NOTE', 'VIDEO', 'DAY_30', 'ALL', '{now}'), "
        f"(2, 'DAILY_NOTE', 'VIDEO', 'DAY_30', 'ALL', '{now}'), "
        f"(2, 'DAILY_NOTE', 'PHOTO_TEXT', 'DAY_30', 'ALL', '{now}')",
        "INSERT INTO alerts (id, rule, creator_id, scope, severity, state) VALUES "
        f"(1, 'r', 1, '{LILYY}', 'warning', 'firing'), "
        "(2, 'r', 2, '5a0b1c2d3e4f5a6b7c8d9e0f', 'warning', 'firing'), "
        "(3, 'budget', NULL, 'account', 'warning', 'firing')",
    ]
    try:
        async with engine.begin() as conn:
            for stmt in stmts:
                await conn.execute(text(stmt))
    finally:
        await engine.dispose()
    assert await migrate.upgrade(db_url) == migrate.head()
    async with Store.open(db_url, clock=lambda: T0) as store:
        rows = await table(store, "alerts")
    # a creator with one tracked variant: that one; with several or none: '' (resolved later)
    assert [(r["id"], r["variant"]) for r in rows] == [
        (1, "DAILY_NOTE/VIDEO/DAY_30/ALL"),
        (2, ""),
        (3, ""),
    ]


async def test_alerts_command_names_the_variant_cuts_with_an_ellipsis_and_shows_the_zone(
    tmp_path: Path,
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'h.db'}"
    async with await open_store(url, FakeClock(T0)) as store:
        ids = await store.sync_creators([LILYY_C])
        await store.schedule_new([(ids[LILYY], VIDEO, T0), (ids[LILYY], PHOTO, T0)])
        for variant in (VIDEO, PHOTO):
            await record(store, ids[LILYY], variant, [1500] * 21)
        long = "engagements 99 < 100 (threshold) on 2025-12-10 " + "and a long tail of words " * 4
        assert await store.commit_transition(
            AlertState(
                rule="engage-low",
                scope=LILYY,
                variant=VIDEO.label,
                creator_id=ids[LILYY],
                severity=Severity.WARNING,
                state=Phase.FIRING,
                fired_at=T0,
                summary=long,
            ),
            [],
            now=T0,
            expect=None,
        )
    config = write_toml(
        tmp_path / "c.toml",
        {"storage": {"url": url}, "budget": {"timezone": "Asia/Shanghai"}},
    )
    # main runs its own event loop: in a thread, beside this test's
    done = await asyncio.to_thread(
        run_cli, "--config", str(config), "alerts", env={"JUSTONEAPI_TOKEN": "t" * 32}
    )
    assert done.returncode == 0, done.stderr
    header, line = done.stdout.splitlines()[:2]
    assert "variant" in header.split()
    assert VIDEO.label in line
    # 02:00 UTC in the configured zone, which the header names once
    assert "fired (Asia/Shanghai)" in header
    assert "  2025-12-11 10:00  " in line
    assert "+08:00" not in line
    assert line.rstrip().endswith("…")
    assert line.rstrip().endswith(" and a long…")  # cut at a word
