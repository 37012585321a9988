"""The live schedule in flat arrays: a series is either its row or the one live ``Slot`` being
fetched, what a fetch changed is written back, a reload adopts fetches still running, and
100,000 series cost a few megabytes."""

from __future__ import annotations

import random
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from monitor.model import Business, Creator, DateType, Variant
from monitor.ops.wallclock import micros, moment
from monitor.policy import cadence
from monitor.policy.cadence import apply_window, pick_due
from monitor.service.fetching.cluster import ready_bound
from monitor.service.fetching.timetable import SHORTLIST, Timetable

T0 = datetime(2025, 12, 11, 2, 0, tzinfo=UTC)
DAY = timedelta(days=1)
V30 = Variant()
V90 = Variant(date_type=DateType.DAY_90)


def _user(n: int) -> str:
    return f"5c3bf7f7{n:016x}"


def _table(
    creators: list[Creator], variants: list[tuple[Variant, ...]], first_id: int = 100
) -> Timetable:
    """Rows for each creator's variants (creators.id from ``first_id`` on), each due at T0
    plus its row number in minutes."""
    table = Timetable(creators, T0)
    every = table.every_index(DAY)
    for index, wanted in enumerate(variants):
        for variant in wanted:
            table.add(index, first_id + index, table.variant_index(variant), every)
    table.seal()
    for row in range(len(table)):
        table.schedule(row, T0 + timedelta(minutes=row))
    return table


def test_microseconds_are_exact_far_from_the_epoch() -> None:
    at = datetime(2031, 7, 1, 23, 59, 59, 999_999, tzinfo=UTC)
    assert moment(micros(at)) == at
    assert micros(moment(-5)) == -5


def test_a_row_reads_as_a_slot_with_its_siblings() -> None:
    a, b = Creator(_user(1), "a"), Creator(_user(2), "b")
    table = _table([a, b], [(V30, V90), (V30,)])
    assert len(table) == 3
    assert list(table) == [
        f"{_user(1)}/{V30.label}",
        f"{_user(1)}/{V90.label}",
        f"{_user(2)}/{V30.label}",
    ]
    slot = table.slot(1)
    assert (slot.creator, slot.creator_id, slot.variant, slot.every) == (a, 100, V90, DAY)
    assert slot.due_at == T0 + timedelta(minutes=1)
    assert (slot.last_success_at, slot.consecutive_failures, slot.last_code) == (None, 0, None)
    assert slot.tracked_since == T0
    assert [s.variant for s in slot.siblings] == [V30, V90]
    assert slot.siblings[1] is slot
    assert table.slot(2).siblings == ()  # a lone slot is its own sibling
    assert table[f"{_user(2)}/{V30.label}"].creator is b
    assert table.find(100, V90) == 1
    assert table.find(101, V90) is None
    assert table.find(999, V30) is None


def test_a_held_slot_is_the_row_until_it_is_released_with_what_the_fetch_changed() -> None:
    table = _table([Creator(_user(1)), Creator(_user(2))], [(V30, V90), (V30,)])
    now = T0 + timedelta(hours=1)
    assert list(table.due_first(now)) == [0, 1, 2]
    slot = table.slot(0)
    table.check_out(slot)
    assert list(table.due_first(now)) == [1, 2]  # being fetched: not handed out twice
    assert table.slot(0) is slot
    assert table.slot(1).siblings[0] is slot  # a sibling sees the live state
    slot.move_to(T0 + DAY)
    assert slot.succeeded(now) == 0  # no failure was logged: no "recovered" line owed
    other = table.slot(2)
    table.check_out(other)
    for _ in range(3):
        other.failed(500, "upstream error")
    other.failure_said()
    table.release(slot)
    table.release(other)
    again = table.slot(0)
    assert again is not slot
    assert (again.due_at, again.last_success_at, again.last_code) == (T0 + DAY, now, 0)
    failing = table.slot(2)
    assert (failing.consecutive_failures, failing.last_code) == (3, 500)
    assert (failing.last_error, failing.failure_logged) == ("upstream error", True)
    assert list(table.due_first(now)) == [1, 2]
    assert table.earliest() == T0 + timedelta(minutes=1)
    failing.last_error = None  # (no fetch clears it; the row follows the slot all the same)
    failing.mark_broken()
    table.check_out(failing)
    table.release(failing)
    assert table.slot(2).last_error is None
    assert list(table.due_first(now)) == [1]  # broken: never due until the config changes


