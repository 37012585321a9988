"""Where the alembic migrations live at runtime, and which revision a database is at.

Finds ``monitor.migrations`` through importlib.resources so an installed wheel works from any
directory. Runs no migration (that is ``monitor.migrate``).
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files
from pathlib import Path

from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection


def migrations_dir() -> Path:
    """The directory holding ``env.py`` and ``versions/``."""
    try:
        return Path(str(files("monitor.migrations")))
    except ModuleNotFoundError:
        # a source checkout that is not pip-installed: the package-dir mapping of pyproject.toml
        # is not active, so fall back to the top-level directory beside the ``monitor`` package
        return Path(__file__).resolve().parents[2] / "migrations"


@cache
def script_directory() -> ScriptDirectory:
    return ScriptDirectory(str(migrations_dir()))


def head_revision() -> str:
    """The single head revision of the shipped migrations."""
    head = script_directory().get_current_head()
    assert head is not None, "the migrations directory has no revisions"
    return head


def current_revision(connection: Connection) -> str | None:
    """The revision stamped in ``alembic_version``, or None for an empty database."""
    return MigrationContext.configure(connection).get_current_revision()
