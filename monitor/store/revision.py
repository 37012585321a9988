"""Where the alembic migrations live at runtime, and which revision a database is at.

Finds ``monitor.migrations`` through importlib.resources so an installed wheel works from any
directory. Runs no migration (that is ``monitor.store.migrate``) and imports no alembic: the
daemon's start-up only compares two revision strings, and alembic would add 8 MB and 0.1 s to it.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection

from monitor.errors import SchemaOutOfDate

#: the newest revision in ``migrations/versions``; ``tests/store/test_migrations.py`` checks that
#: it is alembic's head, so a new migration without an update here fails the suite
HEAD_REVISION = "0009_series_source"
#: every revision this code ships, oldest first: a database at one of them is migrated at start;
#: at any other, it was migrated by a newer version, and is refused (checked by the tests too)
KNOWN_REVISIONS = (
    "0001",
    "0002",
    "0003_alert_variant",
    "0004_alert_ack",
    "0005_fetch_idempotency",
    "0006_pause_cause",
    "0007_sources",
    "0008_outbox_facts",
    HEAD_REVISION,
)
#: alembic's bookkeeping table (its default name)
VERSION_TABLE = "alembic_version"


def migrations_dir() -> Path:
    """The directory holding ``env.py`` and ``versions/``."""
    try:
        return Path(str(files("monitor.migrations")))
    except ModuleNotFoundError:
        # a source checkout that is not pip-installed: the package-dir mapping of pyproject.toml
        # is not active, so fall back to the top-level directory beside the ``monitor`` package
        return Path(__file__).resolve().parents[2] / "migrations"


def newer_revision(shown_url: str, current: str) -> str:
    """What every command says of a database migrated by a newer version (``current`` is not
    one of KNOWN_REVISIONS): ``db upgrade`` cannot help, a newer creator-monitor can."""
    return (
        f"database {shown_url} is at schema revision {current}, newer than this "
        f"creator-monitor knows (up to {HEAD_REVISION}): install the newer creator-monitor "
        "that migrated it, or point storage.url at another database"
    )


def head_revision() -> str:
    """The single head revision of the shipped migrations."""
    return HEAD_REVISION


def current_revision(connection: Connection) -> str | None:
    """The revision stamped in ``alembic_version``, or None for an empty database.

    What alembic's ``MigrationContext.get_current_revision`` answers, read with one SELECT.
    """
    if not inspect(connection).has_table(VERSION_TABLE):
        return None
    heads = sorted(connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars())
    if len(heads) > 1:
        raise SchemaOutOfDate(
            f"the database has several schema heads ({', '.join(heads)}); "
            "run: creator-monitor db upgrade"
        )
    return heads[0] if heads else None
