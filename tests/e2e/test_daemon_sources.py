"""The daemon with every source, on virtual time against the simulator over HTTP: each of a
creator's series is read at its own cadence through the one gate, every call is counted once in
the ledger, the rate is never exceeded, and two days later the database holds each creator's
daily follower counts and notes beside its core metrics."""

from __future__ import annotations

import sqlite3
from collections import Counter
from datetime import timedelta
from pathlib import Path

from support.daemon import calls_per_day, creators, daemon_config, in_process

MINUTE = timedelta(minutes=1)


def _rows(url: str, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(url.removeprefix("sqlite+aiosqlite:///")) as db:
        return db.execute(sql).fetchall()


async def test_every_source_at_its_own_cadence_through_one_budget(
    tmp_path: Path, token: str
) -> None:
    users = creators(6)
    async with in_process(tmp_path, token) as env:
        doc = daemon_config(
            env.sim.base_url,
            env.db_url,
            users,
            budget={"calls_per_minute": 4, "burst": 2, "daily_calls": 5000},
            extra={
                "defaults": {
                    "every": "24h",
                    "sources": ["core", "fans", "notes"],
                    "every_source": {"notes": "6h"},
                },
                "account": {"balance_every": "off"},
            },
        )
        started = env.clock.now
        daemon = env.make(doc)
        await env.run_until(daemon, lambda: env.clock.now - started > timedelta(days=2))
        counters = env.sim.counters()

    by_endpoint = Counter(r.endpoint for r in counters.log)
    # two days: each creator's core and fans twice or three times (where its slot falls), its
    # notes every 6 h; a first note visit reads one page, and so does each later one here (a
    # creator posts less than a page in 6 h)
    assert 2 * 6 <= by_endpoint["core"] <= 3 * 6
    assert 2 * 6 <= by_endpoint["fans"] <= 3 * 6
    assert 8 * 6 <= by_endpoint["notes"] <= 9 * 6
    assert set(by_endpoint) == {"core", "fans", "notes"}
    assert set(counters.by_code) == {"0"}
    assert counters.max_in_window(MINUTE, by_clock=True) <= 4  # one gate for every source
    ledger = dict(_rows(env.db_url, "SELECT day, calls FROM budget_days"))
    assert ledger == calls_per_day(counters.log)  # every call of every source counted once

    fetched = dict(_rows(env.db_url, "SELECT source, count(*) FROM fetches GROUP BY source"))
    assert fetched == {k: by_endpoint[k] for k in ("core", "fans", "notes")}
    per_creator = _rows(
        env.db_url,
        "SELECT c.user_id, count(DISTINCT f.date_key), count(DISTINCT n.id) FROM creators c "
        "JOIN follower_counts f ON f.creator_id = c.id JOIN notes n ON n.creator_id = c.id "
        "GROUP BY c.user_id",
    )
    assert len(per_creator) == 6
    assert all(days >= 30 and notes >= 8 for _, days, notes in per_creator)
    schedule = Counter(s for (s,) in _rows(env.db_url, "SELECT source FROM schedule"))
    assert schedule == {"core": 6, "fans": 6, "notes": 6}
