"""Engines, transactions and error translation for the store, on SQLite and PostgreSQL.

Owns connection setup (SQLite PRAGMAs, real BEGIN/BEGIN IMMEDIATE) and turns every driver error
into one-line ``StoreError``s that never carry a password. Knows no table.
"""

from __future__ import annotations

import itertools
import operator
import re
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from sqlalchemy import ClauseElement, Column, Table, event
from sqlalchemy.engine import URL, Connection, CursorResult, Dialect, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.sql.compiler import SQLCompiler

from monitor.errors import SchemaOutOfDate, StoreError
from monitor.ops.wallclock import Clock, micros
from monitor.store.onehop import LOCK_WITH_FIRST_STATEMENT, OneHopConnection, OneHopDbapi

if TYPE_CHECKING:
    from sqlalchemy.dialects import postgresql, sqlite

from monitor.store.revision import (
    KNOWN_REVISIONS,
    current_revision,
    head_revision,
    newer_revision,
)

#: SQLite waits this long for another writer before "database is locked"
BUSY_TIMEOUT = timedelta(seconds=5)
#: an execution option our BEGIN listener reads: take SQLite's write lock up front (True), or
#: with the transaction's first statement (``WITH_FIRST_STATEMENT``: one trip less per write)
WRITE_LOCK_OPTION = "cm_write"
WITH_FIRST_STATEMENT = "first-statement"


def system_clock() -> datetime:
    return datetime.now(UTC)


def parse_url(url: str) -> URL:
    """The SQLAlchemy URL, or a StoreError that does not echo the URL (it may hold a password)."""
    try:
        return make_url(url)
    except (ArgumentError, ValueError) as exc:
        raise StoreError(
            "storage.url is not a database URL (expected sqlite+aiosqlite:///PATH "
            "or postgresql+asyncpg://USER@HOST/DB)"
        ) from exc


def safe_url(url: URL) -> str:
    return url.render_as_string(hide_password=True)


def make_engine(
    url: str,
    *,
    foreign_keys: bool = True,
    busy_timeout: timedelta = BUSY_TIMEOUT,
    pg_lock_timeout: bool = False,
) -> AsyncEngine:
    """An async engine; on SQLite with WAL, busy timeout, NORMAL sync and transactional BEGINs.

    Migrations pass ``foreign_keys=False``: batch mode recreates tables, and with foreign keys on
    SQLite would cascade-delete the children of a recreated parent. ``pg_lock_timeout``: on
    PostgreSQL a statement waits at most ``busy_timeout`` for a lock (another session's
    ``LOCK TABLE``), then fails like a busy SQLite file instead of hanging.
    """
    sa_url = parse_url(url)
    if sa_url.get_backend_name() != "sqlite":
        if not pg_lock_timeout:
            return create_async_engine(sa_url, pool_pre_ping=True)
        ms = str(int(busy_timeout.total_seconds() * 1000))
        settings = {"server_settings": {"lock_timeout": ms}}
        return create_async_engine(sa_url, pool_pre_ping=True, connect_args=settings)
    _ensure_parent_dir(sa_url)
    seconds = busy_timeout.total_seconds()
    engine = create_async_engine(
        sa_url,
        connect_args={"timeout": seconds},
        module=OneHopDbapi(),
    )
    _install_sqlite_listeners(engine, foreign_keys=foreign_keys, busy_ms=int(seconds * 1000))
    return engine


def sqlite_folder(url: str) -> Path | None:
    """The folder a SQLite file URL puts its file in; None for another backend, memory, or a
    ``file:`` URI."""
    sa_url = parse_url(url)
    database = sa_url.database or ""
    if sa_url.get_backend_name() != "sqlite" or database in ("", ":memory:"):
        return None
    if database.startswith("file:"):
        return None
    return Path(database).expanduser().absolute().parent


def sqlite_file(url: str) -> Path | None:
    """The file a SQLite file URL names; None for another backend, memory, or a ``file:``
    URI."""
    folder = sqlite_folder(url)
    if folder is None:
        return None
    return folder / Path(parse_url(url).database or "").name


def _ensure_parent_dir(url: URL) -> None:
    database = url.database or ""
    if database in ("", ":memory:") or database.startswith("file:"):
        return
    try:
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(
            f"cannot create the directory of {database}: {exc.strerror or type(exc).__name__}"
        ) from exc


