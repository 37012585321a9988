"""Start-up with many creators: config parse, creator sync and schedule load cost a fixed number
of SQL statements whatever the number of creators, and a restart with an unchanged list writes
nothing."""

from __future__ import annotations

import gc
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
import pytest_asyncio
from sqlalchemy import event, func, select
from support.store import FakeClock, first_due

from monitor.config import Config, collector_paused, parse_config
from monitor.model import Creator
from monitor.ops.wallclock import moment
from monitor.policy import cadence
from monitor.service.fetching.slot_loading import load_slots, write_new_slots
from monitor.store import FetchRecord, Store, engine, migrate
from monitor.store.schema import creators, schedule

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


async def test_new_series_can_be_written_after_the_start_and_a_cut_short_write_loses_nothing(
    store: Store, db_url: str
) -> None:
    """The daemon on a database of its own writes new series' schedule rows after READY, a
    batch per transaction. If that is cut short (a stop, a crash), the next start places the
    rest again: still due at once, and the rows already written keep their times."""
    config = _config(1_200, db_url)
    first = await load_slots(config, store, T0, write_new=False)
    assert await _counts(store) == (1_200, 1_200, 0)  # READY without the 1,200 schedule rows
    assert all(slot.due_at <= T0 for slot in first.values())  # each due at once, on its grid
    # cut short after two batches of 500
    rows = first.unwritten()
    for _ in range(2):
        await store.schedule_new([next(rows) for _ in range(500)])
    written = {k: s.due_at for k, s in list(first.items())[:1_000]}
    assert await _counts(store) == (1_200, 1_200, 1_000)

    later = T0 + timedelta(hours=30)
    again = await load_slots(config, store, later, write_new=False)
    assert {k: again[k].due_at for k in written} == written
    rest = list(again.items())[1_000:]
    assert all(later - timedelta(days=1) < s.due_at <= later for _k, s in rest)
    assert await write_new_slots(again, store, batch=150) == 200
    assert await write_new_slots(again, store) == 0  # written once, then forgotten
    restart = await load_slots(config, store, later + timedelta(days=2))
    assert {k: s.due_at for k, s in restart.items()} == {k: s.due_at for k, s in again.items()}
    assert await _counts(store) == (1_200, 1_200, 1_200)


def _variant_label(config: Config) -> str:
    return config.variants_of(config.creators[0])[0].label


def _multi(count: int, db: str) -> Config:
    """Creators with two variants each, every third with its own cadence and a tag."""
    return parse_config(
        {
            "storage": {"url": db},
            "creators": [
                {
                    "user_id": _user(n),
                    "name": f"c{n}",
                    **({"every": "12h", "tags": ["tier-a"]} if n % 3 == 0 else {}),
                    "variants": [{}, {"date_type": "DAY_90"}],
                }
                for n in range(count)
            ],
        }
    )


async def test_restart_reads_every_page_of_the_schedule_back(
    store: Store, db_url: str, monkeypatch: Any
) -> None:
    """Pages hold whole creators and rows go out in several executemany chunks: a restart
    still gets each slot's own stored state, under ``cadence.slot_key``'s name."""
    monkeypatch.setattr(engine, "MANY_ROWS", 7)
    config = _multi(25, db_url)
    first = await load_slots(config, store, T0)
    assert len(first) == 50
    assert await _counts(store) == (25, 25, 50)
    for slot in first.values():
        assert slot.key == cadence.slot_key(slot.creator.user_id, slot.variant)
        assert slot.due_at == first_due(slot.key, slot.every, T0)
        assert slot in slot.siblings
        assert len(slot.siblings) == 2
    # what fetches would leave behind, on a few slots
    moved = sorted(first)[::6]
    served = [first[key] for key in moved]
    await store.record_fetches(
        [
            FetchRecord(
                s.creator_id, s.variant, T0, code=0, next_due_at=T0 + timedelta(hours=n + 1)
            )
            for n, s in enumerate(served)
        ]
    )
    broken = first[moved[-1]]
    await store.mark_broken(broken.creator_id, broken.variant, at=T0, reason="400")

    pages: list[int] = []

    async def states(*, page: int = 10_000, **options: Any) -> Any:
        # 29 rows would end between a creator's two variants: that creator goes to the next page
        async for got in Store.slot_states(store, page=29, **options):
            pages.append(len(got))
            yield got

    monkeypatch.setattr(store, "slot_states", states)
    later = await load_slots(config, store, T0 + timedelta(days=3))
    assert pages == [28, 22]
    assert set(later) == set(first)
    for n, key in enumerate(moved):
        assert later[key].due_at == T0 + timedelta(hours=n + 1), key
    untouched = set(first) - set(moved)
    assert all(later[k].due_at == first[k].due_at for k in untouched)
    assert [k for k, s in later.items() if s.broken] == [broken.key]
    assert later[moved[0]].creator is config.creators[0]  # the config entry is the Creator


