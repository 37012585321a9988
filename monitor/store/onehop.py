"""SQLite through aiosqlite in one thread hop per statement instead of three or four.

aiosqlite runs every sqlite3 call on its own thread; SQLAlchemy's adapter makes a call each for
the cursor, the statement, its rows and closing the cursor, and each call is a trip to that
thread and back (a queue put, a wake-up, ``call_soon_threadsafe``, an event-loop wake-up). At an
instant upstream those trips were most of the daemon's own CPU per fetch. This adapter runs the
four together on the worker thread, as one function, and hands SQLAlchemy the finished result.

A transaction's ``BEGIN`` costs no trip of its own either: it goes to the thread with the
transaction's first statement (or its ``COMMIT``/``ROLLBACK`` when it ran none), in the same
function and before it. A deferred ``BEGIN`` takes no lock and no snapshot, so nothing changes.
``BEGIN IMMEDIATE`` takes the write lock, and code may count on holding it once ``begin()``
returns (migrations do), so it is sent at once; only the spelling ``LOCK_WITH_FIRST_STATEMENT``
(SQLite's own ``BEGIN IMMEDIATE TRANSACTION``) waits for the first statement, for transactions
whose first step is a statement: the lock is then taken just before that statement runs, and a
lock that cannot be had fails that statement. A ``COMMIT`` or ``ROLLBACK`` with no transaction
open (the pool's reset after a commit) is sqlite3's no-op, so it is not sent. A server-side
cursor (``stream``) sends a waiting ``BEGIN`` first, on its own.

Writes whose result nobody reads (``write_later`` in ``engine``) wait the same way: they go with
the transaction's next statement, before it, or with its ``COMMIT``, before it, in the order they
were made; a rollback drops them. So a spend's ledger count, its bucket and its commit are one
trip, and a fetch's points, body, schedule and ledger rows go with its commit. One that fails
fails the statement or commit it went with, inside the same transaction.
"""

from __future__ import annotations

import collections
import sqlite3
import threading
from typing import Any, cast

import aiosqlite
from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_cursor,
    AsyncAdapt_aiosqlite_dbapi,
)
from sqlalchemy.util import EMPTY_DICT
from sqlalchemy.util.concurrency import await_


class _Ran:
    """What a finished statement left: SQLAlchemy reads these off ``cursor._cursor``."""

    __slots__ = ("arraysize", "description", "lastrowid", "rowcount")

    def __init__(self, description: Any, rowcount: int, lastrowid: int | None) -> None:
        self.description = description
        self.rowcount = rowcount
        self.lastrowid = lastrowid
        self.arraysize = 1

    def close(self) -> None:
        """Closed on the worker thread already."""


_NOT_RUN = _Ran(None, -1, None)


#: ``BEGIN IMMEDIATE`` sent with the transaction's first statement (see the module)
LOCK_WITH_FIRST_STATEMENT = "BEGIN IMMEDIATE TRANSACTION"
#: the statements held back until the transaction's first statement, and sent with it
_BEGINS = frozenset({"BEGIN", LOCK_WITH_FIRST_STATEMENT})


#: a write that waits for the next trip: (SQL, rows of parameters)
_Later = tuple[str, list[Any]]


def _before(cursor: sqlite3.Cursor, begin: str | None, later: list[_Later]) -> None:
    """On aiosqlite's thread: the waiting ``BEGIN`` and writes, in order."""
    if begin is not None:
        cursor.execute(begin)
    for sql, rows in later:
        cursor.executemany(sql, rows)


def _run(
    conn: aiosqlite.Connection,
    sql: str,
    parameters: Any,
    many: bool,
    begin: str | None = None,
    later: list[_Later] | None = None,
) -> tuple[_Ran, list[Any] | None]:
    """On aiosqlite's thread: the waiting ``BEGIN`` and writes, the statement, its rows, and
    the cursor closed, in one go."""
    cursor: sqlite3.Cursor = conn._conn.cursor()
    try:
        _before(cursor, begin, later or [])
        if many:
            cursor.executemany(sql, parameters)
        elif parameters is None:
            cursor.execute(sql)
        else:
            cursor.execute(sql, parameters)
        rows = cursor.fetchall() if cursor.description else None
        return _Ran(cursor.description, cursor.rowcount, cursor.lastrowid), rows
    finally:
        cursor.close()


def _send(conn: sqlite3.Connection, begin: str | None, later: list[_Later]) -> None:
    """On aiosqlite's thread: the waiting ``BEGIN`` and writes, now."""
    cursor = conn.cursor()
    try:
        _before(cursor, begin, later)
    finally:
        cursor.close()


def _end(conn: sqlite3.Connection, begin: str | None, later: list[_Later], commit: bool) -> None:
    """On aiosqlite's thread: a waiting ``BEGIN`` (a transaction that ran no statement), the
    waiting writes (of a commit), then the commit or rollback."""
    if commit:
        _send(conn, begin, later)
        conn.commit()
    else:
        _send(conn, begin, [])
        conn.rollback()


