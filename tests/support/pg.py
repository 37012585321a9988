"""Throwaway PostgreSQL databases on the server at 127.0.0.1:5432 for the tests: each made empty
or as a copy of one this process migrated once, and dropped in the background afterwards, so a
test waits neither for the migrations nor for a DROP DATABASE.

Without a reachable server a test is skipped on a developer's machine but fails under CI
(CI=true), where .ci/run has started the server.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from concurrent.futures import Future, ThreadPoolExecutor

import asyncpg
import pytest

from monitor.store import migrate

PG_ADMIN_DSN = os.environ.get("CM_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
HOST = "postgres@127.0.0.1:5432"


async def admin(sql: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN_DSN, timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def _admin_or_skip(sql: str) -> None:
    try:
        asyncio.run(admin(sql))
    except (OSError, ConnectionError) as exc:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL on 127.0.0.1:5432 is required under CI: {exc}")
        pytest.skip(f"PostgreSQL not reachable: {exc}")


def url(name: str) -> str:
    return f"postgresql+asyncpg://{HOST}/{name}"


class Databases:
    """The databases one test process makes; ``close`` drops what is left."""

    def __init__(self) -> None:
        self._dropper = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pg-drop")
        self._drops: list[Future[None]] = []
        self._template: str | None = None

    def create(self, *, migrated: bool = False) -> str:
        """A new database's name: empty, or ``migrated`` (as ``migrate.upgrade`` leaves it)."""
        name = f"cm_test_{uuid.uuid4().hex[:12]}"
        copy = f' TEMPLATE "{self._migrated()}"' if migrated else ""
        _admin_or_skip(f'CREATE DATABASE "{name}"{copy}')
        return name

    def drop_later(self, name: str) -> None:
        """Drop ``name`` in the background (its connections are ended first)."""
        sql = f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'
        self._drops.append(self._dropper.submit(asyncio.run, admin(sql)))

    def close(self) -> None:
        if self._template is not None:
            self.drop_later(self._template)
        self._dropper.shutdown(wait=True)
        for drop in self._drops:
            drop.result()  # a drop that failed says so

    def _migrated(self) -> str:
        if self._template is None:
            name = f"cm_test_template_{uuid.uuid4().hex[:12]}"
            _admin_or_skip(f'CREATE DATABASE "{name}"')
            self._template = name  # dropped at the end even if the upgrade fails
            asyncio.run(migrate.upgrade(url(name)))
        return self._template
