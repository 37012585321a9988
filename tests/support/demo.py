"""Runs ``creator-monitor demo --db`` once per test session and hands out its database and output.

The demo takes about half a minute, so the demo, cookbook, report and CLI tests share one run,
and so do the pytest-xdist workers: the first to need it runs it under a file lock in the run's
shared folder; the others read its database, output and time from there. Tests that write to
the database use a copy (:func:`demo_config`).
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from filelock import FileLock

from support.wheel import shared_folder, wheel_script


@dataclass(frozen=True)
class DemoRun:
    db: Path
    stdout: str
    seconds: float


_RUN: DemoRun | None = None


def cli_command() -> list[str]:
    """``creator-monitor`` as a user installs it: the console script of a wheel of this tree."""
    return [str(wheel_script())]


def clean_env() -> dict[str, str]:
    """No token, no config: the demo must need neither."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JUSTONEAPI", "CREATOR_MON"))}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def demo_run(tmp_path_factory: pytest.TempPathFactory | None = None) -> DemoRun:
    global _RUN  # noqa: PLW0603 - one demo per session, shared by several test modules
    if _RUN is None:
        folder = shared_folder() / "demo"
        db, out, took = folder / "x.db", folder / "stdout.txt", folder / "seconds.txt"
        with FileLock(shared_folder() / "demo.lock", timeout=600):
            if not took.exists():
                shutil.rmtree(folder, ignore_errors=True)  # a run that failed half-way
                folder.mkdir()
                command = cli_command()  # the wheel is built before the demo's clock starts
                started = time.monotonic()
                done = subprocess.run(
                    [*command, "demo", "--db", str(db)],
                    cwd=folder,
                    env=clean_env(),
                    capture_output=True,
                    text=True,
                    timeout=120,
                    check=False,
                )
                seconds = time.monotonic() - started
                assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
                out.write_text(done.stdout, encoding="utf-8")
                took.write_text(repr(seconds), encoding="utf-8")
        _RUN = DemoRun(db, out.read_text(encoding="utf-8"), float(took.read_text()))
    return _RUN


def demo_config(tmp_path: Path, db: Path) -> Path:
    """A config whose storage is a copy of the demo database (tests may write to it)."""
    copy = tmp_path / "history.db"
    shutil.copy(db, copy)
    path = tmp_path / "config.toml"
    path.write_text(
        f'[storage]\nurl = "sqlite+aiosqlite:///{copy}"\n[budget]\ndaily_calls = 5000\n',
        encoding="utf-8",
    )
    return path


def window_points(db: Path, creators: int) -> int:
    """The daily points a demo stored: each creator's 30-day window, or 31 days for a creator
    fetched on both sides of midnight in the upstream's zone (its window moved on a day, which
    a run near 16:00 UTC sees)."""
    with sqlite3.connect(db) as conn:
        per = [n for (n,) in conn.execute("SELECT count(*) FROM daily_metrics GROUP BY creator_id")]
    assert len(per) == creators
    assert all(n in (30, 31) for n in per), per
    return sum(per)
