"""What the surfaces read of the followers and notes, on both backends: the export streams (a
day's change only against the day before, ``since`` still giving the first day its change), the
week of follower counts the overview shows and sorts by (in SQL, with correlated subqueries),
and the creators' names for a list of new notes."""

from __future__ import annotations

import contextlib
from datetime import UTC, date, datetime, timedelta

import pytest
from support.alerting import points
from support.sources import store_sources
from support.store import CREATORS, T0

from monitor.model import Creator, FollowerPoint, ListedNote, Note, NoteStats, Variant
from monitor.store import FetchRecord, Store
from monitor.store.overview import OverviewQuery

DAY = timedelta(days=1)
FIRST = date(2025, 12, 1)
#: a third creator, losing followers fastest
CAROL = Creator("5b0000000000000000000003", "Carol", ())


async def _three(store: Store) -> dict[str, int]:
    ids = await store.sync_creators([*CREATORS, CAROL])
    await store.schedule_new((cid, Variant(), T0) for cid in ids.values())
    return ids


async def _rows(stream: object) -> list[dict[str, object]]:
    async with contextlib.aclosing(stream) as rows:  # type: ignore[type-var]
        return [row async for row in rows]


async def test_follower_export_gives_a_change_only_against_the_day_before(store: Store) -> None:
    ids = await _three(store)
    lilyy = ids[CREATORS[0].user_id]
    # days 0, 1, 2, then a gap (3 missing), then 4, 5
    counts = {0: 1000, 1: 1010, 2: 1005, 4: 1100, 5: 1090}
    await store.store_followers(
        lilyy, [FollowerPoint(FIRST + d * DAY, n) for d, n in counts.items()]
    )
    await store.store_followers(ids[CAROL.user_id], [FollowerPoint(FIRST, 50)])

    rows = await _rows(store.export_followers())
    assert [(r["name"], r["date_key"], r["fans"], r["change"]) for r in rows] == [
        ("Lilyy", "2025-12-01", 1000, None),
        ("Lilyy", "2025-12-02", 1010, 10),
        ("Lilyy", "2025-12-03", 1005, -5),
        ("Lilyy", "2025-12-05", 1100, None),  # the day before is not stored
        ("Lilyy", "2025-12-06", 1090, -10),
        ("Carol", "2025-12-01", 50, None),  # another creator: never against Lilyy's last day
    ]
    assert set(rows[0]) == {"user_id", "name", "date_key", "fans", "change"}

    since = await _rows(store.export_followers(FIRST + 2 * DAY))
    assert [(r["date_key"], r["change"]) for r in since] == [
        ("2025-12-03", -5),  # its change still comes from the day before ``since``
        ("2025-12-05", None),
        ("2025-12-06", -10),
    ]


async def test_note_export_streams_every_observation(store: Store) -> None:
    ids = await _three(store)
    lilyy = ids[CREATORS[0].user_id]
    note = Note("a" * 24, "冬季 =SUM(A1)", date(2025, 12, 1), video=True, ad=True, brand="B")
    await store.store_notes(lilyy, [ListedNote(note, NoteStats(10, 2, 1))], T0)
    await store.store_notes(lilyy, [ListedNote(note, NoteStats(25, 3, None))], T0 + DAY)

    rows = await _rows(store.export_note_observations())
    assert [(r["seen_at"], r["reads"], r["collects"]) for r in rows] == [
        (T0, 10, 1),
        (T0 + DAY, 25, None),
    ]
    assert rows[0]["title"] == "冬季 =SUM(A1)"
    assert (rows[0]["video"], rows[0]["ad"], rows[0]["brand"]) == (True, True, "B")
    assert rows[1]["first_seen_at"] == T0
    later = await _rows(store.export_note_observations(T0 + timedelta(hours=1)))
    assert [r["reads"] for r in later] == [25]


