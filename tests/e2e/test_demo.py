"""``creator-monitor demo`` as a user runs it: a subprocess that ends by itself, exit 0, under 60 s,
with a summary that matches its database and sqlite3 queries that run."""

from __future__ import annotations

import re
import shlex
import shutil
import sqlite3
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
from support.cli import Ran, run_cli
from support.demo import (
    DemoRun,
    clean_env,
    cli_command,
    window_points,
)

from monitor.cli.demo import CREATORS, FALLING, FLAKY

pytestmark = pytest.mark.slow


def _summary(stdout: str) -> dict[str, int]:
    patterns = {
        "calls": r"calls made\s+(\d+) \((\d+) billed\), (\d+) attempts recorded, "
        r"(\d+) balance readings",
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


def test_demo_ends_by_itself_within_a_minute(demo: DemoRun) -> None:
    assert demo.seconds < 60
    assert "== demo summary" in demo.stdout
    assert f"database: {demo.db}" in demo.stdout


def test_summary_numbers_match_the_database_and_the_story(demo: DemoRun) -> None:
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
        readings = db.execute("SELECT count(*) FROM balance_readings").fetchone()[0]
    # every call is a recorded attempt or a stored balance reading (one at least, at start)
    assert s["calls0"] == s["calls2"] + s["calls3"]
    assert s["calls2"] == fetches
    assert s["calls3"] == readings >= 1
    assert s["calls1"] == billed
    assert s["rows0"] == rows == window_points(demo.db, len(CREATORS))  # each whole window
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


def test_the_printed_sqlite3_queries_run(demo: DemoRun) -> None:
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


def _cli(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*cli_command(), *args],
        cwd=cwd,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _here(*args: str, cwd: Path) -> Ran:
    """The CLI in this process (``support.cli``): for the commands that only print."""
    return run_cli(*args, cwd=cwd)


def test_an_existing_database_is_refused_without_fresh(demo: DemoRun, tmp_path: Path) -> None:
    before = demo.db.stat().st_mtime_ns, demo.db.stat().st_size
    done = _here("demo", "--db", str(demo.db), cwd=tmp_path)
    assert done.returncode == 2
    assert done.stdout == ""
    # (alembic's import-time INFO lines are issue 14's check/noise part, fixed separately)
    assert [line for line in done.stderr.splitlines() if "alembic.runtime" not in line] == [
        f"error: demo --db: {demo.db} exists; add --fresh to replace it, or name a new file"
    ]
    assert (demo.db.stat().st_mtime_ns, demo.db.stat().st_size) == before


def test_the_summary_ends_with_a_config_that_keeps_the_database(
    demo: DemoRun,
    tmp_path: Path,
) -> None:
    tail = demo.stdout[demo.stdout.index("keep using this database") :].splitlines()
    config = Path(tail[0].rsplit(" ", 1)[1])
    assert config == demo.db.with_name("demo.toml")
    snippet = "\n".join(line.strip() for line in tail[1:3])
    assert snippet == f'[storage]\nurl = "sqlite+aiosqlite:///{demo.db}"'
    commands = [shlex.split(line.strip()) for line in tail[4:6]]
    assert commands == [
        ["creator-monitor", "-c", str(config), "status"],
        ["creator-monitor", "-c", str(config), "history", FALLING[0], "--metric", "read"],
    ]
    # as the lines say: the snippet in that file, then the two commands on it
    here = tmp_path / "demo.toml"
    here.write_text(snippet + "\n", encoding="utf-8")
    status = _here("-c", str(here), "status", cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    assert FALLING[1] in status.stdout
    history = _here("-c", str(here), "history", FALLING[0], "--metric", "read", cwd=tmp_path)
    assert history.returncode == 0, history.stderr
    assert len([line for line in history.stdout.splitlines() if "-" in line]) >= 30


def test_fresh_replaces_the_database_and_counts_only_its_own_run(
    demo: DemoRun,
    tmp_path: Path,
) -> None:
    db = tmp_path / "again.db"
    shutil.copy(demo.db, db)
    config = tmp_path / "demo.toml"
    config.write_text(
        f'[storage]\nurl = "sqlite+aiosqlite:///{db}"\n'
        '[[rules]]\nname = "reads-fall"\nkind = "change"\nmetric = "read"\npct = -30\n',
        encoding="utf-8",
    )
    # an earlier session silenced the very rule the story fires
    silenced = _here(
        "-c", str(config), "silence", "add", "--rule", "reads-fall", "--for", "7d", cwd=tmp_path
    )
    assert silenced.returncode == 0, silenced.stderr
    began = datetime.now(UTC)
    # a shorter story: what is checked here is which run the database holds, not the story
    done = _cli("demo", "--db", str(db), "--fresh", "--seconds", "20", cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    s = _summary(done.stdout)
    with sqlite3.connect(db) as fresh:
        fetches = fresh.execute("SELECT count(*) FROM fetches").fetchone()[0]
        silences = fresh.execute("SELECT count(*) FROM silences").fetchone()[0]
        written = [
            datetime.fromisoformat(at)
            for (at,) in fresh.execute("SELECT DISTINCT updated_at FROM daily_metrics")
        ]
        sent = {
            (rule, event)
            for rule, event in fresh.execute(
                "SELECT a.rule, n.event FROM notifications n JOIN alerts a ON a.id = n.alert_id "
                "WHERE n.status = 'sent'"
            )
        }
    assert silences == 0
    assert s["calls0"] == s["calls2"] + s["calls3"]
    assert s["calls2"] == fetches
    # not the earlier run's rows on top: every point was written by this run
    assert s["rows0"] == window_points(db, len(CREATORS))
    assert min(written) >= began
    assert ("reads-fall", "firing") in sent
    assert "reads-fall" in done.stdout.split("== demo summary")[0]  # the stand-in got it
