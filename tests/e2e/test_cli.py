"""The daily-use commands: status, history --plot, export, fetch --all, rules test; against a
copy of the demo database and the simulator over real HTTP. They run in this process
(``support.cli``), except one ``fetch --all`` by the wheel's script against ``creator-monitor
simulate``, as a user runs them."""

from __future__ import annotations

import re
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import support.cli as cli_support
from support.cli import Ran
from support.demo import (
    DemoRun,
    clean_env,
    cli_command,
    demo_config,
    window_points,
)

from monitor.cli.demo import CREATORS
from monitor.cli.history_output import sparkline
from monitor.upstream.simulator import BALANCE_PATH, CORE_DATA_PATH

SECRET = "tok-SECRET-7f3a9c1e5b2d4e6f8a0b"


def cli(*argv: str, env: dict[str, str] | None = None) -> Ran:
    return cli_support.run_cli(*argv, env=env)


def wheel_cli(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The wheel's ``creator-monitor``, as a user runs it."""
    return subprocess.run(
        [*cli_command(), *argv],
        env=clean_env() | (env or {}),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_sparkline_scales_between_min_and_max_and_keeps_gaps() -> None:
    assert sparkline([0, 1, 2, 3, 4, 5, 6, 7], 8) == "▁▂▃▄▅▆▇█"
    assert sparkline([5, None, 5], 3) == "▄ ▄"
    assert sparkline([1, 2, 3, 4], 2) == "▁▆"  # resampled: the 1st and 3rd of four
    assert sparkline([None, None], 5) == "  "
    assert sparkline([], 10) == ""


@pytest.mark.slow
def test_status_shows_creators_and_the_account(demo: DemoRun, tmp_path: Path) -> None:
    done = cli("-c", str(demo_config(tmp_path, demo.db)), "status")
    assert done.returncode == 0, done.stderr
    creators, account = done.stdout.split("\naccount\n")
    for user_id, name, _tags in CREATORS:
        assert re.search(rf"^{user_id}  {name} ", creators, re.M), name
    with sqlite3.connect(demo.db) as db:
        calls, billed = db.execute("SELECT calls, billed FROM budget_days").fetchone()
        sent = db.execute("SELECT count(*) FROM notifications WHERE status='sent'").fetchone()[0]
    pct = f"{100 * calls / 5000:.1f}"
    assert re.search(
        rf"budget used today \(\S+\)\s+{calls} of 5,000 calls \({pct} %\), "
        rf"{billed} billed",
        account,
    )
    assert re.search(r"^paused\s+no$", account, re.M)
    assert re.search(rf"^outbox depth\s+0 pending, {sent} sent$", account, re.M)
    assert re.search(r"^dead letters\s+0$", account, re.M)
    # the demo's daemon stopped in order and retired its instances row
    assert account.rstrip().endswith("no daemon is running on this database")


@pytest.mark.slow
def test_history_plot_draws_each_metric(demo: DemoRun, tmp_path: Path) -> None:
    user_id = CREATORS[1][0]
    done = cli("-c", str(demo_config(tmp_path, demo.db)), "history", user_id, "--plot")
    assert done.returncode == 0, done.stderr
    with sqlite3.connect(demo.db) as db:
        low, high, n = db.execute(
            "SELECT min(read), max(read), count(*) FROM daily_metrics d "
            "JOIN creators c ON c.id = d.creator_id WHERE c.user_id = ?",
            (user_id,),
        ).fetchone()
    lines = done.stdout.splitlines()
    assert lines[0].startswith("DAILY_NOTE/PHOTO_TEXT_AND_VIDEO/DAY_30/ALL  ")
    assert lines[0].endswith(f"({n} points)")
    read = lines[lines.index(next(x for x in lines if x.startswith("reads ")))]
    blocks = read.split()[1]
    assert len(blocks) == n
    assert set(blocks) <= set("▁▂▃▄▅▆▇█")
    assert "▁" in blocks
    assert "█" in blocks
    assert f"min {low:,}  max {high:,}" in done.stdout
    # the metrics by the labels every surface uses
    assert [x.split()[0] for x in lines[1::2]] == ["reads", "engagements", "impressions"]


@pytest.mark.slow
def test_export_is_silent_on_a_pipe_and_counts_rows(demo: DemoRun, tmp_path: Path) -> None:
    done = cli("-c", str(demo_config(tmp_path, demo.db)), "export", "--format", "jsonl")
    assert done.returncode == 0
    points = window_points(demo.db, len(CREATORS))
    assert len(done.stdout.splitlines()) == points
    assert done.stderr == f"{points} rows exported\n"  # no progress bar


@pytest.mark.slow
def test_rules_test_sends_nothing(demo: DemoRun, tmp_path: Path) -> None:
    config = demo_config(tmp_path, demo.db)
    copy = tmp_path / "history.db"
    with sqlite3.connect(copy) as db:
        before = db.execute("SELECT count(*) FROM notifications").fetchone()[0]
    done = cli("-c", str(config), "rules", "test", "--since", "120d")
    assert done.returncode == 0, done.stderr
    assert re.search(r"^\d+ events \(.*\); nothing was sent$", done.stdout, re.M)
    with sqlite3.connect(copy) as db:
        assert db.execute("SELECT count(*) FROM notifications").fetchone()[0] == before


@pytest.fixture
def simulator() -> Iterator[str]:
    """``creator-monitor simulate`` on a free port, as a user would start it."""
    proc = subprocess.Popen(
        [*cli_command(), "simulate", "--port", "0", "--latency", "0.005"],
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:\d+", line)
        assert match, line
        yield match.group(0)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


@pytest.mark.slow
def test_simulate_takes_the_call_price_from_the_balance_it_shows() -> None:
    proc = subprocess.Popen(
        [*cli_command(), "simulate", "--port", "0", "--latency", "0", "--balance", "10",
         "--call-price", "0.05"],
        env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        url = re.search(r"http://127\.0\.0\.1:\d+", proc.stdout.readline())
        assert url
        with httpx.Client(base_url=url.group(0), params={"token": "t"}) as http:

            def balance() -> str:
                return str(http.get(BALANCE_PATH).json()["data"]["balance"])

            assert balance() == "10.0000"  # reading it is not billed
            for user_id, _, _ in CREATORS[:3]:
                assert http.get(CORE_DATA_PATH, params={"userId": user_id}).json()["code"] == 0
            assert balance() == "9.8500"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


def _fetch_all_config(tmp_path: Path, base_url: str, daily_calls: int) -> Path:
    creators = "".join(f'[[creators]]\nuser_id = "{u}"\nname = "{n}"\n' for u, n, _ in CREATORS[:3])
    path = tmp_path / "config.toml"
    path.write_text(
        f'[api]\nbase_url = "{base_url}"\ntimeout = "10s"\n'
        f"[budget]\ncalls_per_minute = 600\nburst = 10\ndaily_calls = {daily_calls}\n"
        f'[storage]\nurl = "sqlite+aiosqlite:///{tmp_path / "h.db"}"\n'
        f"[schedule]\nretry_attempts = 0\n{creators}",
        encoding="utf-8",
    )
    assert cli("-c", str(path), "db", "upgrade").returncode == 0
    return path


def _with_token() -> dict[str, str]:
    return {"JUSTONEAPI_TOKEN": SECRET}


@pytest.mark.slow
def test_fetch_all_fetches_every_creator_once(simulator: str, tmp_path: Path) -> None:
    config = _fetch_all_config(tmp_path, simulator, daily_calls=100)
    done = wheel_cli("-c", str(config), "fetch", "--all", env=_with_token())
    assert done.returncode == 0, done.stderr
    assert "3 of 3 series fetched with 3 calls" in done.stdout
    assert SECRET not in done.stdout + done.stderr
    with sqlite3.connect(tmp_path / "h.db") as db:
        fetched = db.execute(
            "SELECT c.user_id, f.code FROM fetches f "
            "JOIN creators c ON c.id = f.creator_id ORDER BY c.user_id"
        ).fetchall()
        active = db.execute("SELECT count(*) FROM creators WHERE active").fetchone()[0]
        rows = db.execute("SELECT count(DISTINCT creator_id) FROM daily_metrics").fetchone()[0]
    assert fetched == sorted((u, 0) for u, _, _ in CREATORS[:3])
    assert active == 3
    assert rows == 3


@pytest.fixture
def simulator_here() -> Iterator[str]:
    """The simulator in a thread of this process (``cli_support.simulator``)."""
    with cli_support.simulator(latency=0.005) as base_url:
        yield base_url


def test_fetch_all_stops_when_the_daily_budget_is_spent(
    simulator_here: str, tmp_path: Path
) -> None:
    config = _fetch_all_config(tmp_path, simulator_here, daily_calls=2)
    done = cli("-c", str(config), "fetch", "--all", env=_with_token())
    assert done.returncode == 1
    assert "2 of 3 series fetched with 2 calls" in done.stdout
    assert "stopped early: daily_calls (2) used up" in done.stdout
    assert "note: 2 calls left today for 3 series" in done.stderr
    with sqlite3.connect(tmp_path / "h.db") as db:
        assert db.execute("SELECT count(*) FROM fetches").fetchone()[0] == 2


def test_fetch_needs_a_user_id_or_all(tmp_path: Path) -> None:
    done = cli("-c", str(tmp_path / "none.toml"), "fetch")
    assert done.returncode == 2
