"""Day one in production (issue 18): ``run``, as a process, migrates a fresh or older database
itself (extending systemd's start timeout) and refuses a newer one; a fixed token ends a token
pause at once (restart, reload); ``resume`` probes now; a call that never reached a server is
not counted and ``fetch --all`` stops at the first one. The one-shot commands of ``resume`` and
``fetch`` run in this process (``support.cli``) where no daemon runs beside them.
"""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from support.cli import Ran, run_cli, simulator_thread
from support.daemon import (
    NotifySocket,
    child_env,
    cli,
    creators,
    daemon_config,
    start_run,
    write_toml,
)
from support.wait import until

from monitor.policy.budget_state import token_fingerprint
from monitor.store import migrate
from monitor.store.revision import HEAD_REVISION
from monitor.upstream.simulator import SimKnobs, Simulator

GOOD = "good-token-0123456789abcdef"
BAD = "revoked-token-0123456789abcdef"


def _rows(db: Path, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db) as conn:
        return conn.execute(sql).fetchall()


async def _start(folder: Path, config: Path, name: str, env: dict[str, str]) -> Any:
    return await start_run(config, folder / f"{name}.stderr", env, folder)


async def _stop(proc: Any) -> int:
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
    code: int = await asyncio.wait_for(proc.wait(), 30)
    return code


def _here(config: Path, *args: str, token: str = GOOD) -> Ran:
    """The CLI in this process, beside a simulator in a thread (``support.cli``)."""
    return run_cli("-c", str(config), *args, env={"JUSTONEAPI_TOKEN": token})


@pytest.mark.slow
@pytest.mark.parametrize("start_at", ["empty", "0003_alert_variant"])
async def test_run_migrates_a_fresh_or_older_database_and_extends_the_start_timeout(
    tmp_path: Path, start_at: str
) -> None:
    db = tmp_path / "state" / "history.db"
    db.parent.mkdir()
    url = f"sqlite+aiosqlite:///{db}"
    if start_at != "empty":
        await migrate.upgrade(url, start_at)
    notify = NotifySocket(tmp_path)
    async with Simulator(SimKnobs(latency_ms=10)) as sim:
        config = write_toml(tmp_path / "config.toml", daemon_config(sim.base_url, url, creators(3)))
        proc = await _start(tmp_path, config, "run", child_env(GOOD, NOTIFY_SOCKET=notify.path))
        try:
            ready = await notify.wait_for("READY=1", timeout=60)
            await until(lambda: sim.counters().calls >= 3, 30, "three fetches")
        finally:
            code = await _stop(proc)
            notify.close()
    log = (tmp_path / "run.stderr").read_text()
    assert code == 0, log[-2000:]
    # EXTEND_TIMEOUT_USEC came before READY=1, while the migration ran
    messages = notify.messages
    extend = next(i for i, m in enumerate(messages) if any(
        f.startswith("EXTEND_TIMEOUT_USEC=") for f in m.split("\n")))  # fmt: skip
    assert extend < messages.index(ready)
    assert f"STATUS=migrating the database from {start_at} to {HEAD_REVISION}" in messages[
        extend
    ].split("\n")
    assert f"database migrated to {HEAD_REVISION}" in log
    assert _rows(db, "SELECT version_num FROM alembic_version") == [(HEAD_REVISION,)]
    assert _rows(db, "SELECT count(*) FROM fetches WHERE code = 0")[0][0] >= 3