def test_a_reload_adopts_fetches_still_running() -> None:
    creators = [Creator(_user(1)), Creator(_user(2))]
    old = _table(creators, [(V30,), (V30,)])
    running = old.slot(1)
    old.check_out(running)
    new = _table([creators[1]], [(V30,)], first_id=101)  # the reload dropped the first one
    new.adopt(old.live())
    assert running.row == 0
    assert list(new.due_first(T0 + DAY)) == []  # still being fetched: not started twice
    running.move_to(T0 + 2 * DAY)
    new.release(running)
    assert new.slot(0).due_at == T0 + 2 * DAY
    gone = old.slot(0)
    old.check_out(gone)
    new.adopt([gone])
    assert gone.row == -1
    new.release(gone)  # its creator left: nothing to write back
    assert len(new) == 1


def test_a_release_into_a_table_that_does_not_hold_the_slot_changes_nothing() -> None:
    table = _table([Creator(_user(1))], [(V30,)])
    snapshot = table.slot(0)
    snapshot.move_to(T0 + 9 * DAY)
    table.release(snapshot)  # never held: a snapshot is not the row
    assert table.slot(0).due_at == T0


def test_100_000_series_cost_a_few_megabytes() -> None:
    creators = [Creator(_user(n)) for n in range(100_000)]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        table = _table(creators, [(V30,)] * len(creators))
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(table) == 100_000
    # about 50 bytes a row; one Slot object, name and datetime each were about 350
    assert held < 8_000_000, held


def test_new_rows_are_placed_where_the_cadence_places_them() -> None:
    """Every row ``place_unscheduled`` places gets ``cadence.first_due_micros``' instant (the
    offsets must agree between versions and instances), for any key, cadence (sub-second ones
    too) and now; a row that has a due time keeps it."""
    rng = random.Random(7)
    variants = [V30, V90, Variant(business=Business.COOPERATE_NOTE)]
    everies = [DAY, timedelta(hours=6), timedelta(seconds=1), timedelta(microseconds=999_999)]
    everies += [timedelta(microseconds=rng.randrange(1, 30 * 86_400_000_000)) for _ in range(4)]
    for now in (T0, T0 + timedelta(microseconds=rng.randrange(10**15)), moment(7)):
        creators = [Creator(f"{rng.getrandbits(96):024x}") for _ in range(300)]
        table = Timetable(creators, now)
        for index in range(len(creators)):
            for variant in rng.sample(variants, rng.randrange(1, 4)):
                every = table.every_index(rng.choice(everies))
                table.add(index, index + 1, table.variant_index(variant), every)
        table.seal()
        kept = {row: T0 + timedelta(seconds=row) for row in range(0, len(table), 5)}
        for row, due in kept.items():
            table.schedule(row, due)
        assert table.place_unscheduled(now) == len(table) - len(kept)
        for row in range(len(table)):
            every_us = table.every(row) // timedelta(microseconds=1)
            expected = kept.get(row) or moment(
                cadence.first_due_micros(table.key(row), every_us, micros(now))
            )
            assert table.due_at(row) == expected, (row, table.key(row), table.every(row))


def test_every_creator_may_have_a_cadence_of_its_own() -> None:
    """A roster may give each row its own ``every``: 70,000 distinct cadences (more than a
    16-bit index holds) are numbered by a dict, not by a scan per row."""
    creators = [Creator(_user(n)) for n in range(70_000)]
    table = Timetable(creators, T0)
    variant = table.variant_index(V30)
    for n in range(len(creators)):
        table.add(n, n + 1, variant, table.every_index(timedelta(hours=1, seconds=n)))
    table.seal()
    assert table.every(69_999) == timedelta(hours=1, seconds=69_999)
    assert table.every_index(timedelta(hours=1)) == 0
    assert table.variant_index(V30) == variant