def _install_sqlite_listeners(engine: AsyncEngine, *, foreign_keys: bool, busy_ms: int) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # hand BEGIN to us (the `begin` hook below): the driver's legacy mode would run DDL and
        # SELECTs outside any transaction
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout={busy_ms}")
            _enter_wal(cursor, busy_ms)
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute(f"PRAGMA foreign_keys={'ON' if foreign_keys else 'OFF'}")
        finally:
            cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # a deferred transaction that reads then writes fails at once with SQLITE_BUSY when
        # another writer got in between (busy_timeout cannot help); writers lock up front
        immediate = conn.get_execution_options().get(WRITE_LOCK_OPTION, False)
        if immediate == WITH_FIRST_STATEMENT:
            conn.exec_driver_sql(LOCK_WITH_FIRST_STATEMENT)
        else:
            conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def _enter_wal(cursor: Any, busy_ms: int) -> None:
    """Put the file in WAL mode, waiting like any writer when other connections race to do it.

    WAL is stored in the file, so only a new database changes mode. Changing it needs an exclusive
    lock, and SQLite answers "database is locked" at once instead of calling the busy handler
    when several connections open a new file together (three daemons migrating one fresh
    database), so the change is retried until ``busy_ms`` has passed.
    """
    deadline = time.monotonic() + busy_ms / 1000
    while True:
        try:
            cursor.execute("PRAGMA journal_mode")
            if str(cursor.fetchone()[0]).lower() != "wal":
                cursor.execute("PRAGMA journal_mode=WAL")
        except Exception as exc:  # the driver adapter's own OperationalError class
            if "database is locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.01)
        else:
            return


def describe(exc: BaseException, url: URL) -> str:
    """One line about a driver error: the driver's own first line, minus any password."""
    inner = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    text = str(inner).strip().splitlines()[0] if str(inner).strip() else type(inner).__name__
    text = re.sub(r"\s*\[SQL:.*", "", text)
    if url.password:
        text = text.replace(str(url.password), "***")
    return f"database {safe_url(url)}: {text}"


@contextmanager
def translated(url: URL) -> Iterator[None]:
    """Turn driver and OS errors into StoreError; our own MonitorErrors pass through."""
    try:
        yield
    except StoreError:
        raise
    except (SQLAlchemyError, OSError, TimeoutError) as exc:
        raise StoreError(describe(exc, url)) from exc
    except Exception as exc:
        # asyncpg raises its own exception types on connect (bad password, unknown database)
        if type(exc).__module__.startswith("asyncpg"):
            raise StoreError(describe(exc, url)) from exc
        raise


def plain_rows(result: CursorResult[Any]) -> list[Sequence[Any]]:
    """The rows of a SELECT as the driver returned them (tuples, or asyncpg Records).

    For reads of 100,000 rows at start-up: building a ``Row`` and running each column's result
    processor costs twice what the query does. The values are the driver's own (SQLite gives
    times as ISO text and booleans as 0/1): convert with ``from_db``.
    """
    try:
        return list(result.cursor.fetchall())
    finally:
        result.close()


def to_db(conn: AsyncConnection, column: Column[Any]) -> Callable[[Any], Any]:
    """How ``column``'s type binds a value on this connection (for ``execute_many``)."""
    process = column.type.bind_processor(conn.dialect)
    return _same if process is None else process


def from_db(conn: AsyncConnection, column: Column[Any]) -> Callable[[Any], Any]:
    """What ``column``'s type makes of a driver value on this connection (for ``plain_rows``)."""
    process = column.type.result_processor(conn.dialect, None)
    return _same if process is None else process


def _same(value: Any) -> Any:
    return value


def utc_to_db(conn: AsyncConnection, column: Column[Any]) -> Callable[[Any], Any]:
    """``to_db`` for a ``UTCDateTime`` column, with a fast path for aware UTC datetimes: on
    SQLite ``isoformat`` spells the type's ``%Y-%m-%dT%H:%M:%S.%fZ`` in a third of the time,
    on PostgreSQL the value goes as it is. Anything else goes through the type (which refuses
    naive datetimes)."""
    slow = to_db(conn, column)
    sqlite_text = conn.dialect.name == "sqlite"

    def bind(value: Any) -> Any:
        if isinstance(value, datetime) and value.tzinfo is UTC and value.year >= 1000:
            if not sqlite_text:
                return value
            # "…+00:00", with ".ffffff" before it only when there are microseconds
            return value.isoformat()[:-6] + ("Z" if value.microsecond else ".000000Z")
        return slow(value)

    return bind


