"""Followers, notes, balance readings and kept unreadable answers on both backends: written
whole from real sample bodies, read back as the rules and surfaces need them."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from support.store import CREATORS, T0, FakeClock

from monitor.errors import UnreadableAnswer
from monitor.model import Balance, FollowerPoint, ListedNote, Note, NoteStats
from monitor.store import Store
from monitor.upstream.balance import parse_balance
from monitor.upstream.fans import parse_fans
from monitor.upstream.notes import parse_notes

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)


async def _rows(store: Store, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    """Plain SQL, as a user with ``sqlite3``/``psql`` sees the tables."""
    async with store._read() as conn:
        return [tuple(r) for r in await conn.execute(text(sql), params)]


def _listed(n: int, *, reads: int = 100, published: date = date(2025, 12, 1)) -> ListedNote:
    note = Note(f"{n:024x}", f"note {n}", published + timedelta(days=n), video=n % 2 == 0, ad=False)
    return ListedNote(note, NoteStats(reads=reads + n, likes=10 + n, collects=1 + n))


async def _creator(store: Store) -> int:
    ids = await store.sync_creators(CREATORS)
    return ids[CREATORS[0].user_id]


async def test_follower_history_backfills_in_one_write_and_reads_by_range(
    store: Store, data_dir: Path
) -> None:
    cid = await _creator(store)
    body = (data_dir / "fans_history_success_30d.json").read_text(encoding="utf-8")
    history = parse_fans(body, today=date(2026, 12, 6)).data
    assert len(history.points) >= 28
    assert await store.store_followers(cid, history.points) == len(history.points)
    assert await store.follower_series(cid) == list(history.points)

    first, last = history.points[0].date_key, history.points[-1].date_key
    middle = first + timedelta(days=10)
    window = await store.follower_series(cid, since=middle, until=middle + timedelta(days=2))
    assert [p.date_key for p in window] == [middle + timedelta(days=i) for i in range(3)]
    assert await store.follower_series(cid, since=last + DAY) == []
    assert await store.follower_series(cid + 1) == []  # another creator has none


async def test_a_later_answer_overwrites_its_days_and_keeps_the_older_ones(store: Store) -> None:
    cid = await _creator(store)
    day = date(2025, 11, 1)
    await store.store_followers(
        cid, [FollowerPoint(day + timedelta(days=i), 1000 + i) for i in range(90)]
    )
    # the next day's 30-day answer: 29 days again (one corrected) and one new day
    newer = [FollowerPoint(day + timedelta(days=61 + i), 2000 + i) for i in range(30)]
    await store.store_followers(cid, newer)
    series = await store.follower_series(cid)
    assert len(series) == 91
    assert series[0] == FollowerPoint(day, 1000)
    assert series[60] == FollowerPoint(day + timedelta(days=60), 1060)
    assert series[61:] == newer
    assert await _rows(store, "SELECT count(*) FROM follower_counts") == [(91,)]


async def test_many_creators_backfill_in_one_transaction(store: Store) -> None:
    ids = await store.sync_creators(CREATORS)
    lily, bo = ids[CREATORS[0].user_id], ids[CREATORS[1].user_id]
    day = date(2025, 9, 1)
    batch = {
        lily: [FollowerPoint(day + timedelta(days=i), 5000 - i) for i in range(90)],
        bo: [FollowerPoint(day + timedelta(days=i), 100 + i) for i in range(30)],
    }
    assert await store.store_followers_many(batch) == 120
    assert await store.follower_series(lily) == batch[lily]
    assert await store.follower_series(bo) == batch[bo]
    assert await store.store_followers_many({}) == 0
    assert await store.store_followers(lily, []) == 0


async def test_note_page_stores_new_notes_once_and_every_observation(
    store: Store, clock: FakeClock
) -> None:
    cid = await _creator(store)
    page1 = [_listed(n) for n in (8, 7, 6, 5, 4, 3, 2, 1)]
    assert await store.store_notes(cid, page1, T0) == [e.note.note_id for e in page1]
    assert await store.first_notes_visit(cid) == T0

    later = T0 + 6 * HOUR
    grown = [ListedNote(e.note, replace(e.stats, reads=e.stats.reads + 500)) for e in page1]
    newest = _listed(9, reads=40)
    assert await store.store_notes(cid, [newest, *grown[:7]], later) == [newest.note.note_id]
    assert await store.first_notes_visit(cid) == T0
    assert await store.known_note_ids([newest.note.note_id, "f" * 24]) == {newest.note.note_id}

    records = await store.latest_notes(cid, limit=3)
    assert [r.note for r in records] == [newest.note, page1[0].note, page1[1].note]
    assert records[0].first_seen_at == later
    assert records[0].first == records[0].latest  # seen once
    assert records[0].growth("reads") == 0
    eight = records[1]
    assert (eight.first.seen_at, eight.latest.seen_at) == (T0, later)
    assert (eight.first.stats.reads, eight.latest.stats.reads) == (108, 608)
    assert eight.growth("reads") == 500
    assert eight.growth("likes") == 0

    # the same page stored twice at one instant is one observation (a replayed answer)
    await store.store_notes(cid, [newest], later)
    assert await _rows(
        store, "SELECT count(*) FROM note_observations WHERE note_id = :n", n=newest.note.note_id
    ) == [(1,)]
    assert await _rows(store, "SELECT count(*) FROM notes") == [(9,)]
    # note 1 was not on the later page: its latest observation is still the first
    one = (await store.latest_notes(cid, limit=20))[-1]
    assert one.note.note_id == page1[-1].note.note_id
    assert one.growth("reads") == 0


async def test_latest_notes_since_a_day_and_per_creator(store: Store) -> None:
    ids = await store.sync_creators(CREATORS)
    lily, bo = ids[CREATORS[0].user_id], ids[CREATORS[1].user_id]
    await store.store_notes(lily, [_listed(n) for n in range(1, 6)], T0)
    await store.store_notes(bo, [_listed(n) for n in range(20, 22)], T0)
    week = await store.latest_notes(lily, since=date(2025, 12, 4))
    assert [r.note.published for r in week] == [date(2025, 12, d) for d in (6, 5, 4)]
    assert {r.note.note_id for r in await store.latest_notes(bo)} == {
        f"{20:024x}",
        f"{21:024x}",
    }
    assert await store.first_notes_visit(ids[CREATORS[1].user_id]) == T0
    assert await store.latest_notes(lily, limit=0) == []


async def test_new_notes_leave_out_each_creators_first_visit(store: Store) -> None:
    ids = await store.sync_creators(CREATORS)
    lily, bo = ids[CREATORS[0].user_id], ids[CREATORS[1].user_id]
    await store.store_notes(lily, [_listed(n) for n in (1, 2, 3)], T0)  # lily's baseline
    await store.store_notes(lily, [_listed(4), _listed(3)], T0 + HOUR)
    await store.store_notes(bo, [_listed(20)], T0 + 2 * HOUR)  # bo's baseline, seen later
    await store.store_notes(bo, [_listed(21), _listed(20)], T0 + 3 * HOUR)
    await store.store_notes(lily, [_listed(5), _listed(4)], T0 + 4 * HOUR)

    found = await store.new_notes(T0)
    assert [(cid, r.note.note_id) for cid, r in found] == [
        (lily, f"{4:024x}"),
        (bo, f"{21:024x}"),
        (lily, f"{5:024x}"),
    ]
    assert found[0][1].first_seen_at == T0 + HOUR
    assert [r.note.note_id for _, r in await store.new_notes(T0 + 2 * HOUR, [lily])] == [
        f"{5:024x}"
    ]
    assert await store.new_notes(T0 + 5 * HOUR) == []


async def test_sample_note_page_round_trips(store: Store, data_dir: Path) -> None:
    cid = await _creator(store)
    for name in ("notes_detail_success_page1.json", "notes_detail_vendor_example.json"):
        body = (data_dir / name).read_text(encoding="utf-8")
        page = parse_notes(body, today=date(2026, 12, 6)).data
        assert page.notes
        await store.store_notes(cid, page.notes, T0)
        stored = {r.note: r.latest.stats for r in await store.latest_notes(cid, limit=100)}
        for entry in page.notes:
            assert stored[entry.note] == entry.stats


async def test_balance_is_exact_and_read_by_range(store: Store, data_dir: Path) -> None:
    body = (data_dir / "balance_vendor_doc_example.json").read_text(encoding="utf-8")
    sample = parse_balance(body).data
    amounts = [sample.amount, Decimal("1234.5678"), Decimal("0.10"), Decimal("99999999.999999")]
    for i, amount in enumerate(amounts):
        await store.store_balance(T0 + i * HOUR, Balance(amount))
    readings = await store.balance_readings()
    assert [r.amount for r in readings] == amounts
    assert all(isinstance(r.amount, Decimal) for r in readings)
    assert str(readings[2].amount) in {"0.10", "0.1"}  # never 0.1000000000000000055…
    assert [r.read_at for r in await store.balance_readings(T0 + HOUR, T0 + 2 * HOUR)] == [
        T0 + HOUR,
        T0 + 2 * HOUR,
    ]
    latest = await store.latest_balance()
    assert latest is not None
    assert latest.amount == Decimal("99999999.999999")
    await store.store_balance(T0 + 3 * HOUR, Balance(Decimal("5")))  # same instant: replaced
    assert [r.amount for r in await store.balance_readings(since=T0 + 3 * HOUR)] == [Decimal(5)]
    with pytest.raises(ValueError, match="finite Decimal"):
        await store.store_balance(T0, Balance(Decimal("NaN")))


async def test_no_balance_yet(store: Store) -> None:
    assert await store.latest_balance() is None
    assert await store.balance_readings() == []


async def test_unreadable_answers_are_kept_until_reparsed_and_survive_retention(
    store: Store, clock: FakeClock
) -> None:
    cid = await _creator(store)
    body = json.dumps({"code": 0, "data": {"surprise": [1, 2]}, "message": "ok"})
    with pytest.raises(UnreadableAnswer) as caught:
        parse_fans(body)
    err = caught.value
    first = await store.keep_unreadable(
        source=err.source,
        body=body,
        params=err.params,
        fetched_at=T0,
        creator_id=cid,
        error=str(err),
    )
    second = await store.keep_unreadable(source="balance", body="{}", fetched_at=T0 + HOUR)
    assert await store.count_unreparsed() == 2
    kept = await store.unreparsed_answers()
    assert [k.id for k in kept] == [first, second]
    assert kept[0].source == "fans"
    assert kept[0].body == body
    assert kept[0].creator_id == cid
    assert kept[0].params == err.params
    assert "follower history" in kept[0].error
    assert kept[1].creator_id is None
    assert kept[1].params == {}
    assert [k.id for k in await store.unreparsed_answers(source="balance")] == [second]

    clock.advance(timedelta(days=400))
    await store.prune_raw(clock())  # retention of raw bodies leaves kept answers alone
    assert await store.count_unreparsed() == 2

    assert await store.mark_reparsed([first], clock()) == 1
    assert await store.mark_reparsed([first], clock()) == 0  # once
    assert [k.id for k in await store.unreparsed_answers()] == [second]
    assert await _rows(store, "SELECT body FROM unreadable_answers WHERE id = :i", i=first) == [
        (body,)
    ]