async def test_a_restart_keeps_every_source_s_and_every_variant_s_stored_state(
    store: Store, db_url: str
) -> None:
    """The stored schedule is read back with the label of ``[defaults]``' core variant left
    out (the SQL puts it back in Python): a restart still gives each series of every source
    and variant its own stored due time, and a stored row whose variant a creator no longer
    has stays unread."""
    creators_ = [
        {"user_id": _user(0)},
        {"user_id": _user(1), "business": "COOPERATE_NOTE"},
        {"user_id": _user(2), "variants": [{}, {"date_type": "DAY_30"}]},
        {"user_id": _user(3), "sources": ["fans"]},
    ]
    document = {
        "storage": {"url": db_url},
        "defaults": {"date_type": "DAY_90", "sources": ["core", "fans", "notes"]},
        "creators": creators_,
    }
    config = parse_config(document)
    first = await load_slots(config, store, T0)
    assert len(first) == 3 + 3 + 4 + 1
    served = sorted(first.values(), key=lambda s: s.key)
    await store.record_fetches(
        [
            FetchRecord(s.creator_id, s.variant, T0, code=0, next_due_at=T0 + timedelta(hours=n))
            for n, s in enumerate(served, 1)
        ]
    )
    later = await load_slots(config, store, T0 + timedelta(days=3))
    assert {key: later[key].due_at for key in later} == {
        s.key: T0 + timedelta(hours=n) for n, s in enumerate(served, 1)
    }
    # creator 1 goes back to [defaults]' variant, creator 2 keeps only its second one
    creators_[1] = {"user_id": _user(1)}
    creators_[2] = {"user_id": _user(2), "variants": [{"date_type": "DAY_30"}]}
    changed = await load_slots(parse_config(document), store, T0 + timedelta(days=3))
    for key, slot in changed.items():
        if key in later:
            assert slot.due_at == later[key].due_at, key
        else:  # never stored: placed on the grid
            assert slot.due_at == first_due(key, slot.every, T0 + timedelta(days=3)), key


async def test_a_tag_or_name_change_is_written_and_duplicates_count_once(store: Store) -> None:
    ids = await store.sync_creators([Creator(_user(0), "a"), Creator(_user(1), "b")])
    again = await store.sync_creators(
        [Creator(_user(0), "a", ("x", "y")), Creator(_user(1), "b"), Creator(_user(1), "b2")]
    )
    assert again == ids
    async with store._read() as conn:
        rows = (await conn.execute(select(creators.c.name, creators.c.tags))).all()
    assert sorted(tuple(r) for r in rows) == [("a", ["x", "y"]), ("b2", [])]


async def test_fast_time_paths_match_the_column_type(store: Store) -> None:
    """``utc_to_db``/``utc_micros_from_db`` give what ``UTCDateTime`` gives, on both backends
    (the latter in the live schedule's microseconds)."""
    column = schedule.c.next_due_at
    values = [T0, T0.replace(microsecond=123456), datetime(1999, 1, 1, tzinfo=UTC)]
    values.append(datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC))
    async with store._read() as conn:
        to_fast, to_slow = engine.utc_to_db(conn, column), engine.to_db(conn, column)
        from_fast, from_slow = engine.utc_micros_from_db(conn, column), engine.from_db(conn, column)
        for value in values:
            assert to_fast(value) == to_slow(value)
            assert from_slow(to_slow(value)) == value
            assert moment(from_fast(to_slow(value))) == value
        other_zone = T0.astimezone(timezone(timedelta(hours=8)))
        assert to_fast(other_zone) == to_slow(other_zone)  # not UTC: through the type
        if conn.dialect.name == "sqlite":  # text written by hand, with an offset or none
            assert moment(from_fast("2025-12-11T10:00:00+08:00")) == T0
            assert moment(from_fast("2025-12-11T02:00:00")) == T0


def test_the_collector_is_paused_and_given_back() -> None:
    assert gc.isenabled()
    with collector_paused():
        assert not gc.isenabled()
        with collector_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the outer pause still holds
    assert gc.isenabled()
    with pytest.raises(ValueError), collector_paused():
        raise ValueError
    assert gc.isenabled()


@pytest.mark.slow
def test_run_does_not_import_what_only_other_commands_need() -> None:
    """alembic (db commands), aiohttp and prometheus_client ([http] listen), plotly (report):
    ~20 MB and a quarter second that ``run`` without them does not pay; jinja2 (the first
    message, a templates_dir's check) and the commands' own wiring (backtest, reparse,
    exports): 2 MB and 40 ms more."""
    heavy = {"alembic", "aiohttp", "prometheus_client", "plotly", "mako", "jinja2"}
    commands_only = {
        "monitor.app.commands",
        "monitor.service.alerting.backtest",
        "monitor.service.fetching.reparse",
        "monitor.service.reporting.source_view",
    }
    code = (
        "import sys, monitor.cli.main, monitor.cli.commands, monitor.daemon\n"
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({sorted(heavy)!r})))\n"
        f"print(sorted(set(sys.modules) & set({sorted(commands_only)!r})))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["[]", "[]"]