def _reference(
    table: Timetable,
    broken: set[int],
    bound: datetime,
    now: datetime,
    count: int,
    effective: Effective,
) -> list[int]:
    """What the dispatcher picked before ``pick``: every ready row through ``pick_due``."""
    busy = held(table) | broken
    ready = [row for row in range(len(table)) if table.due_at(row) <= bound and row not in busy]
    entries = [_Entry(table.key(row), effective(table.due_at(row)), row) for row in ready]
    return [entry.row for entry in pick_due(entries, now, count)]


def held(table: Timetable) -> set[int]:
    return {slot.row for slot in table.live()}


@dataclass(frozen=True)
class _Entry:
    key: str
    due_at: datetime
    row: int


Effective = Callable[[datetime], datetime]


@pytest.mark.parametrize("fetch_after", [None, time(9, 0)])
@pytest.mark.parametrize("seed", range(3))
def test_a_round_picks_what_a_look_at_every_row_would_pick(
    seed: int, fetch_after: time | None
) -> None:
    """``pick`` reads a few rows from a list made once per ``SHORTLIST`` picks; it picks the
    same rows, in the same order, as ``pick_due`` over every ready row, while fetches end with
    new due times (later, the same, earlier), rows break and due times are moved, with due
    times tied to the minute and ``fetch_after`` moving early slots onto one time."""
    rng = random.Random(seed)
    zone = ZoneInfo("Asia/Shanghai")
    creators = [Creator(f"{rng.getrandbits(96):024x}") for _ in range(300)]
    variants: list[tuple[Variant, ...]] = [
        (V30, V90) if n % 3 == 0 else (V30,) for n in range(len(creators))
    ]
    table = _table(creators, variants)  # 400 rows: more than one list's worth
    now = T0 - 2 * DAY
    for row in range(len(table)):
        table.schedule(row, now - timedelta(minutes=rng.randrange(3 * 24 * 60)))
    effective: Effective = lambda due: apply_window(due, fetch_after, zone)  # noqa: E731
    picked, broken = 0, set[int]()
    for _ in range(300):
        now += timedelta(minutes=rng.choice((0, 1, 7, 90)))
        bound = ready_bound(now, fetch_after, zone)
        count = rng.choice((1, 1, 1, 3, 40))
        expected = _reference(table, broken, bound, now, count, effective)
        rows = table.pick(bound, now, count, effective)
        assert rows == expected
        picked += len(rows)
        for row in rows:
            table.check_out(table.slot(row))
        for slot in table.live():
            if rng.random() < 0.5:
                continue  # still on the wire
            step = rng.choice((DAY, timedelta(0), -timedelta(hours=5), timedelta(minutes=30)))
            slot.move_to(slot.due_at + step)
            if rng.random() < 0.03:
                slot.mark_broken()
                broken.add(slot.row)
            table.release(slot)
        if rng.random() < 0.1:  # a due time written outside a fetch (a claim, a restore)
            row = rng.randrange(len(table))
            if row not in held(table):
                table.schedule(row, now - timedelta(minutes=rng.randrange(600)))
    assert picked > SHORTLIST  # the list was used up and made again


def test_a_round_that_wants_more_rows_than_the_list_holds_reads_on() -> None:
    creators = [Creator(_user(n)) for n in range(3 * SHORTLIST)]
    table = _table(creators, [(V30,)] * len(creators))  # each due a minute after the last
    bound = T0 + DAY
    first = table.pick(bound, bound, 10, lambda due: due)
    assert first == list(range(10))
    for row in first:
        table.check_out(table.slot(row))
    # the list made for the first round holds SHORTLIST rows: the next one reads past it
    assert table.pick(bound, bound, 2 * SHORTLIST, lambda due: due) == list(
        range(10, 10 + 2 * SHORTLIST)
    )
    assert list(table.due_first(bound)) == list(range(10, len(table)))