async def test_the_week_of_followers_is_read_for_a_page_of_creators(store: Store) -> None:
    ids = await _three(store)
    lilyy, bo, carol = (ids[c.user_id] for c in (*CREATORS, CAROL))
    # newest follower day of the store: FIRST + 10; the week starts at FIRST + 3
    await store.store_followers(
        lilyy, [FollowerPoint(FIRST + d * DAY, 1000 + d) for d in range(11)]
    )
    await store.store_followers(bo, [FollowerPoint(FIRST + d * DAY, 500 - 10 * d) for d in (5, 9)])
    await store.store_followers(carol, [FollowerPoint(FIRST, 7)])  # outside the week

    changes = await store.follower_changes([lilyy, bo, carol])
    assert set(changes) == {lilyy, bo}
    assert (changes[lilyy].first_day, changes[lilyy].first) == (FIRST + 3 * DAY, 1003)
    assert (changes[lilyy].last_day, changes[lilyy].last, changes[lilyy].change) == (
        FIRST + 10 * DAY,
        1010,
        7,
    )
    assert changes[bo].change == -40
    assert changes[bo].change_pct == pytest.approx(-40 / 450)
    assert await store.follower_changes([]) == {}


async def test_the_overview_sorts_by_follower_change_and_shows_it(store: Store) -> None:
    ids = await _three(store)
    lilyy, bo, carol = (ids[c.user_id] for c in (*CREATORS, CAROL))
    week = [FIRST + d * DAY for d in range(8)]
    await store.store_followers(
        lilyy, [FollowerPoint(d, 1000 + 10 * i) for i, d in enumerate(week)]
    )
    await store.store_followers(bo, [FollowerPoint(d, 1000 - 5 * i) for i, d in enumerate(week)])
    # Carol has no follower count: last in both orders

    gained = await store.overview(OverviewQuery(sort="fans_change"))
    assert [r.name for r in gained.rows] == ["Lilyy", "Bo", "Carol"]
    lost = await store.overview(OverviewQuery(sort="fans_change_asc"))
    assert [r.name for r in lost.rows] == ["Bo", "Lilyy", "Carol"]
    shown = {r.creator_id: r.followers for r in gained.rows}
    assert shown[carol] is None
    assert shown[lilyy] is not None
    assert shown[lilyy].change == 70
    assert shown[bo] is not None
    assert shown[bo].change_pct == pytest.approx(-35 / 1000)
    # the other orders show it too
    by_name = await store.overview(OverviewQuery(sort="name", per_page=1))
    assert [r.name for r in by_name.rows] == ["Bo"]
    assert by_name.rows[0].followers == shown[bo]


async def test_the_overview_lists_follower_and_note_series_without_core_metrics(
    store: Store,
) -> None:
    """A creator's follower and note series have rows of their own (their fetch status), named
    by their label; the core metrics are core's rows' alone, in the values and in the order."""
    ids = await _three(store)
    lilyy = ids[CREATORS[0].user_id]
    await store.schedule_new(
        [(lilyy, Variant.for_source("fans"), T0), (lilyy, Variant.for_source("notes"), T0)]
    )
    await store.record_fetches(
        [
            FetchRecord(
                lilyy,
                Variant(),
                started_at=T0,
                due_at=None,
                latency_ms=5,
                http_status=200,
                code=0,
                billed=True,
                error=None,
                data=points(FIRST, [100 + d for d in range(10)]),
                raw_body=None,
            )
        ]
    )
    for sort in ("name", "change", "change_asc"):
        page = await store.overview(OverviewQuery(sort=sort, text="Lilyy"))
        rows = {r.variant: r for r in page.rows}
        assert set(rows) == {Variant().label, "fans/DAY_30", "notes"}, sort
        assert rows[Variant().label].last_value is not None
        assert rows[Variant().label].change_pct is not None
        for label in ("fans/DAY_30", "notes"):
            assert (rows[label].last_value, rows[label].spark, rows[label].change_pct) == (
                None,
                (),
                None,
            )
        if sort != "name":  # a series without the metric goes after those with it
            assert page.rows[0].variant == Variant().label


async def test_new_notes_are_named_by_their_creators(store: Store) -> None:
    ids = await _three(store)
    now = datetime(2026, 11, 30, 2, 0, tzinfo=UTC)
    await store_sources(store, [CREATORS[0].user_id, CAROL.user_id], now)
    found = await store.new_notes(now - timedelta(hours=1))
    assert found  # the second visit's notes; the first visit's are the baseline
    names = await store.creator_names([cid for cid, _ in found] + [999_999])
    assert names == {
        cid: (c.user_id, c.name)
        for c in (CREATORS[0], CAROL)
        if (cid := ids[c.user_id]) in {i for i, _ in found}
    }