def utc_micros_from_db(conn: AsyncConnection, column: Column[Any]) -> Callable[[Any], int]:
    """``from_db`` for a non-NULL ``UTCDateTime`` column, as integer microseconds since the epoch
    (what the live schedule holds), with a fast path for what the drivers give: the type's own
    ISO text ending in ``Z`` (SQLite) and aware UTC datetimes (asyncpg). Anything else (text
    written by hand) goes through the type. A tenth of the time per value."""
    slow = from_db(conn, column)

    def read(value: Any) -> int:
        at = datetime.fromisoformat(value) if isinstance(value, str) else value
        if not isinstance(at, datetime) or at.tzinfo is not UTC:
            at = slow(value)
        return micros(at)

    return read


#: rows per driver ``executemany`` in ``execute_many``: big enough that 100,000 rows are a
#: handful of round trips, small enough that their parameters never all sit in memory at once
MANY_ROWS = 10_000


@dataclass(frozen=True, slots=True)
class ManyStatement:
    """A statement compiled for ``run_many``: its SQL, and where each of a row's values goes."""

    sql: str
    #: a row's values in the statement's order (None: the row's own order)
    pick: Callable[[tuple[Any, ...]], tuple[Any, ...]] | None


def prepare_many(dialect: Dialect, statement: ClauseElement, names: Sequence[str]) -> ManyStatement:
    """``statement`` compiled for ``run_many`` on ``dialect`` (keep it: compiling costs more
    than running a small batch). It takes its values from ``bindparam``s named in ``names``."""
    compiled = statement.compile(dialect=dialect, for_executemany=True)
    assert isinstance(compiled, SQLCompiler)
    assert compiled.positiontup is not None, "both drivers take positional parameters"
    order = [names.index(name) for name in compiled.positiontup]
    if order == list(range(len(names))):
        return ManyStatement(str(compiled), None)
    return ManyStatement(str(compiled), _picker(order))


def _picker(order: list[int]) -> Callable[[tuple[Any, ...]], tuple[Any, ...]]:
    if len(order) == 1:
        return lambda row: (row[order[0]],)
    return operator.itemgetter(*order)


async def run_many(
    conn: AsyncConnection, statement: ManyStatement, rows: Iterable[tuple[Any, ...]]
) -> None:
    """Run a ``prepare_many`` statement once per row, ``MANY_ROWS`` rows per driver
    ``executemany``, without SQLAlchemy's per-row parameter processing: each row holds the
    values in the order of the names it was prepared with, already as ``to_db`` gives them.
    ``rows`` may be a generator: it is read a chunk at a time."""
    pick = statement.pick
    source = iter(rows)
    while chunk := list(itertools.islice(source, MANY_ROWS)):
        if pick is not None:
            chunk = [pick(row) for row in chunk]
        await conn.exec_driver_sql(statement.sql, chunk)


#: ``prepared`` statements, by (name, backend)
_PREPARED: dict[tuple[str, str], ManyStatement] = {}
#: ``utc_binder`` functions, by (backend, table, column)
_UTC_BINDERS: dict[tuple[str, str, str], Callable[[Any], Any]] = {}


def prepared(
    conn: AsyncConnection,
    name: str,
    build: Callable[[str], ClauseElement],
    names: Sequence[str],
) -> ManyStatement:
    """The statement ``build(backend name)`` prepared for ``run_many``/``write_later`` on this
    connection's backend, built and compiled once per process (``name`` tells them apart)."""
    key = (name, conn.dialect.name)
    found = _PREPARED.get(key)
    if found is None:
        found = _PREPARED[key] = prepare_many(conn.dialect, build(conn.dialect.name), names)
    return found


def utc_binder(conn: AsyncConnection, column: Column[Any]) -> Callable[[Any], Any]:
    """``utc_to_db`` for ``column``, made once per backend and column."""
    key = (conn.dialect.name, str(column.table), column.name)
    found = _UTC_BINDERS.get(key)
    if found is None:
        found = _UTC_BINDERS[key] = utc_to_db(conn, column)
    return found


async def write_later(
    conn: AsyncConnection, statement: ManyStatement, rows: Sequence[tuple[Any, ...]]
) -> None:
    """``run_many`` for a write whose result nobody reads, in the caller's transaction: on
    SQLite it goes to SQLite's thread with the transaction's next statement or its commit (one
    trip for them all, see ``onehop``); elsewhere, or past ``MANY_ROWS`` rows, it runs now."""
    if not rows:
        return
    sync = conn.sync_connection
    dbapi = None if sync is None else sync.connection.dbapi_connection
    if not isinstance(dbapi, OneHopConnection) or len(rows) > MANY_ROWS:
        await run_many(conn, statement, rows)
        return
    pick = statement.pick
    dbapi.write_later(statement.sql, list(rows) if pick is None else [pick(row) for row in rows])


