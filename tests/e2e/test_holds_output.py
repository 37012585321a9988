"""What the commands say about holds, against an upstream over HTTP (the commands in this process,
``support.cli``; a real one where a signal ends it):
``status`` shows every hold (account, rate limit, quota, store) with when it ends and logs no
ERROR line for a stored pause; a ``fetch`` refused by a pause prints exactly one line; a
``fetch`` held by a 302's Retry-After says so instead of waiting silently."""

from __future__ import annotations

import asyncio
import re
import signal
import sqlite3
import time
from contextlib import closing
from pathlib import Path

import pytest
from support.cli import run_cli
from support.daemon import child_env, cli, creators, daemon_config, write_toml
from support.zygote import spawn
from test_retry_after import throttling

from monitor.store import migrate
from monitor.upstream.simulator import SimKnobs, Simulator

ZONE = "Asia/Shanghai"


async def _cli(config: Path, token: str, *args: str) -> tuple[int, str, str]:
    """The command in this process (``support.cli``), off the test's loop, which serves the
    upstream; its working folder is the config's."""
    done = await asyncio.to_thread(
        run_cli, "-c", config, *args, env={"JUSTONEAPI_TOKEN": token}, cwd=config.parent
    )
    return done.returncode, done.stdout, done.stderr


async def _config(tmp_path: Path, base_url: str) -> Path:
    db = tmp_path / "history.db"
    await migrate.upgrade(f"sqlite+aiosqlite:///{db}")
    doc = daemon_config(base_url, f"sqlite+aiosqlite:///{db}", creators(2))
    return write_toml(tmp_path / "config.toml", doc)


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


async def test_an_account_pause_is_one_line_per_command_and_a_hold_in_status(
    tmp_path: Path, token: str
) -> None:
    async with Simulator(SimKnobs(balance=0)) as sim:
        config = await _config(tmp_path, sim.base_url)
        code, _, first = await _cli(config, token, "fetch", creators(1)[0])
        assert code == 1
        assert _lines(first) == [
            "error: INSUFFICIENT ACCOUNT BALANCE, code 601, HTTP 200; calls paused: "
            "insufficient account balance (code 601); probing every 15m"
        ]
        code, out, err = await _cli(config, token, "status")
        assert code == 0
        assert err == ""  # a read-only look logs nothing, least of all an ERROR
        (hold,) = [line for line in out.splitlines() if line.startswith("hold:")]
        assert re.search(
            r"hold: account +insufficient account balance \(code 601\); probing every 15m; "
            r"ends at the first normal answer "
            r"\(the next probe at \d{4}-\d\d-\d\d \d\d:\d\d Asia/Shanghai\)",
            hold,
        ), hold
        # the account table's values start in one column, counts too (not pushed to the right
        # edge of the long hold row)
        (alerts,) = [line for line in out.splitlines() if line.startswith("open account alerts")]
        assert alerts.index("0") == hold.index("insufficient"), (alerts, hold)
        code, _, refused = await _cli(config, token, "fetch", creators(1)[0])
        assert code == 1
        assert _lines(refused) == [
            "error: calls paused: insufficient account balance (code 601); probing every 15m; "
            "`creator-monitor resume` tries now"
        ]
        assert sim.counters().calls == 1


@pytest.mark.slow  # the SIGINT that ends a waiting fetch: a process of its own
async def test_a_rate_limit_hold_shows_in_status_and_fetch_says_it_waits(
    tmp_path: Path, token: str
) -> None:
    async with throttling("1e12") as upstream:
        config = await _config(tmp_path, upstream.url)
        code, _, err = await _cli(config, token, "fetch", creators(1)[0])
        assert code == 1, err
        code, out, err = await _cli(config, token, "status")
        assert code == 0
        assert err == ""
        (hold,) = [line for line in out.splitlines() if line.startswith("hold:")]
        assert re.search(
            r"hold: rate limit +.*302.*; every call waits until "
            r"\d{4}-\d\d-\d\d \d\d:\d\d Asia/Shanghai",
            hold,
        ), hold
        # a second fetch waits for the hold: it says so at once, and SIGINT ends the wait
        proc = await spawn(
            *cli(),
            "-c",
            str(config),
            "fetch",
            creators(1)[0],
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=child_env(token),
            cwd=tmp_path,
        )
        assert proc.stderr is not None
        started = time.monotonic()
        said = await asyncio.wait_for(proc.stderr.readline(), timeout=30)
        assert time.monotonic() - started < 20
        assert re.match(
            rb"waiting: .*302.*; every call is held until \d{4}-\d\d-\d\d \d\d:\d\d Asia/Shanghai "
            rb"\(Ctrl-C stops; nothing is spent\)",
            said,
        ), said
        proc.send_signal(signal.SIGINT)
        _, rest = await asyncio.wait_for(proc.communicate(), timeout=30)
        assert proc.returncode == 130
        assert "interrupted by SIGINT: no call was sent" in rest.decode()
        assert upstream.calls == 1


async def test_status_shows_paid_answers_held_for_the_database(tmp_path: Path, token: str) -> None:
    async with Simulator(SimKnobs(latency_ms=1500)) as sim:
        config = await _config(tmp_path, sim.base_url)
        db = tmp_path / "history.db"
        fetching = asyncio.ensure_future(_cli(config, token, "fetch", creators(1)[0]))
        while sim.counters().calls < 1:  # the call is on the wire: now the database locks
            await asyncio.sleep(0.02)
        locker = sqlite3.connect(db, timeout=30, isolation_level=None)
        try:
            locker.execute("BEGIN EXCLUSIVE")
            code, _, err = await asyncio.wait_for(fetching, timeout=60)
        finally:
            locker.execute("ROLLBACK")
            locker.close()
        assert code == 1, err
        spill = tmp_path / "history.db.pending.jsonl"
        assert spill.exists(), err
        # the lock is gone, but nothing has stored the held answer yet: status says so
        code, out, err = await _cli(config, token, "status")
        assert code == 0, err
        (hold,) = [line for line in out.splitlines() if line.startswith("hold:")]
        assert "hold: store" in hold
        assert f"1 paid answers wait in {spill}" in hold
    with closing(sqlite3.connect(db)) as check:
        assert check.execute("SELECT count(*) FROM fetches").fetchone() == (0,)
