"""The daemon's start-up migration: a fresh or older database is brought to this code's schema
before anything opens it, while systemd's start timeout is kept ahead of the migration."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import datetime

from monitor.app.stores import (
    HEAD_REVISION,
    KNOWN_REVISIONS,
    newer_revision,
    parse_url,
    safe_url,
    schema_store,
    upgrade_schema,
)
from monitor.errors import ConfigError, SchemaOutOfDate
from monitor.ops.systemd import SystemdNotifier

#: the daemon's lines keep the one logger name they are known by
log = logging.getLogger("monitor.daemon")

#: while a migration runs, systemd's start timeout is pushed this far ahead, this often
_MIGRATION_EXTEND = 60.0
_MIGRATION_EXTEND_EVERY = 15.0


async def migrate_on_start(url: str, clock: Callable[[], datetime], sd: SystemdNotifier) -> None:
    """Bring a fresh or older database to this code's schema before anything opens it, as
    ``db upgrade`` does (on PostgreSQL under an advisory lock, so instances starting
    together migrate once); systemd's start timeout is extended meanwhile. A database
    migrated by a newer version is refused: this code cannot know its tables."""
    current = await _schema_behind(url, clock)
    if current is None:
        return
    current = current or None  # "": an empty database
    if current is not None and current not in KNOWN_REVISIONS:
        raise ConfigError("storage.url", newer_revision(safe_url(parse_url(url)), current))
    what = f"migrating the database from {current or 'empty'} to {HEAD_REVISION}"
    log.info("%s", what)
    extending = asyncio.get_running_loop().create_task(_extend_start(sd, what))
    try:
        await upgrade_schema(url)
    finally:
        extending.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await extending
    log.info("database migrated to %s", HEAD_REVISION)


async def _extend_start(sd: SystemdNotifier, status: str) -> None:
    """Keep systemd's start timeout ahead of a running migration (EXTEND_TIMEOUT_USEC)."""
    while True:
        sd.extend_timeout(_MIGRATION_EXTEND, status)
        await asyncio.sleep(_MIGRATION_EXTEND_EVERY)


async def _schema_behind(url: str, clock: Callable[[], datetime]) -> str | None:
    """The revision of a database that is not at this code's head ("" when it has no
    schema yet), or None when it is at the head."""
    store = schema_store(url, clock)
    try:
        await store.check_schema()
    except SchemaOutOfDate as exc:
        return exc.current or ""
    finally:
        await store.close()
    return None
