"""``creator-monitor run`` killed while rules are owed: the answers are stored, the database
refuses their creators' rules, SIGKILL; after the restart those rules run at once (from the
spill file's owed lines), before any creator is due again, and each alert is written once."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from support.daemon import child_env, creators, daemon_config, start_run, write_toml
from support.wait import until
from support.zygote import Child

from monitor.store import migrate
from monitor.upstream.simulator import SimKnobs, Simulator

pytestmark = pytest.mark.slow

USERS = creators(3)
RULE = "every-answer"
#: fires on any answer: an alert row per creator shows its rules ran on what was stored
EVERY_ANSWER = {"name": RULE, "kind": "threshold", "metric": "imp", "op": ">=", "value": 0}
#: another process makes the database refuse every new alert, as a lock held on them would
REFUSE = (
    "CREATE TRIGGER refuse_rules BEFORE INSERT ON alerts "
    "BEGIN SELECT RAISE(ABORT, 'database is locked'); END"
)


def _sql(db: Path, statement: str) -> list[tuple[object, ...]]:
    with contextlib.closing(sqlite3.connect(db, timeout=30)) as conn, conn:
        return conn.execute(statement).fetchall()


async def _until(check: Callable[[], object], proc: Child, log: Path, what: str) -> None:
    """``until`` with the daemon's log in the failure: 40 s, or at once when it exited."""

    def exited() -> str | None:
        return None if proc.returncode is None else f"the daemon exited ({proc.returncode})"

    try:
        await until(check, 40, what, ended=exited)
    except AssertionError as exc:
        raise AssertionError(f"{exc}:\n{log.read_text()[-3000:]}") from None


async def test_rules_owed_at_a_sigkill_run_right_after_the_restart_once(
    tmp_path: Path, token: str
) -> None:
    db = tmp_path / "history.db"
    spill = tmp_path / "history.db.pending.jsonl"
    url = f"sqlite+aiosqlite:///{db}"
    await migrate.upgrade(url)
    _sql(db, REFUSE)
    async with Simulator(SimKnobs(latency_ms=100)) as sim:
        doc = daemon_config(sim.base_url, url, USERS, extra={"rules": [EVERY_ANSWER]})
        doc["storage"] |= {"busy_timeout": "1s"}
        config = write_toml(tmp_path / "config.toml", doc)
        procs: list[Child] = []

        async def start(name: str) -> tuple[Child, Path]:
            out = tmp_path / f"{name}.stderr"
            proc = await start_run(config, out, child_env(token), tmp_path)
            procs.append(proc)
            return proc, out

        def stored() -> int:
            sql = "SELECT count(DISTINCT creator_id) FROM fetches WHERE code = 0"
            return int(_sql(db, sql)[0][0])

        try:
            first, first_log = await start("first")
            await _until(
                lambda: stored() == len(USERS) and "wait" in first_log.read_text(),
                first,
                first_log,
                "every answer stored and rules refused",
            )
            await asyncio.sleep(0.5)  # the rules of the last answers are refused too
            first.send_signal(signal.SIGKILL)
            assert await first.wait() == -signal.SIGKILL
            assert _sql(db, f"SELECT count(*) FROM alerts WHERE rule = '{RULE}'") == [(0,)]
            _sql(db, "DROP TRIGGER refuse_rules")
            calls = sim.counters().by_endpoint["core"]
            assert calls == len(USERS)

            second, second_log = await start("second")
            restarted = time.monotonic()
            sql = f"SELECT count(DISTINCT scope) FROM alerts WHERE rule = '{RULE}'"
            await _until(
                lambda: _sql(db, sql)[0][0] == len(USERS),
                second,
                second_log,
                "the owed rules run after the restart",
            )
            ran_after = time.monotonic() - restarted
            await _until(lambda: not spill.exists(), second, second_log, "the spill file gone")
            # the rules run at the start's replay, before the daemon says it runs (and takes
            # SIGTERM as a stop)
            await _until(lambda: "running:" in second_log.read_text(), second, second_log, "run")
            second.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(second.wait(), timeout=30) == 0
        finally:
            for proc in procs:
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
        # no creator was fetched again: the rules ran from the spill file, not a new answer
        assert sim.counters().by_endpoint["core"] == calls
    per_creator = _sql(
        db, f"SELECT scope, count(*), min(state) FROM alerts WHERE rule = '{RULE}' GROUP BY scope"
    )
    assert sorted(per_creator) == [(user, 1, "firing") for user in sorted(USERS)]
    assert ran_after < 20, ran_after
    assert "stopped with" not in second_log.read_text()
    print(f"\nowed rules after a SIGKILL: ran {ran_after:.2f} s after the restart")
