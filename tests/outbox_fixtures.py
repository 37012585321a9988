"""Fixtures for the outbox and notifier tests, loaded with ``pytest_plugins``: a migrated
outbox store on SQLite and PostgreSQL (``db``) or on SQLite only (``sdb``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from outbox_support import OutboxDb, open_db


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path}/outbox.db"


@pytest_asyncio.fixture
async def db(db_url: str) -> AsyncIterator[OutboxDb]:
    store = await open_db(db_url)
    try:
        yield store
    finally:
        await store.close()


@pytest_asyncio.fixture
async def sdb(sqlite_url: str) -> AsyncIterator[OutboxDb]:
    store = await open_db(sqlite_url)
    try:
        yield store
    finally:
        await store.close()
