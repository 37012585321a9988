"""Schema migrations for the CLI (``db upgrade``, ``db current``) and the daemon's start-up check.

Builds the alembic Config in code (no alembic.ini at runtime) and runs alembic on a connection
we open, inside one transaction that holds the migration lock. Defines no table.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from monitor.store.engine import WRITE_LOCK_OPTION, make_engine, parse_url, translated
from monitor.store.revision import current_revision, head_revision, migrations_dir
from monitor.store.schema import metadata

#: pg_advisory_xact_lock key shared by every instance ("crmonit" in ASCII)
MIGRATION_LOCK_KEY = 0x63726D6F6E6974

AlembicAction = Callable[[Config], None]


def alembic_config() -> Config:
    """An alembic Config pointing at the shipped migrations; the URL is never put in it."""
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    return config


async def upgrade(url: str, revision: str = "head") -> str | None:
    """Migrate the database up to ``revision``; returns the revision it is at afterwards.

    Several instances may call this at once: on PostgreSQL a transaction-level advisory lock
    serialises them; on SQLite ``BEGIN IMMEDIATE`` does. The loser finds the work done.
    """
    return await _locked(url, lambda config: command.upgrade(config, revision))


async def downgrade(url: str, revision: str) -> str | None:
    """Migrate the database down to ``revision`` (``base`` empties it); for tests and rollbacks."""
    return await _locked(url, lambda config: command.downgrade(config, revision))


async def current(url: str) -> str | None:
    """The revision the database is at; None when it has no schema yet."""
    engine = make_engine(url, foreign_keys=False)
    try:
        with translated(parse_url(url)):
            async with engine.connect() as conn:
                return await conn.run_sync(current_revision)
    finally:
        await engine.dispose()


def head() -> str:
    """The newest revision this code ships."""
    return head_revision()


async def drift(url: str) -> list[Any]:
    """Differences between ``monitor.store.schema`` and the migrated database (empty = no drift)."""
    engine = make_engine(url, foreign_keys=False)
    try:
        with translated(parse_url(url)):
            async with engine.connect() as conn:
                return await conn.run_sync(_compare)
    finally:
        await engine.dispose()


def _compare(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    diffs: list[Any] = compare_metadata(context, metadata)
    return diffs


async def _locked(url: str, action: AlembicAction) -> str | None:
    engine = make_engine(url, foreign_keys=False)
    try:
        with translated(parse_url(url)):
            return await _run_locked(engine, action)
    finally:
        await engine.dispose()


async def _run_locked(engine: AsyncEngine, action: AlembicAction) -> str | None:
    # SQLite: the write option makes our BEGIN listener take the write lock up front
    writer = engine.execution_options(**{WRITE_LOCK_OPTION: True})
    async with writer.begin() as conn:
        if conn.dialect.name == "postgresql":
            await conn.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY}
            )
        return await conn.run_sync(_run_alembic, action)


def _run_alembic(connection: Connection, action: AlembicAction) -> str | None:
    config = alembic_config()
    config.attributes["connection"] = connection
    action(config)
    return current_revision(connection)
