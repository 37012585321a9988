"""Every store the program opens, one function per kind, and the one ``Store.open`` call.

A paying command and the daemon (``fetch_store``), a reading or writing command
(``command_store``), the console (``console_store``), ``serve``'s health check
(``health_store``) and the daemon's start-up look at the schema (``schema_store``) each get the
same store on the same URL; only the options differ, and they are chosen here. The schema
commands (``upgrade_schema``, ``current_schema``, ``head_schema``) load alembic only when called.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import timedelta

from monitor.config import Config
from monitor.errors import ConfigError
from monitor.ops.wallclock import Clock
from monitor.store import FetchRecord, Store
from monitor.store.engine import (
    BUSY_TIMEOUT,
    parse_url,
    safe_url,
    sqlite_file,
    sqlite_folder,
    system_clock,
)
from monitor.store.overview import OverviewQuery, Sort
from monitor.store.revision import HEAD_REVISION, KNOWN_REVISIONS, newer_revision

__all__ = [
    "HEAD_REVISION",
    "KNOWN_REVISIONS",
    "FetchRecord",
    "OverviewQuery",
    "Sort",
    "Store",
    "command_store",
    "console_store",
    "current_schema",
    "fetch_store",
    "head_schema",
    "health_store",
    "newer_revision",
    "parse_url",
    "safe_url",
    "schema_store",
    "sqlite_file",
    "sqlite_folder",
    "upgrade_schema",
]


def _open(
    url: str, *, clock: Clock = system_clock, busy_timeout: timedelta = BUSY_TIMEOUT
) -> Store:
    return Store.open(url, clock=clock, busy_timeout=busy_timeout)


def fetch_store(config: Config, stack: AsyncExitStack, clock: Clock) -> Store:
    """The store of the fetch path (daemon and paying commands); closes with ``stack``."""
    storage = config.storage
    store = _open(storage.url, clock=clock, busy_timeout=storage.busy_timeout)
    stack.push_async_callback(store.close)
    return store


@asynccontextmanager
async def command_store(config: Config, *, check: bool = True) -> AsyncIterator[Store]:
    """A command's store; ``check``: refuse a database not at this code's schema."""
    store = _open(config.storage.url, busy_timeout=config.storage.busy_timeout)
    try:
        if check:
            await store.check_schema()
        yield store
    finally:
        await store.close()


def console_store(config: Config, stack: AsyncExitStack, clock: Clock) -> Store:
    """The console's own store (its own pool: page views never wait for the daemon's
    connections); closes with ``stack``."""
    store = _open(config.storage.url, clock=clock)
    stack.push_async_callback(store.close)
    return store


def health_store(config: Config, stack: AsyncExitStack) -> Store:
    """``serve``'s /healthz: a schema check on a store of its own; closes with ``stack``."""
    store = _open(config.storage.url)
    stack.push_async_callback(store.close)
    return store


def schema_store(url: str, clock: Clock) -> Store:
    """A store to read the schema revision at start-up; the caller closes it."""
    return _open(url, clock=clock)


async def upgrade_schema(url: str) -> str | None:
    """Migrate to this code's head; a ConfigError (exit 2) for a database migrated by a newer
    version, which alembic cannot place ("Can't locate revision …")."""
    from monitor.store import migrate  # alembic: only the db commands and the demo need it

    current = await migrate.current(url)
    if current is not None and current not in KNOWN_REVISIONS:
        raise ConfigError("storage.url", newer_revision(safe_url(parse_url(url)), current))
    return await migrate.upgrade(url)


async def current_schema(url: str) -> str | None:
    from monitor.store import migrate

    return await migrate.current(url)


def head_schema() -> str:
    from monitor.store import migrate

    return migrate.head()
