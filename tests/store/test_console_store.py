"""The console's store reads and its acknowledgement write, on SQLite and PostgreSQL: the
overview paged, filtered and sorted in SQL, creator lookup by id or name, points, fetch log,
acknowledgements, calls per day by code.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

from monitor.model import AlertState, CoreData, Creator, DailyPoint, Phase, Severity, Variant
from monitor.store import FetchRecord, Store, migrate
from monitor.store.overview import OverviewQuery

T0 = datetime(2026, 11, 30, 2, 0, tzinfo=UTC)
V = Variant()


def _data(slope: int, days: int = 20) -> CoreData:
    start = date(2026, 11, 10)
    points = tuple(
        DailyPoint(
            date_key=start + timedelta(days=i),
            imp=1000 + slope * i,
            read=100,
            engage=10,
            cpm=None,
            cpe=None,
            cpv=None,
            cpuv=None,
            third_user_num=0,
        )
        for i in range(days)
    )
    return CoreData(summary=points[-1], daily=points)


async def _populated(db_url: str) -> tuple[Store, dict[str, int]]:
    await migrate.upgrade(db_url)
    store = Store.open(db_url, clock=lambda: T0)
    roster = [
        Creator("a" * 24, "Alice", ("beauty",)),
        Creator("b" * 24, "Bob", ("food",)),
        Creator("c" * 24, "Carol", ("beauty", "travel")),
        Creator("d" * 24, "Dan_50%", ()),
    ]
    ids = await store.sync_creators(roster)
    await store.schedule_new((cid, V, T0) for cid in ids.values())
    slopes = {"a" * 24: 10, "b" * 24: -20, "c" * 24: 0}
    records = [
        FetchRecord(ids[u], V, started_at=T0, http_status=200, code=0, billed=True, data=_data(s))
        for u, s in slopes.items()
    ]
    records.append(
        FetchRecord(
            ids["d" * 24], V, started_at=T0, http_status=200, code=301, error="upstream 301"
        )
    )
    await store.record_fetches(records)
    return store, ids


async def test_overview_pages_filters_and_sorts_in_sql(db_url: str) -> None:
    store, _ = await _populated(db_url)
    async with store:
        page = await store.overview(OverviewQuery(per_page=2))
        assert page.total == 4
        assert page.anchor == "2026-11-29"
        assert [r.name for r in page.rows] == ["Alice", "Bob"]
        alice = page.rows[0]
        # the 7-day window is 11-22..11-29: 1120 → 1190
        assert alice.last_value == 1190
        assert alice.change_pct is not None
        assert abs(alice.change_pct - 70 / 1120) < 1e-9
        assert len(alice.spark) == 20
        assert alice.status == "ok"
        second = await store.overview(OverviewQuery(per_page=2, page=2))
        assert [r.name for r in second.rows] == ["Carol", "Dan_50%"]
        assert second.rows[1].status == "failing"
        assert second.rows[1].last_code == 301

        by_tag = await store.overview(OverviewQuery(tag="beauty"))
        assert [r.name for r in by_tag.rows] == ["Alice", "Carol"]
        assert by_tag.total == 2
        by_text = await store.overview(OverviewQuery(text="bo"))
        assert [r.name for r in by_text.rows] == ["Bob"]
        # LIKE wildcards in the filter are literal
        assert [r.name for r in (await store.overview(OverviewQuery(text="_50%"))).rows] == [
            "Dan_50%"
        ]
        assert (await store.overview(OverviewQuery(text="%"))).total == 1

        rise = await store.overview(OverviewQuery(sort="change"))
        assert [r.name for r in rise.rows] == ["Alice", "Carol", "Bob", "Dan_50%"]
        fall = await store.overview(OverviewQuery(sort="change_asc"))
        assert [r.name for r in fall.rows] == ["Bob", "Carol", "Alice", "Dan_50%"]


async def test_creator_lookup_points_fetch_log_and_codes(db_url: str) -> None:
    store, ids = await _populated(db_url)
    async with store:
        by_id = await store.find_creator_ref("b" * 24)
        by_name = await store.find_creator_ref("Bob")
        assert by_id == by_name
        assert by_id is not None
        assert by_id.id == ids["b" * 24]
        assert await store.find_creator_ref("nobody") is None

        points = await store.creator_points(by_id.id, since="2026-11-25")
        assert [p.date_key for p in points] == [f"2026-11-{d}" for d in range(25, 30)]
        assert points[-1].values["imp"] == 1000 - 20 * 19
        assert await store.creator_points(by_id.id, variant="COOPERATE_NOTE/VIDEO/DAY_30/ALL") == []

        log = await store.fetch_log(ids["d" * 24])
        assert [(f.code, f.http_status, f.billed) for f in log] == [(301, 200, False)]

        codes = await store.calls_by_code(T0 - timedelta(days=1), "Asia/Shanghai", now=T0)
        assert codes == [("2026-11-30", "0", 3), ("2026-11-30", "301", 1)]


async def test_acknowledge_only_open_alerts_once(db_url: str) -> None:
    store, ids = await _populated(db_url)
    async with store:
        alert = AlertState(
            rule="imp-high",
            scope="a" * 24,
            creator_id=ids["a" * 24],
            severity=Severity.WARNING,
            state=Phase.FIRING,
            fired_at=T0,
            summary="imp above 0",
            details={"date": "2026-11-29"},
        )
        assert await store.commit_transition(alert, [], now=T0, expect=None)
        stored = await store.load_alert(alert.rule, alert.scope)
        assert stored is not None
        alert_id = stored.id
        assert alert_id is not None
        assert await store.ack_alert(alert_id, now=T0, by="console") == "acked"
        assert await store.ack_alert(alert_id, now=T0, by="api") == "already"
        assert await store.ack_alert(alert_id + 99, now=T0, by="api") == "missing"
        shown = await store.console_alert(alert_id)
        assert shown is not None
        assert (shown.acked_at, shown.acked_by, shown.data_date) == (T0, "console", "2026-11-29")
        assert (await store.overview(OverviewQuery(text="alice"))).rows[0].open_alerts == 1

        resolved = replace(alert, id=alert_id, state=Phase.RESOLVED, resolved_at=T0)
        assert await store.commit_transition(resolved, [], now=T0, expect=None)
        assert await store.ack_alert(alert_id, now=T0, by="api") == "resolved"
        assert [a.id for a in await store.console_alerts(state="open")] == []
        assert [a.id for a in await store.console_alerts(state="resolved")] == [alert_id]
