"""Start-up with many creators: config parse, creator sync and schedule load cost a fixed number
of SQL statements whatever the number of creators, and a restart with an unchanged list writes
nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest_asyncio
from sqlalchemy import event, func, select
from store_support import FakeClock

from monitor import migrate
from monitor.config import Config, parse_config
from monitor.model import Creator
from monitor.scheduler import load_slots
from monitor.schema import creators, schedule
from monitor.store import Store

T0 = datetime(2025, 12, 11, 2, 0, tzinfo=UTC)


def _user(n: int) -> str:
    return f"5c3bf7f7{n:016x}"


def _config(count: int, db: str) -> Config:
    return parse_config(
        {
            "storage": {"url": db},
            "creators": [{"user_id": _user(n), "name": f"c{n}"} for n in range(count)],
        }
    )


@pytest_asyncio.fixture
async def store(db_url: str) -> AsyncIterator[Store]:
    await migrate.upgrade(db_url)
    async with Store.open(db_url, clock=FakeClock(T0)) as opened:
        yield opened


@contextmanager
def statements(store: Store) -> Iterator[list[str]]:
    """Every statement sent to the database (an executemany counts once: one round trip)."""
    sent: list[str] = []
    engine = store._engine.sync_engine

    def record(*args: Any) -> None:
        sent.append(str(args[2]).split(None, 1)[0].upper())

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield sent
    finally:
        event.remove(engine, "before_cursor_execute", record)


async def _start(store: Store, config: Config) -> list[str]:
    with statements(store) as sent:
        slots = await load_slots(config, store, T0)
    assert len(slots) == len(config.creators)
    return [s for s in sent if s not in {"BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT"}]


async def _counts(store: Store) -> tuple[int, int, int]:
    async with store._read() as conn:
        active = await conn.scalar(select(func.count()).where(creators.c.active.is_(True)))
        total = await conn.scalar(select(func.count()).select_from(creators))
        slots = await conn.scalar(select(func.count()).select_from(schedule))
    return int(active or 0), int(total or 0), int(slots or 0)


async def test_statements_do_not_grow_with_creators(store: Store, db_url: str) -> None:
    small, large = _config(10, db_url), _config(1_200, db_url)
    first_small = await _start(store, small)
    # the large list: 10 known creators plus 1,190 new ones
    first_large = await _start(store, large)
    assert first_large == first_small
    assert first_small == ["SELECT", "INSERT", "SELECT", "SELECT", "INSERT"]
    assert await _counts(store) == (1_200, 1_200, 1_200)

    restart = await _start(store, large)
    assert restart == ["SELECT", "SELECT"]  # reads only: an unchanged list writes nothing


async def test_restart_keeps_due_times_and_leavers_keep_their_ids(
    store: Store,
    db_url: str,
) -> None:
    config = _config(1_200, db_url)
    first = await load_slots(config, store, T0)
    later = await load_slots(config, store, T0 + timedelta(days=3))
    assert {k: s.due_at for k, s in later.items()} == {k: s.due_at for k, s in first.items()}

    # 1,100 leave (three 500-row UPDATE chunks), one is renamed, 99 stay as they were
    kept = [Creator(_user(n), f"c{n}") for n in range(100)]
    kept[0] = Creator(_user(0), "renamed", ("tier-a",))
    with statements(store) as sent:
        ids = await store.sync_creators(kept)
    writes = [s for s in sent if s in {"INSERT", "UPDATE"}]
    assert writes == ["INSERT", "UPDATE", "UPDATE", "UPDATE"]
    assert ids == {
        _user(n): first[f"{_user(n)}/{_variant_label(config)}"].creator_id for n in range(100)
    }
    assert await _counts(store) == (100, 1_200, 1_200)
    async with store._read() as conn:
        row = (
            await conn.execute(
                select(creators.c.name, creators.c.tags).where(creators.c.user_id == _user(0))
            )
        ).one()
    assert (row.name, row.tags) == ("renamed", ["tier-a"])

    # they come back with the ids (and history) they had
    back = await store.sync_creators([Creator(_user(n), f"c{n}") for n in range(1_200)])
    assert back[_user(1_199)] == first[f"{_user(1_199)}/{_variant_label(config)}"].creator_id
    assert await _counts(store) == (1_200, 1_200, 1_200)


def _variant_label(config: Config) -> str:
    return config.variants_of(config.creators[0])[0].label
