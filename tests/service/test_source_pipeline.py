"""Every source through the one pipeline: the schedule holds a creator's core, follower and note
series, the real fetcher reads each from the simulator over HTTP through the one gate, and the
store keeps what each answer holds (follower counts, notes and their observations) with its
``fetches`` row. A note visit reads page 1, and the next page only while every note on it was
new; a paid answer the parser cannot read is kept whole and said once."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from datetime import timedelta
from decimal import Decimal

import pytest
from sqlalchemy import func, select
from support.pipeline import Pipeline
from support.pipeline import pipeline as source_pipeline
from support.sim import plain_creator
from support.store import FakeClock

from monitor.store import Store
from monitor.store.schema import fetches, follower_counts, note_observations, notes, schedule
from monitor.upstream.notes import parse_notes
from monitor.upstream.simulator import SimKnobs, Simulator

USER = plain_creator()


@pytest.fixture
def sim_knobs() -> SimKnobs:
    return SimKnobs(balance=Decimal("1000"))


@pytest.fixture
async def pipeline(
    sim: Simulator, store: Store, clock: FakeClock, token: str
) -> AsyncIterator[Pipeline]:
    document = {
        "defaults": {"sources": ["core", "fans", "notes"], "notes_pages": 2},
        "creators": [{"user_id": USER, "name": "Lily", "date_type": "DAY_90"}],
    }
    async with source_pipeline(document, sim=sim, store=store, clock=clock, token=token) as made:
        yield made


async def _count(store: Store, table: object, *where: object) -> int:
    query = select(func.count()).select_from(table)  # type: ignore[arg-type]
    for clause in where:
        query = query.where(clause)  # type: ignore[arg-type]
    async with store._read() as conn:
        return int(await conn.scalar(query) or 0)


async def test_each_source_is_scheduled_read_and_stored(
    pipeline: Pipeline, sim: Simulator, store: Store
) -> None:
    assert sorted(pipeline.slots) == [
        f"{USER}/DAILY_NOTE/PHOTO_TEXT_AND_VIDEO/DAY_90/ALL",
        f"{USER}/fans/DAY_90",  # the follower series takes the creator's widest window
        f"{USER}/notes",
    ]
    async with store._read() as conn:
        stored = sorted((await conn.execute(select(schedule.c.source))).scalars())
    assert stored == ["core", "fans", "notes"]

    for key in pipeline.slots:
        await pipeline.visit(key)

    log = sim.counters().log
    assert len(log) == 3  # one call per source: a first note visit reads page 1 only
    creator_id = await store.find_creator(USER)
    assert creator_id is not None
    followers = await store.follower_series(creator_id)
    assert len(followers) == 90  # one call backfilled the whole window
    assert await _count(store, notes) == 8
    assert await _count(store, note_observations) == 8
    async with store._read() as conn:
        rows = (await conn.execute(select(fetches.c.source, fetches.c.points))).all()
    assert sorted(rows) == [("core", 90), ("fans", 90), ("notes", 8)]
    # each series moved on to its next due time, in the fetch's own transaction
    assert all(slot.due_at > slot.last_success_at for slot in pipeline.slots.values())  # type: ignore[operator]


async def test_a_later_visit_reads_on_only_while_every_note_is_new(
    pipeline: Pipeline, sim: Simulator, store: Store, clock: FakeClock
) -> None:
    key = f"{USER}/notes"
    await pipeline.visit(key)
    assert await _count(store, notes) == 8  # the baseline

    clock.advance(timedelta(days=120))  # the creator posted well over two pages meanwhile
    calls = len(sim.counters().log)
    await pipeline.visit(key)
    pages = [r.variant for r in sim.counters().log[calls:]]
    assert pages == ["LATEST/ALL/ALL/NO/page=1", "LATEST/ALL/ALL/NO/page=2"]  # notes_pages
    assert await _count(store, notes) == 24

    clock.advance(timedelta(minutes=1))
    calls = len(sim.counters().log)
    await pipeline.visit(key)  # nothing new since: page 1 only, no note twice
    assert [r.variant for r in sim.counters().log[calls:]] == ["LATEST/ALL/ALL/NO/page=1"]
    assert await _count(store, notes) == 24
    assert await _count(store, note_observations) == 8 + 16 + 8


async def test_an_unreadable_paid_answer_is_kept_whole_and_said_once(
    pipeline: Pipeline,
    sim: Simulator,
    store: Store,
    token: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    sim.force_code(USER, "wrong_type", times=2, endpoint="fans")
    key = f"{USER}/fans/DAY_90"
    with caplog.at_level(logging.WARNING):
        await pipeline.visit(key)
        await pipeline.visit(key)
    kept = await store.unreparsed_answers()
    assert [(k.source, k.params["userId"], k.params["dateType"]) for k in kept] == [
        ("fans", USER, "DAY_90"),
        ("fans", USER, "DAY_90"),
    ]
    assert all(token not in k.body and '"list"' in k.body for k in kept)
    said = [r.getMessage() for r in caplog.records if "could not be read" in r.getMessage()]
    assert len(said) == 1
    assert "creator-monitor reparse" in said[0]
    async with store._read() as conn:
        rows = (await conn.execute(select(fetches.c.code, fetches.c.billed))).all()
    assert rows == [(0, True), (0, True)]  # paid for, and recorded as such
    assert await _count(store, follower_counts) == 0


def test_a_title_with_half_a_character_is_stored_readable() -> None:
    """A lone surrogate escape in a title (``"\\ud800"``) would make the page's write fail:
    the parser makes it a "?" and keeps the rest."""
    body = (
        '{"code": 0, "data": {"total": 1, "list": [{"noteId": "0123456789abcdef01234567", '
        '"title": "冬季\\ud800好物", "date": "2025-12-01", "readNum": 5}]}}'
    )
    title = parse_notes(body).data.notes[0].note.title
    assert title == "冬季?好物"
    title.encode("utf-8")  # storable and sendable
