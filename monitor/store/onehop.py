"""SQLite through aiosqlite in one thread hop per statement instead of three or four.

aiosqlite runs every sqlite3 call on its own thread; SQLAlchemy's adapter makes a call each for
the cursor, the statement, its rows and closing the cursor, and each call is a trip to that
thread and back (a queue put, a wake-up, ``call_soon_threadsafe``, an event-loop wake-up). At an
instant upstream those trips were most of the daemon's own CPU per fetch. This adapter runs the
four together on the worker thread, as one function, and hands SQLAlchemy the finished result.

It uses what SQLAlchemy's own aiosqlite adapter uses of aiosqlite (``Connection._execute`` and
``_conn``). Server-side cursors (``stream``) are SQLAlchemy's, unchanged.
"""

from __future__ import annotations

import collections
import sqlite3
import threading
from typing import Any

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


def _run(
    conn: aiosqlite.Connection, sql: str, parameters: Any, many: bool
) -> tuple[_Ran, list[Any] | None]:
    """On aiosqlite's thread: the statement, its rows, and the cursor closed, in one go."""
    cursor: sqlite3.Cursor = conn._conn.cursor()
    try:
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
        async with self._adapt_connection._execute_mutex:
            conn = self._connection
            ran, rows = await conn._execute(_run, conn, operation, parameters, many)
        self._cursor = ran
        self._rows = collections.deque(rows or ())


class _Connection(AsyncAdapt_aiosqlite_connection):
    __slots__ = ()
    _cursor_cls = OneHopCursor  # type: ignore[assignment]


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
        return _Connection(self, connection)


#: how long a failed connect waits for its worker thread to end
_STOP_WAIT = 5.0