async def execute_many(
    conn: AsyncConnection,
    statement: ClauseElement,
    names: Sequence[str],
    rows: Iterable[tuple[Any, ...]],
) -> None:
    """Run ``statement`` once per row, ``MANY_ROWS`` rows per driver ``executemany``, without
    SQLAlchemy's per-row parameter processing (1.2 s instead of 0.3 s for 100,000 creators).

    ``statement`` takes its values from ``bindparam``s named in ``names``; each row holds them
    in that order, already as ``to_db`` gives them. ``rows`` may be a generator: it is read a
    chunk at a time.
    """
    await run_many(conn, prepare_many(conn.dialect, statement, names), rows)


def upsert(dialect: str, table: Table) -> sqlite.Insert | postgresql.Insert:
    """An INSERT into ``table`` that takes ``on_conflict_do_update``/``_do_nothing`` on the
    ``dialect`` backend. Each backend's module is imported on first use: SQLAlchemy's
    PostgreSQL dialect costs a SQLite process 60 ms of start-up."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as postgresql_insert

        return postgresql_insert(table)
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(table)


class StoreBase:
    """Lifecycle and transactions shared by the store's concern modules (mixins of ``Store``)."""

    def __init__(self, engine: AsyncEngine, url: URL, clock: Clock) -> None:
        self._engine = engine
        self._writer = engine.execution_options(**{WRITE_LOCK_OPTION: True})
        self._first_writer = engine.execution_options(**{WRITE_LOCK_OPTION: WITH_FIRST_STATEMENT})
        self._url = url
        self._clock = clock

    @classmethod
    def open(
        cls, url: str, *, clock: Clock = system_clock, busy_timeout: timedelta = BUSY_TIMEOUT
    ) -> Self:
        """A store on ``url``; no connection is made until first use (or ``check_schema``).

        ``busy_timeout``: how long a writer waits for another one's lock before giving up.
        """
        engine = make_engine(url, busy_timeout=busy_timeout, pg_lock_timeout=True)
        return cls(engine, parse_url(url), clock)

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self._engine.dialect.name

    @property
    def sqlite_path(self) -> Path | None:
        """The SQLite database file, or None (PostgreSQL, in-memory or ``file:`` URIs)."""
        database = self._url.database or ""
        if self.dialect != "sqlite" or database in ("", ":memory:") or database.startswith("file:"):
            return None
        return Path(database).expanduser()

    async def close(self) -> None:
        await self._engine.dispose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({safe_url(self._url)!r})"

    def _upsert(self, table: Table) -> sqlite.Insert | postgresql.Insert:
        """An INSERT that takes ``on_conflict_do_update``/``_do_nothing`` on this backend."""
        return upsert(self.dialect, table)

    @asynccontextmanager
    async def _write(
        self, *, lock_with_first_statement: bool = False
    ) -> AsyncIterator[AsyncConnection]:
        """One write transaction: committed whole at the end, or rolled back whole.

        On SQLite the write lock is held once the block starts; with
        ``lock_with_first_statement`` it is taken with the block's first statement instead (in
        the same trip to SQLite's thread: one trip less), for blocks whose first step is one.
        """
        writer = self._first_writer if lock_with_first_statement else self._writer
        with translated(self._url):
            async with writer.begin() as conn:
                yield conn

    @asynccontextmanager
    async def _read(self) -> AsyncIterator[AsyncConnection]:
        """One read transaction: a consistent snapshot for the queries inside."""
        with translated(self._url):
            async with self._engine.connect() as conn:
                yield conn

    async def check_schema(self) -> None:
        """Raise SchemaOutOfDate unless the database is at the migrations' head revision."""
        head = head_revision()
        path = self.sqlite_path
        if path is not None and not path.exists():
            # connecting would create an empty file: a read as root in the service's folder
            # would leave one the unit's dynamic user cannot write
            raise SchemaOutOfDate(
                f"database {safe_url(self._url)} has no schema yet (no file {path}); "
                "run: creator-monitor db upgrade"
            )
        async with self._read() as conn:
            current = await conn.run_sync(current_revision)
        if current == head:
            return
        if current is None:
            raise SchemaOutOfDate(
                f"database {safe_url(self._url)} has no schema yet; run: creator-monitor db upgrade"
            )
        if current not in KNOWN_REVISIONS:
            raise SchemaOutOfDate(newer_revision(safe_url(self._url), current), current=current)
        raise SchemaOutOfDate(
            f"database {safe_url(self._url)} is at revision {current}, this code needs {head}; "
            "run: creator-monitor db upgrade (or update creator-monitor if the database is newer)",
            current=current,
        )