class OneHopCursor(AsyncAdapt_aiosqlite_cursor):
    """A cursor whose ``execute`` is one trip to aiosqlite's thread (see the module)."""

    __slots__ = ()
    _awaitable_cursor_close = False  # nothing left open on the worker thread

    def __init__(self, adapt_connection: AsyncAdapt_aiosqlite_connection) -> None:
        # no sqlite3 cursor up front (the base class makes one: a trip of its own)
        self._adapt_connection = adapt_connection
        self._connection = adapt_connection._connection
        self._cursor = _NOT_RUN  # type: ignore[assignment]
        self._soft_closed_memoized = EMPTY_DICT
        self._rows = collections.deque()

    def execute(self, operation: Any, parameters: Any = None) -> Any:
        if operation in _BEGINS and not parameters:
            _onehop(self).begin_later(operation)
            self._cursor = _NOT_RUN  # type: ignore[assignment]
            self._rows = collections.deque()
            return
        try:
            await_(self._one_trip(operation, parameters, many=False))
        except Exception as error:  # noqa: BLE001 - translated, as SQLAlchemy's adapter does
            self._adapt_connection._handle_exception(error)

    def executemany(self, operation: Any, seq_of_parameters: Any) -> Any:
        try:
            await_(self._one_trip(operation, seq_of_parameters, many=True))
        except Exception as error:  # noqa: BLE001 - translated, as SQLAlchemy's adapter does
            self._adapt_connection._handle_exception(error)

    async def _one_trip(self, operation: Any, parameters: Any, *, many: bool) -> None:
        adapt = _onehop(self)
        async with adapt._execute_mutex:
            conn = self._connection
            begin, later = adapt.begin_now(), adapt.later_now()
            ran, rows = await conn._execute(_run, conn, operation, parameters, many, begin, later)
        self._cursor = ran
        self._rows = collections.deque(rows or ())


class OneHopConnection(AsyncAdapt_aiosqlite_connection):
    """aiosqlite's connection as SQLAlchemy sees it, with ``OneHopCursor``s and the waiting
    ``BEGIN`` and writes of the module."""

    __slots__ = ("_begin", "_later")
    _cursor_cls = OneHopCursor  # type: ignore[assignment]

    def __init__(self, dbapi: Any, connection: Any) -> None:
        super().__init__(dbapi, connection)
        #: a ``BEGIN`` not sent yet: it goes with the next statement, commit or rollback
        self._begin: str | None = None
        #: writes not sent yet: they go with the next statement or commit
        self._later: list[_Later] = []

    def write_later(self, sql: str, rows: list[Any]) -> None:
        """Run ``sql`` once for each of ``rows`` (driver parameters) with the next statement
        or commit of this transaction, before it; a rollback drops it."""
        self._later.append((sql, rows))

    def later_now(self) -> list[_Later]:
        """The waiting writes, taken to be sent by the caller."""
        later, self._later = self._later, []
        return later

    def begin_later(self, statement: str) -> None:
        if self._begin is not None:  # two BEGINs in a row: the second fails, as it would have
            self._flush_begin()
        self._begin = statement

    def begin_now(self) -> str | None:
        """The waiting ``BEGIN``, taken to be sent by the caller."""
        begin, self._begin = self._begin, None
        return begin

    def _flush_begin(self) -> None:
        """Send a waiting ``BEGIN`` and writes now, on their own."""
        begin, later = self.begin_now(), self.later_now()
        if begin is None and not later:
            return
        connection = self._connection
        try:
            await_(connection._execute(_send, connection._conn, begin, later))
        except Exception as error:  # noqa: BLE001 - translated, as SQLAlchemy's adapter does
            self._handle_exception(error)

    def cursor(self, server_side: bool = False) -> Any:
        if server_side:  # SQLAlchemy's own cursor: it knows nothing of what waits
            self._flush_begin()
        return super().cursor(server_side)

    def commit(self) -> None:
        self._end(commit=True)

    def rollback(self) -> None:
        self._end(commit=False)

    def _end(self, *, commit: bool) -> None:
        connection = self._connection
        if not connection._connection:  # closed: as SQLAlchemy's adapter, nothing to do
            return
        begin, later = self.begin_now(), self.later_now()
        if begin is None and not later and not connection._conn.in_transaction:
            return  # sqlite3 does nothing then: no trip to its thread for it
        try:
            await_(connection._execute(_end, connection._conn, begin, later, commit))
        except Exception as error:  # noqa: BLE001 - translated, as SQLAlchemy's adapter does
            self._handle_exception(error)


def _onehop(cursor: OneHopCursor) -> OneHopConnection:
    return cast(OneHopConnection, cursor._adapt_connection)


class OneHopDbapi(AsyncAdapt_aiosqlite_dbapi):
    """The aiosqlite DBAPI adapter with ``OneHopCursor``s: ``create_async_engine(module=...)``."""

    def __init__(self) -> None:
        super().__init__(aiosqlite, sqlite3)

    def connect(self, *arg: Any, **kw: Any) -> AsyncAdapt_aiosqlite_connection:
        """SQLAlchemy's connect (aiosqlite 0.22+: a connection with a worker thread), and when
        the file cannot be opened, a wait for that worker: it answers the stop its failed
        connect queued on this event loop, and once ``asyncio.run`` has closed the loop that
        answer is a RuntimeError, which threading printed on stderr as two tracebacks after
        the command's one-line error."""
        creator_fn = kw.pop("async_creator_fn", None)
        pending = creator_fn(*arg, **kw) if creator_fn else self.aiosqlite.connect(*arg, **kw)
        worker = getattr(pending, "_thread", None)
        if isinstance(worker, threading.Thread):
            worker.daemon = True  # as SQLAlchemy's adapter does
        try:
            connection = await_(pending)
        except BaseException:
            if isinstance(worker, threading.Thread) and worker.is_alive():
                worker.join(_STOP_WAIT)  # it only has the stop left: closing nothing
            raise
        return OneHopConnection(self, connection)


#: how long a failed connect waits for its worker thread to end
_STOP_WAIT = 5.0
