"""Alembic environment for creator-monitor: runs on a connection handed in by ``monitor.store.migrate``.

``creator-monitor db upgrade`` passes an open connection (already inside a transaction that holds
the migration lock) in ``config.attributes["connection"]``. For developers running the ``alembic``
command itself, ``-x url=...`` builds an async engine here instead.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

from monitor.store.engine import make_engine
from monitor.store.schema import metadata


def run_on(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        # SQLite cannot ALTER most things: batch mode recreates the table instead
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def run_with_url(url: str) -> None:
    engine = make_engine(url, foreign_keys=False)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(run_on)
    finally:
        await engine.dispose()


def main() -> None:
    if context.is_offline_mode():
        raise SystemExit("offline (--sql) migrations are not supported")
    connection = context.config.attributes.get("connection")
    if connection is not None:
        run_on(connection)
        return
    url = context.get_x_argument(as_dictionary=True).get("url")
    if not url:
        raise SystemExit("use `creator-monitor db upgrade`, or pass -x url=DATABASE_URL")
    asyncio.run(run_with_url(url))


main()