@pytest.mark.slow
async def test_run_at_the_head_sends_no_extension_and_a_newer_database_is_refused(
    tmp_path: Path,
) -> None:
    db = tmp_path / "history.db"
    url = f"sqlite+aiosqlite:///{db}"
    await migrate.upgrade(url)
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE alembic_version SET version_num = '0099_from_the_future'")
    config = write_toml(
        tmp_path / "config.toml", daemon_config("http://127.0.0.1:9", url, creators(1))
    )
    done = subprocess.run(
        [*cli(), "-c", str(config), "run"],
        capture_output=True, text=True, env=child_env(GOOD), timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    [line] = done.stderr.strip().splitlines()
    assert "0099_from_the_future, newer than this creator-monitor knows" in line
    assert line.startswith("error: storage.url: database ")
    # nothing was touched
    assert _rows(db, "SELECT version_num FROM alembic_version") == [("0099_from_the_future",)]


def _pause_row(db: Path) -> tuple[Any, ...]:
    [row] = _rows(db, "SELECT pause_code, pause_token, paused_at FROM budget_state")
    return row


@pytest.mark.slow
@pytest.mark.parametrize("how", ["restart", "reload"])
async def test_a_fixed_token_ends_a_token_pause_at_once(tmp_path: Path, how: str) -> None:
    """A 100 pause (probe every 15 m) ends as soon as the daemon has another token: the new
    token's first call goes at once, on a restart (new environment) or a reload (token_file)."""
    db = tmp_path / "history.db"
    url = f"sqlite+aiosqlite:///{db}"
    await migrate.upgrade(url)
    token_file = tmp_path / "token"
    token_file.write_text(BAD)
    token_file.chmod(0o600)
    async with Simulator(SimKnobs(latency_ms=10, tokens=frozenset({GOOD}))) as sim:
        doc = daemon_config(
            sim.base_url, url, creators(4), budget={"calls_per_minute": 60, "burst": 2}
        )
        if how == "reload":
            doc["api"]["token_file"] = str(token_file)
        config = write_toml(tmp_path / "config.toml", doc)
        env = child_env(BAD)
        if how == "reload":
            del env["JUSTONEAPI_TOKEN"]
        proc = await _start(tmp_path, config, "first", env)
        try:
            await until(lambda: any(r.code == 100 for r in sim.counters().log), 30, "a 100")
            await until(lambda: _pause_row(db)[0] == 100, 10, "the stored pause")
            _, stored_print, paused_at = _pause_row(db)
            assert stored_print == token_fingerprint(BAD)  # a fingerprint, never the token
            assert paused_at is not None
            calls = sim.counters().calls
            await asyncio.sleep(1.0)
            assert sim.counters().calls == calls  # paused: the next probe is 15 m away
            if how == "restart":
                assert await _stop(proc) == 0
                proc = await _start(tmp_path, config, "second", child_env(GOOD))
            else:
                token_file.write_text(GOOD)
                proc.send_signal(signal.SIGHUP)
            fixed = time.monotonic()
            await until(lambda: any(r.code == 0 for r in sim.counters().log), 15, "a success")
            assert time.monotonic() - fixed < 10
            await until(lambda: _pause_row(db)[0] is None, 10, "the pause ended")
        finally:
            assert await _stop(proc) == 0
    logs = "".join(p.read_text() for p in tmp_path.glob("*.stderr"))
    dump = "\n".join(sqlite3.connect(db).iterdump())
    for secret in (GOOD, BAD):
        assert secret not in logs
        assert secret not in dump
    assert "calls resumed" in logs


def test_resume_probes_now_and_says_what_the_account_answered(tmp_path: Path) -> None:
    db = tmp_path / "history.db"
    url = f"sqlite+aiosqlite:///{db}"
    with simulator_thread(SimKnobs(latency_ms=5, balance=0)) as sim:
        doc = daemon_config(sim.base_url, url, creators(2), schedule={"probe_every": "15m"})
        config = write_toml(tmp_path / "config.toml", doc)
        first = _here(config, "fetch", creators(2)[1])
        assert first.returncode == 1
        assert _pause_row(db)[0] == 601
        refused = _here(config, "fetch", creators(2)[1])
        assert refused.returncode == 1
        assert "calls paused" in refused.stderr
        calls = sim.counters().calls

        still = _here(config, "resume")
        assert still.returncode == 1, still.stderr
        assert "the account still refuses: insufficient account balance (code 601)" in (
            still.stderr
        )
        assert sim.counters().calls == calls + 1  # one probe, at once

        sim.set_balance(None)  # topped up
        back = _here(config, "resume")
        assert back.returncode == 0, back.stderr
        assert "the account answered normally (code 0); calls resume now" in back.stdout
        assert sim.counters().calls == calls + 2
        assert _pause_row(db)[0] is None
        assert (_here(config, "fetch", creators(2)[1])).returncode == 0
    help_ = _here(config, "resume", "-h")
    assert help_.returncode == 0
    assert "creator-monitor -c" in help_.stdout


@pytest.mark.slow
async def test_calls_that_never_reached_a_server_are_not_counted(
    tmp_path: Path, refused_port: int
) -> None:
    """Nothing listens: ``fetch --all`` stops after the first refused connection, and neither
    it nor the daemon counts a call against daily_calls."""
    db = tmp_path / "history.db"
    url = f"sqlite+aiosqlite:///{db}"
    await migrate.upgrade(url)
    base = f"http://127.0.0.1:{refused_port}"
    doc = daemon_config(base, url, creators(5), schedule={"retry_attempts": 0})
    doc["api"]["connect_retries"] = 0
    config = write_toml(tmp_path / "config.toml", doc)
    done = await asyncio.to_thread(_here, config, "fetch", "--all")
    assert done.returncode == 1
    assert "0 of 5 series fetched with 1 calls" in done.stdout
    assert "stopped early: cannot reach 127.0.0.1" in done.stdout
    assert _rows(db, "SELECT coalesce(sum(calls), 0) FROM budget_days") == [(0,)]

    proc = await _start(tmp_path, config, "run", child_env(GOOD))
    try:
        await until(
            lambda: "cannot reach the upstream" in (tmp_path / "run.stderr").read_text(),
            30,
            "the unreachable upstream",
        )
    finally:
        assert await _stop(proc) == 0
    assert _rows(db, "SELECT coalesce(sum(calls), 0) FROM budget_days") == [(0,)]
    attempts = _rows(db, "SELECT count(*) FROM fetches")[0][0]
    assert attempts >= 3  # tried, recorded, not counted


@pytest.mark.slow
@pytest.mark.postgres
async def test_two_daemons_starting_together_on_a_fresh_postgresql_migrate_it_once(
    tmp_path: Path, pg_url: str
) -> None:
    """Instances of one PostgreSQL database start at once on an empty schema: the advisory
    lock lets one migrate, the other finds it done; both become ready."""
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    sockets = [NotifySocket(tmp_path / name) for name in ("a", "b")]
    async with Simulator(SimKnobs(latency_ms=10)) as sim:
        config = write_toml(
            tmp_path / "config.toml", daemon_config(sim.base_url, pg_url, creators(4))
        )
        procs = [
            await _start(tmp_path, config, name, child_env(GOOD, NOTIFY_SOCKET=notify.path))
            for name, notify in zip(("a", "b"), sockets, strict=True)
        ]
        try:
            await asyncio.gather(*(notify.wait_for("READY=1", timeout=60) for notify in sockets))
        finally:
            codes = [await _stop(proc) for proc in procs]
            for notify in sockets:
                notify.close()
    logs = [(tmp_path / f"{name}.stderr").read_text() for name in ("a", "b")]
    assert codes == [0, 0], logs
    assert sum("database migrated to" in log for log in logs) >= 1
    assert await migrate.current(pg_url) == HEAD_REVISION
    assert await migrate.drift(pg_url) == []


def test_fetch_with_a_changed_token_is_tried_at_once_during_a_token_pause(
    tmp_path: Path,
) -> None:
    """After a 100, ``fetch`` with the same token is refused without a call; with another
    token it is sent at once and its answer ends the pause."""
    db = tmp_path / "history.db"
    url = f"sqlite+aiosqlite:///{db}"
    with simulator_thread(SimKnobs(latency_ms=5, tokens=frozenset({GOOD}))) as sim:
        config = write_toml(tmp_path / "config.toml", daemon_config(sim.base_url, url, creators(1)))
        user = creators(1)[0]
        assert (_here(config, "fetch", user, token=BAD)).returncode == 1
        assert _pause_row(db)[0] == 100
        again = _here(config, "fetch", user, token=BAD)
        assert again.returncode == 1
        assert "calls paused: invalid or inactive API token (code 100)" in again.stderr
        assert sim.counters().calls == 1  # refused before anything was sent
        fixed = _here(config, "fetch", user, token=GOOD)
        assert fixed.returncode == 0, fixed.stderr
        assert sim.counters().calls == 2
        assert _pause_row(db)[0] is None
