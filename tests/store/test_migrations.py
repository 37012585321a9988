"""Migrations on both backends: empty to head, down and up again, no drift from
monitor.store.schema, concurrent upgrades, and a runtime that needs no alembic.ini."""

from __future__ import annotations

import asyncio
import sqlite3
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from support.receiver import Receiver

from monitor.config import NotifyConfig
from monitor.errors import SchemaOutOfDate
from monitor.notify.sender import Notifier
from monitor.store import Store, migrate
from monitor.store.engine import make_engine
from monitor.store.revision import HEAD_REVISION, KNOWN_REVISIONS, migrations_dir
from monitor.store.schema import metadata

CONTRACT = {  # SPEC §4: tables and columns people query
    "creators": {"id", "user_id", "name", "tags"},
    "fetches": {"creator_id", "business", "note_type", "date_type", "advertise", "started_at",
                "latency_ms", "http_status", "code", "billed", "error"},
    "daily_metrics": {"creator_id", "business", "note_type", "date_type", "advertise", "date_key",
                      "imp", "read", "engage", "cpm", "cpe", "cpv", "cpuv", "third_user_num"},
    "alerts": {"rule", "creator_id", "severity", "state", "fired_at", "resolved_at", "summary"},
    "notifications": {"alert_id", "channel", "event", "status", "attempts", "last_error",
                      "sent_at"},
}  # fmt: skip


async def _layout(url: str) -> tuple[dict[str, set[str]], set[str]]:
    """(table -> column names, view names) as the database reports them."""
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:

            def read(sync_conn: object) -> tuple[dict[str, set[str]], set[str]]:
                insp = inspect(sync_conn)
                tables = {
                    t: {c["name"] for c in insp.get_columns(t)} for t in insp.get_table_names()
                }
                return tables, set(insp.get_view_names())

            return await conn.run_sync(read)
    finally:
        await engine.dispose()


async def test_empty_to_head_down_to_base_and_up_again(db_url: str) -> None:
    assert await migrate.current(db_url) is None
    async with Store.open(db_url) as store:  # the check run, fetch and the console make
        with pytest.raises(SchemaOutOfDate, match="run: creator-monitor db upgrade"):
            await store.check_schema()

    assert await migrate.upgrade(db_url) == migrate.head()
    async with Store.open(db_url) as store:
        await store.check_schema()
    tables, views = await _layout(db_url)
    assert set(tables) == set(metadata.tables) | {"alembic_version"}
    assert views == {"latest_metrics", "budget_days"}
    for table, columns in CONTRACT.items():
        assert columns <= tables[table], table
    assert {"user_id", "name", "date_key", "read"} <= (await _view_columns(db_url))

    assert await migrate.upgrade(db_url) == migrate.head()  # at head: nothing to do
    assert await migrate.downgrade(db_url, "base") is None
    tables, views = await _layout(db_url)
    assert (set(tables), views) == ({"alembic_version"}, set())
    assert await migrate.upgrade(db_url) == migrate.head()
    assert await migrate.drift(db_url) == []


async def _view_columns(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(
                lambda c: {col["name"] for col in inspect(c).get_columns("latest_metrics")}
            )
    finally:
        await engine.dispose()


async def test_schema_and_migrations_do_not_drift(db_url: str) -> None:
    await migrate.upgrade(db_url)
    assert await migrate.drift(db_url) == []


async def test_three_instances_upgrading_at_once_all_succeed(db_url: str) -> None:
    results = await asyncio.gather(*(migrate.upgrade(db_url) for _ in range(3)))
    assert results == [migrate.head()] * 3
    assert await migrate.drift(db_url) == []


async def test_instances_opening_one_new_sqlite_file_together_all_succeed(tmp_path: Path) -> None:
    """Switching a new file to WAL answers "database is locked" at once to all but one of several
    connections (no busy wait): CI saw one of three daemons fail so. Ten new files, four at once."""
    for round_ in range(10):
        url = f"sqlite+aiosqlite:///{tmp_path / f'{round_}.db'}"
        results = await asyncio.gather(*(migrate.upgrade(url) for _ in range(4)))
        assert results == [migrate.head()] * 4


async def test_upgrade_creates_the_sqlite_directory_and_uses_wal(tmp_path: Path) -> None:
    path = tmp_path / "var" / "lib" / "creator-monitor" / "history.db"
    await migrate.upgrade(f"sqlite+aiosqlite:///{path}")
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert conn.execute("SELECT version_num FROM alembic_version").fetchone() == (
            migrate.head(),
        )


def test_shipped_head_revision_is_alembics_head() -> None:
    """The daemon checks the schema against a constant, not alembic: it must name the head."""
    assert ScriptDirectory(str(migrations_dir())).get_current_head() == HEAD_REVISION


def test_known_revisions_are_alembics_whole_history() -> None:
    """``run`` migrates a database at any of these and refuses any other (a newer version's)."""
    script = ScriptDirectory(str(migrations_dir()))
    history = [rev.revision for rev in script.walk_revisions()]
    assert list(KNOWN_REVISIONS) == history[::-1]


def test_migrations_ship_beside_the_code_without_alembic_ini() -> None:
    where = migrations_dir()
    assert (where / "env.py").is_file()
    assert (where / "versions" / "0001_initial.py").is_file()
    assert migrate.alembic_config().get_main_option("sqlalchemy.url") is None


async def test_messages_queued_before_facts_were_kept_still_go_as_queued(db_url: str) -> None:
    """0008 adds the facts an alert's message is rendered from at send time; rows queued
    before it (their text rendered then, a group's entries in ``grouping``) go out as they are."""
    await migrate.upgrade(db_url, "0007_sources")
    sqlite = db_url.startswith("sqlite")
    now = "2025-12-11T02:00:00.000000Z" if sqlite else "2025-12-11 02:00Z"
    insert = text(
        "INSERT INTO notifications (channel, event, severity, title, body, status, attempts, "
        "next_attempt_at, created_at, group_key, grouping) VALUES ('team', 'firing', 'warning', "
        f":title, :body, 'pending', 0, '{now}', '{now}', :key, :grouping)"
    )
    entry = '{{"line":"creator {0}","more":"{{k}} more","rank":{0},"title":"[FIRING] r: {{n}} x"}}'
    rows = [
        {"title": "old title", "body": "old body", "key": None, "grouping": None},
        *({"title": f"one of {n}", "body": "b", "key": "firing|rule=r", "grouping": entry.format(n)}
          for n in (1, 2)),
    ]  # fmt: skip
    engine = make_engine(db_url)
    try:
        async with engine.begin() as conn:
            for row in rows:
                await conn.execute(insert, row)
    finally:
        await engine.dispose()
    assert await migrate.upgrade(db_url) == migrate.head()
    async with (
        Receiver() as team,
        Store.open(db_url) as store,
        Notifier(store, {"team": team.url("/t")}, NotifyConfig(), owner="t", jitter=0.0) as n,
    ):
        report = await n.drain(datetime(2025, 12, 11, 3, 0, tzinfo=UTC), flush=True)
    assert report.sent == 3
    assert [(b["title"], b["message"]) for b in team.bodies("/t")] == [
        ("old title", "old body"),
        ("[FIRING] r: 2 x", "- creator 2\n- creator 1"),
    ]
