"""Shared fixtures: the sample bodies, a real PostgreSQL database per test, a fake token."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"
PG_ADMIN_DSN = os.environ.get("CM_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
#: a token shaped like a real one; tests assert it never shows up anywhere
TEST_TOKEN = "tok-SECRET-7f3a9c1e5b2d4e6f8a0b"


@pytest.fixture
def data_dir() -> Path:
    return DATA


@pytest.fixture
def token() -> str:
    return TEST_TOKEN


async def _pg_admin(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_ADMIN_DSN, timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database URL on each backend: a SQLite file in a not-yet-existing directory, and pg_url."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path}/state/history.db"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database on 127.0.0.1; dropped afterwards.

    Without a reachable server the test is skipped on a developer's machine but fails under
    CI (CI=true), where .ci/run has started the server.
    """
    name = f"cm_test_{uuid.uuid4().hex[:12]}"
    try:
        asyncio.run(_pg_admin(f'CREATE DATABASE "{name}"'))
    except (OSError, ConnectionError) as exc:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL on 127.0.0.1:5432 is required under CI: {exc}")
        pytest.skip(f"PostgreSQL not reachable: {exc}")
    try:
        yield f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
    finally:
        asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
