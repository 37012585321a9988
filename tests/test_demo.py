"""``creator-monitor demo`` as a user runs it: a subprocess that ends by itself, exit 0, under 60 s,
with a summary that matches its database and sqlite3 queries that run."""

from __future__ import annotations

import re
import shlex
import shutil
import sqlite3
import subprocess

import pytest
from demo_support import DemoRun, demo  # noqa: F401 - the fixture

from monitor.demo import CREATORS, FALLING, FLAKY

pytestmark = pytest.mark.slow


def _summary(stdout: str) -> dict[str, int]:
    patterns = {
        "calls": r"calls made\s+(\d+) \((\d+) billed\), (\d+) attempts recorded",
        "rows": r"rows stored\s+(\d+) daily points",
        "alerts": r"alerts\s+(\d+) fired, (\d+) resolved",
        "messages": r"messages\s+(\d+) delivered \((\d+) received",
    }
    found: dict[str, int] = {}
    for name, pattern in patterns.items():
        match = re.search(pattern, stdout)
        assert match, f"no {name!r} line in the summary:\n{stdout[-1500:]}"
        for i, value in enumerate(match.groups()):
            found[f"{name}{i}"] = int(value)
    return found


def test_demo_ends_by_itself_within_a_minute(demo: DemoRun) -> None:  # noqa: F811
    assert demo.seconds < 60
    assert "== demo summary" in demo.stdout
    assert f"database: {demo.db}" in demo.stdout


def test_summary_numbers_match_the_database_and_the_story(demo: DemoRun) -> None:  # noqa: F811
    s = _summary(demo.stdout)
    with sqlite3.connect(demo.db) as db:
        fetches = db.execute("SELECT count(*) FROM fetches").fetchone()[0]
        billed = db.execute("SELECT count(*) FROM fetches WHERE billed").fetchone()[0]
        rows = db.execute("SELECT count(*) FROM daily_metrics").fetchone()[0]
        codes = {c for (c,) in db.execute("SELECT DISTINCT code FROM fetches")}
        alerts = set(db.execute("SELECT rule, scope, state FROM alerts"))
        sent = db.execute(
            "SELECT event, count(*) FROM notifications WHERE status = 'sent' GROUP BY event"
        ).fetchall()
        stored = db.execute("SELECT count(DISTINCT creator_id) FROM daily_metrics").fetchone()[0]
    assert s["calls0"] == s["calls2"] == fetches
    assert s["calls1"] == billed
    assert s["rows0"] == rows == len(CREATORS) * 30  # every creator's whole 30-day window
    assert stored == len(CREATORS)
    assert billed < fetches  # the 301s and 601s are not billed
    assert {0, 301, 601} <= codes
    # the scripted story: reads fall, a creator keeps failing, the account runs dry; all recover
    assert {
        ("reads-fall", FALLING[0], "resolved"),
        ("keeps-failing", FLAKY[0], "resolved"),
        ("out-of-money", "account", "resolved"),
    } <= alerts
    assert s["alerts0"] >= 3
    assert s["alerts1"] >= 3
    assert dict(sent) == {"firing": s["alerts0"], "resolved": s["alerts1"]}
    assert s["messages0"] == s["messages1"] >= 6


def test_the_printed_sqlite3_queries_run(demo: DemoRun) -> None:  # noqa: F811
    lines = [
        line.strip() for line in demo.stdout.splitlines() if line.strip().startswith("sqlite3 ")
    ]
    assert len(lines) == 3
    cli = shutil.which("sqlite3")
    for line in lines:
        _, path, query = shlex.split(line)
        assert path == str(demo.db)
        with sqlite3.connect(path) as db:
            assert db.execute(query).fetchall(), query
        if cli:  # exactly as printed, when the sqlite3 shell is installed
            out = subprocess.run(shlex.split(line), capture_output=True, text=True, check=True)
            assert out.stdout.strip(), line
