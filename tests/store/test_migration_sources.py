"""0007_sources upgrades a database of the current release WITH data in it, on both backends:
every row of every table is the same afterwards, the new tables work, and going back down
leaves the old data as it was."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import inspect, text
from support.store import CREATORS, T0, load_sample

from monitor.model import Balance, FollowerPoint, Phase, Severity
from monitor.store import Store, migrate

#: the revision the release before issue sources ships
RELEASED = "0006_pause_cause"
NEW_TABLES = {
    "follower_counts",
    "notes",
    "note_observations",
    "balance_readings",
    "unreadable_answers",
}


#: columns later revisions add to the release's tables, with the value every row that was there
#: takes: 0008_outbox_facts (no facts), 0009_series_source (every old series is core's)
LATER_COLUMNS: dict[tuple[str, str], object] = {
    ("notifications", "facts"): None,
    ("fetches", "source"): "core",
    ("schedule", "source"): "core",
}


async def _dump(
    store: Store, *, leave_out: dict[tuple[str, str], object] | None = None
) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table except alembic's own, in a stable order, by column name;
    without the columns ``leave_out`` names (each checked to hold the value it gives)."""
    async with store._read() as conn:
        names = await conn.run_sync(lambda c: sorted(inspect(c).get_table_names()))
        dump = {}
        for name in names:
            if name == "alembic_version":
                continue
            result = await conn.execute(text(f'SELECT * FROM "{name}"'))
            rows = []
            for row in result.mappings():
                later = {
                    k: (leave_out or {})[(name, k)] for k in row if (name, k) in (leave_out or {})
                }
                assert all(row[k] == value for k, value in later.items())
                rows.append(tuple(sorted((k, v) for k, v in row.items() if k not in later)))
            dump[name] = sorted(rows, key=repr)
        return dump


async def _fill_released(store: Store, data_dir: Path) -> None:
    """What a running release writes: creators, fetches with points and raw bodies, an alert
    with its notification, a silence, the budget ledger."""
    ids = await store.sync_creators(CREATORS)
    core, body = load_sample(data_dir, "core_data_success_30d.json")
    # the release's own statements: today's code writes columns the release does not have
    variant = {"b": "DAILY_NOTE", "n": "PHOTO_TEXT_AND_VIDEO", "d": "DAY_30", "a": "ALL"}
    async with store._write() as conn:
        for i, creator in enumerate(CREATORS):
            at = T0 + timedelta(minutes=i)
            stamp = at.strftime("%Y-%m-%dT%H:%M:%S.%fZ") if store.dialect == "sqlite" else at
            cid = ids[creator.user_id]
            fetch = await conn.execute(
                text(
                    "INSERT INTO fetches (creator_id, business, note_type, date_type, advertise, "
                    "started_at, latency_ms, http_status, code, billed, points) VALUES (:cid, "
                    ":b, :n, :d, :a, :at, 800, 200, 0, :t, :p) RETURNING id"
                ),
                {"cid": cid, "at": stamp, "t": True, "p": len(core.daily), **variant},
            )
            fetch_id = fetch.scalar_one()
            await conn.execute(
                text(
                    "INSERT INTO raw_responses (fetch_id, received_at, body) VALUES (:f, :at, :b)"
                ),
                {"f": fetch_id, "at": stamp, "b": body},
            )
            for point in core.daily:
                await conn.execute(
                    text(
                        "INSERT INTO daily_metrics (creator_id, business, note_type, date_type, "
                        "advertise, date_key, imp, read, engage, fetch_id, updated_at) VALUES "
                        "(:cid, :b, :n, :d, :a, :day, :imp, :read, :engage, :f, :at)"
                    ),
                    {
                        "cid": cid,
                        "day": point.date_key.isoformat(),
                        "imp": point.imp,
                        "read": point.read,
                        "engage": point.engage,
                        "f": fetch_id,
                        "at": stamp,
                        **variant,
                    },
                )
            await conn.execute(
                text(
                    "INSERT INTO schedule (creator_id, business, note_type, date_type, advertise, "
                    "next_due_at, last_attempt_at, last_success_at, last_code, "
                    "consecutive_failures) VALUES (:cid, :b, :n, :d, :a, :at, :at, :at, 0, 0)"
                ),
                {"cid": cid, "at": stamp, **variant},
            )
    async with store._write() as conn:
        alert = await conn.execute(
            text(
                "INSERT INTO alerts (rule, creator_id, scope, variant, severity, state, summary, "
                "hits, clears, firing_sent, repeats_sent) VALUES ('reads-down', :cid, :scope, '', "
                ":sev, :state, 'reads 7,100 → 4,000', 1, 0, :t, 0) RETURNING id"
            ),
            {
                "cid": ids[CREATORS[0].user_id],
                "scope": CREATORS[0].user_id,
                "sev": Severity.WARNING.value,
                "state": Phase.FIRING.value,
                "t": True,
            },
        )
        alert_id = alert.scalar_one()
        await conn.execute(
            text(
                "INSERT INTO notifications (alert_id, channel, event, severity, title, body, "
                "status, attempts, next_attempt_at, created_at) VALUES (:a, 'team', 'firing', "
                "'warning', 't', 'b', 'sent', 1, :at, :at)"
            ),
            {
                "a": alert_id,
                "at": "2025-12-11T02:00:00.000000Z" if store.dialect == "sqlite" else T0,
            },
        )
    await store.add_silence(
        now=T0, ends_at=T0 + timedelta(days=1), user_id=CREATORS[1].user_id, reason="holiday"
    )


async def test_upgrade_keeps_every_row_and_adds_working_tables(db_url: str, data_dir: Path) -> None:
    assert await migrate.upgrade(db_url, RELEASED) == RELEASED
    async with Store.open(db_url) as store:
        await _fill_released(store, data_dir)
        before = await _dump(store)
    assert before["daily_metrics"]
    assert before["fetches"]
    assert before["raw_responses"]
    assert before["alerts"]
    assert before["notifications"]
    assert before["silences"]

    assert await migrate.upgrade(db_url) == migrate.head()
    assert await migrate.drift(db_url) == []
    async with Store.open(db_url) as store:
        await store.check_schema()
        after = await _dump(store, leave_out=LATER_COLUMNS)
        assert set(after) == set(before) | NEW_TABLES
        assert {name: after[name] for name in before} == before
        assert all(after[name] == [] for name in NEW_TABLES)

        # the new tables take rows beside the old ones
        cid = await store.find_creator(CREATORS[0].user_id)
        assert cid is not None
        await store.store_followers(cid, [FollowerPoint(date(2025, 12, 10), 12_345)])
        await store.store_balance(T0, Balance(Decimal("812.30")))
        assert (await store.follower_series(cid))[0].fans == 12_345
        assert [r.amount for r in await store.balance_readings()] == [Decimal("812.30")]

    # and back down: the release's data is still whole
    assert await migrate.downgrade(db_url, RELEASED) == RELEASED
    async with Store.open(db_url) as store:
        assert await _dump(store) == before
