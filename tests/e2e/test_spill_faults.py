"""``creator-monitor run`` as a subprocess while its database refuses writes: another process
holds SQLite's write lock for 8 s, the disk (a small tmpfs) fills up, another PostgreSQL session
locks ``fetches``, and a SIGKILL leaves a spill file behind. Every call the simulator billed ends
up as its row, once, and no call goes after the first refused write until the database is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from support import tuned
from support.daemon import child_env, cli, creators, daemon_config, write_toml
from support.wait import until
from support.zygote import Child, spawn

from monitor.store import migrate
from monitor.upstream.simulator import SimCounters, SimKnobs, Simulator

pytestmark = pytest.mark.slow

USERS = creators(25)
#: logged once when the first write is refused (by the hold or the dispatcher)
REFUSED = "the database refuses writes"
#: a call the gate let through may still be on its way to the simulator for this long
SLACK = 0.3
#: the store backoff (first pause, cap) of the daemons that wait out a fault: the same doubling
#: as the product's (1 s up to 60 s), capped shorter so a call the fault stopped is made again
#: seconds after the fault ends (the fault lasts 6-8 s: the backoff still doubles under it)
QUICK_BACKOFF = (1.0, 4.0)


#: fires on any answer: an alert row per creator shows its rules ran on what was stored
EVERY_ANSWER = {
    "name": "every-answer",
    "kind": "threshold",
    "metric": "imp",
    "op": ">=",
    "value": 0,
}


@dataclass
class Run:
    """One daemon subprocess and what the test saw of it."""

    proc: Child
    stderr: Path
    refused_at: float | None = None  # monotonic: when the first refusal was logged
    spilled: int = 0  # most lines seen in the spill file

    def log(self) -> str:
        return self.stderr.read_text(encoding="utf-8", errors="replace")

    def ended(self) -> str | None:
        """The log's end once the daemon has exited (a wait for it fails at once then)."""
        if self.proc.returncode is None:
            return None
        return f"the daemon exited with {self.proc.returncode}: {self.log()[-3000:]}"


@dataclass
class World:
    folder: Path
    sim: Simulator
    db_url: str
    token: str
    spill: Path
    marks: dict[str, float] = field(default_factory=dict)
    children: list[Child] = field(default_factory=list)

    def config(self, **storage: str) -> Path:
        doc = daemon_config(
            self.sim.base_url,
            self.db_url,
            USERS,
            budget={"calls_per_minute": 120, "burst": 2, "daily_calls": 5000},
            schedule={"max_in_flight": 4, "retry_attempts": 1, "retry_base": "1s"},
            extra={"rules": [EVERY_ANSWER]},
        )
        doc["storage"] |= {"busy_timeout": "1s", **storage}
        return write_toml(self.folder / "config.toml", doc)

    async def start(
        self,
        name: str,
        storage: dict[str, str] | None = None,
        *,
        quick_requeue: bool = False,
        **env: str,
    ) -> Run:
        """``creator-monitor run``; ``quick_requeue``: with the dispatcher's store backoff capped
        at :data:`QUICK_BACKOFF` instead of 60 s (``support.tuned``), so the calls the refusal
        stopped are made again seconds after the database is back, not a minute after."""
        stderr = self.folder / f"{name}.stderr"
        with stderr.open("wb") as sink:
            proc = await spawn(
                *(tuned.cli(store_backoff=QUICK_BACKOFF) if quick_requeue else cli()),
                "-c",
                str(self.config(**(storage or {}))),
                "run",
                stdin=asyncio.subprocess.DEVNULL,
                stdout=sink,
                stderr=sink,
                env=child_env(self.token, **env),
                cwd=self.folder,
            )
        self.children.append(proc)
        return Run(proc, stderr)

    async def watch(self, run: Run, until: Any, timeout: float, what: str) -> None:
        """Poll until ``until()``; meanwhile note the first refusal and the spill file's size."""
        deadline = time.monotonic() + timeout
        while not until():
            if run.refused_at is None and REFUSED in run.log():
                run.refused_at = time.monotonic()
            with contextlib.suppress(OSError):
                run.spilled = max(run.spilled, len(self.spill.read_text().splitlines()))
            if time.monotonic() > deadline or run.proc.returncode is not None:
                raise AssertionError(f"timed out waiting for {what}:\n{run.log()[-3000:]}")
            await asyncio.sleep(0.02)

    async def rows(self, sql: str) -> list[tuple[Any, ...]]:
        if self.db_url.startswith("sqlite"):
            path = self.db_url.split(":///", 1)[1]
            with contextlib.closing(sqlite3.connect(path, timeout=30)) as db:
                return db.execute(sql).fetchall()
        conn = await asyncpg.connect(self.db_url.replace("+asyncpg", ""))
        try:
            return [tuple(r) for r in await conn.fetch(sql)]
        finally:
            await conn.close()

    async def stored_and_alerted(self) -> tuple[int, int]:
        """Creators with a stored answer, and creators whose rules wrote their alert."""
        ((stored,),) = await self.rows(
            "SELECT count(DISTINCT creator_id) FROM fetches WHERE code = 0"
        )
        ((alerted,),) = await self.rows(
            f"SELECT count(DISTINCT scope) FROM alerts WHERE rule = '{EVERY_ANSWER['name']}'"
        )
        return int(stored), int(alerted)

    async def stored(self) -> int:
        sql = "SELECT count(DISTINCT creator_id) FROM fetches WHERE code = 0"
        return int((await self.rows(sql))[0][0])

    async def stored_at_least(self, count: int) -> bool:
        return await self.stored() >= count

    async def stop(self, run: Run) -> None:
        run.proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(run.proc.wait(), timeout=30) == 0, run.log()[-3000:]

    async def settle(self, run: Run, timeout: float = 90.0) -> None:
        """Every creator stored, nothing held any more; then stop the daemon."""
        done = {"n": 0}

        async def poll() -> None:
            while True:
                done["n"] = await self.stored()
                await asyncio.sleep(0.2)

        poller = asyncio.get_running_loop().create_task(poll())
        try:
            await self.watch(
                run,
                lambda: done["n"] == len(USERS) and not self.spill.exists(),
                timeout,
                "every creator stored",
            )
        finally:
            poller.cancel()
        await self.stop(run)


async def _check_every_billed_call_stored(world: World, counters: SimCounters) -> dict[str, int]:
    """Each call the simulator saw has its ``fetches`` row, once; billed counts agree."""
    by_user = dict(
        await world.rows(
            "SELECT c.user_id, count(*) FROM fetches f JOIN creators c ON c.id = f.creator_id "
            "GROUP BY c.user_id"
        )
    )
    sim_by_user: dict[str, int] = {}
    for (user, _label), calls in counters.by_series.items():
        sim_by_user[user] = sim_by_user.get(user, 0) + calls
    assert by_user == sim_by_user
    ((rows, billed_rows, attempts),) = await world.rows(
        "SELECT count(*), sum(CASE WHEN billed THEN 1 ELSE 0 END), count(DISTINCT attempt_id) "
        "FROM fetches"
    )
    ((ledger_billed,),) = await world.rows("SELECT sum(billed) FROM budget_days")
    ((series,),) = await world.rows("SELECT count(DISTINCT creator_id) FROM daily_metrics")
    # every call but the balance readings (stored as readings, not as fetches)
    assert rows == attempts == counters.by_endpoint["core"]
    assert billed_rows == counters.billed == ledger_billed
    assert series == len(USERS)
    # each stored answer had its creator's rules run, held ones too (once they were written)
    _stored, alerted = await world.stored_and_alerted()
    assert alerted == len(USERS)
    return {"calls": counters.calls, "billed": counters.billed, "rows": rows}


def _calls_between(counters: SimCounters, start: float, end: float) -> int:
    return sum(1 for r in counters.log if start <= r.monotonic <= end)


def _held_then_stored(run: Run) -> int:
    return sum(int(n) for n in re.findall(r"stored (\d+) held paid answers", run.log()))


def _report(name: str, run: Run, figures: dict[str, Any]) -> None:
    figures = figures | {"held_then_stored": _held_then_stored(run)}
    print(f"\n{name}: " + ", ".join(f"{k}={v}" for k, v in figures.items()))


@contextlib.asynccontextmanager
async def _world(
    tmp_path: Path, token: str, db_url: str, spill: Path, latency_ms: int = 1200
) -> AsyncIterator[World]:
    # 1.2 s answers at 2 calls/s: two or three calls are on the wire when the fault begins
    await migrate.upgrade(db_url)
    async with Simulator(SimKnobs(latency_ms=latency_ms)) as sim:
        world = World(tmp_path, sim, db_url, token, spill)
        try:
            yield world
        finally:  # a test that failed half-way leaves no daemon running
            for proc in world.children:
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()


@contextlib.asynccontextmanager
async def _alerts_locked(pg_url: str) -> AsyncIterator[None]:
    """Another PostgreSQL session keeps ``alerts`` locked against writes for the block."""
    conn = await asyncpg.connect(pg_url.replace("+asyncpg", ""))
    try:
        async with conn.transaction():
            await conn.execute("LOCK TABLE alerts IN EXCLUSIVE MODE")
            yield
    finally:
        await conn.close()


@contextlib.contextmanager
def _sqlite_locker(path: Path, seconds: float) -> Iterator[subprocess.Popen[str]]:
    """Another process takes SQLite's write lock, says ``locked``, holds it, says ``released``."""
    code = (
        "import sqlite3, sys, time\n"
        "db = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)\n"
        "db.execute('BEGIN IMMEDIATE')\n"
        "print('locked', flush=True)\n"
        "time.sleep(float(sys.argv[2]))\n"
        "db.execute('ROLLBACK')\n"
        "print('released', flush=True)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(path), str(seconds)], stdout=subprocess.PIPE, text=True
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


async def _line(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    return (await asyncio.to_thread(proc.stdout.readline)).strip()


async def test_a_write_lock_from_another_process_loses_no_paid_answer(
    tmp_path: Path, token: str
) -> None:
    db = tmp_path / "history.db"
    spill = tmp_path / "history.db.pending.jsonl"
    async with _world(tmp_path, token, f"sqlite+aiosqlite:///{db}", spill) as world:
        run = await world.start("daemon", quick_requeue=True)
        await until(lambda: world.stored_at_least(4), 60, "4 answers stored", ended=run.ended)
        # 8 s: eight times the daemon's busy_timeout, so writes are refused again and again
        with _sqlite_locker(db, 8.0) as locker:
            assert await _line(locker) == "locked"
            locked_at = time.monotonic()
            released: dict[str, float] = {}

            async def wait_release() -> None:
                assert await _line(locker) == "released"
                released["at"] = time.monotonic()

            waiter = asyncio.get_running_loop().create_task(wait_release())
            await world.watch(run, waiter.done, 40, "the lock's release")
            await waiter
        await world.settle(run)
        counters = world.sim.counters()
        figures = await _check_every_billed_call_stored(world, counters)
    assert run.refused_at is not None, run.log()
    # after the first refusal nothing went until the lock was gone
    assert _calls_between(counters, run.refused_at + SLACK, released["at"]) == 0
    in_flight = _calls_between(counters, locked_at, run.refused_at + SLACK)
    assert in_flight <= 4
    assert REFUSED in run.log()
    assert token not in run.log()
    assert _held_then_stored(run) >= 1  # answers on the wire were held, then stored
    _report(
        "sqlite 8 s lock",
        run,
        figures
        | {
            "calls_before_refusal_in_lock": in_flight,
            "held_on_file_max": run.spilled,
            "refused_after_s": round(run.refused_at - locked_at, 2),
        },
    )


@contextlib.contextmanager
def _tmpfs(folder: Path, size: str) -> Iterator[None]:
    folder.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode().strip()})")
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def _fill(folder: Path) -> Path:
    """Fill the file system of ``folder`` to the last byte."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (1 << 20, 65536, 4096, 512, 1):
            with contextlib.suppress(OSError):
                while os.write(fd, b"\0" * size):
                    pass
    finally:
        os.close(fd)
    return filler


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
async def test_a_full_disk_loses_no_paid_answer_and_sends_nothing_while_full(
    tmp_path: Path, token: str
) -> None:
    disk = tmp_path / "disk"
    with _tmpfs(disk, "24m"):
        db = disk / "history.db"
        spill = disk / "history.db.pending.jsonl"
        async with _world(tmp_path, token, f"sqlite+aiosqlite:///{db}", spill) as world:
            run = await world.start("daemon", quick_requeue=True)
            await until(lambda: world.stored_at_least(4), 60, "4 answers stored", ended=run.ended)
            filler = _fill(disk)
            full_at = time.monotonic()
            await world.watch(run, lambda: run.refused_at is not None, 30, "a refused write")
            await asyncio.sleep(6)
            filler.unlink()
            freed_at = time.monotonic()
            await world.settle(run)
            counters = world.sim.counters()
            figures = await _check_every_billed_call_stored(world, counters)
    assert run.refused_at is not None
    assert _calls_between(counters, run.refused_at + SLACK, freed_at) == 0
    assert _held_then_stored(run) >= 1  # answers on the wire were held in memory, then stored
    _report(
        "tmpfs full disk",
        run,
        figures
        | {
            "calls_while_full_before_refusal": _calls_between(
                counters, full_at, run.refused_at + SLACK
            ),
            "calls_while_full_after_refusal": _calls_between(
                counters, run.refused_at + SLACK, freed_at
            ),
            "held_on_file_max": run.spilled,
        },
    )


@pytest.mark.postgres
async def test_a_postgresql_table_lock_loses_no_paid_answer(
    tmp_path: Path, token: str, pg_url: str
) -> None:
    state = tmp_path / "state"
    name = pg_url.rsplit("@", 1)[1].replace(":", "-").replace("/", "-")
    spill = state / "creator-monitor" / f"pending-{name}.jsonl"
    async with _world(tmp_path, token, pg_url, spill) as world:
        run = await world.start("daemon", quick_requeue=True, STATE_DIRECTORY=str(state))
        await until(lambda: world.stored_at_least(4), 60, "4 answers stored", ended=run.ended)
        conn = await asyncpg.connect(pg_url.replace("+asyncpg", ""))
        try:
            async with conn.transaction():
                await conn.execute("LOCK TABLE fetches IN EXCLUSIVE MODE")
                locked_at = time.monotonic()
                await world.watch(run, lambda: run.refused_at is not None, 30, "a refusal")
                await asyncio.sleep(8)
            released_at = time.monotonic()
        finally:
            await conn.close()
        await world.settle(run)
        counters = world.sim.counters()
        figures = await _check_every_billed_call_stored(world, counters)
    assert run.refused_at is not None
    assert _calls_between(counters, run.refused_at + SLACK, released_at) == 0
    assert run.spilled >= 1  # the ledger took writes, so the answer in flight was held
    _report(
        "postgresql table lock",
        run,
        figures
        | {
            "calls_before_refusal_in_lock": _calls_between(
                counters, locked_at, run.refused_at + SLACK
            ),
            "held_on_file_max": run.spilled,
        },
    )


@pytest.mark.postgres
async def test_a_stop_while_rules_wait_for_a_lock_lets_them_finish(
    tmp_path: Path, token: str, pg_url: str
) -> None:
    """SIGTERM while answers are stored and their creators' rules wait for a lock on ``alerts``:
    the stop waits for those rules (within the grace period) as it does for calls on the wire,
    so no stored answer is left without its alert."""
    state = tmp_path / "state"
    async with _world(tmp_path, token, pg_url, tmp_path / "unused.jsonl", latency_ms=100) as world:
        async with _alerts_locked(pg_url):
            run = await world.start(
                "daemon", storage={"busy_timeout": "30s"}, STATE_DIRECTORY=str(state)
            )
            waiting = {"n": 0}

            async def poll() -> None:
                while True:
                    waiting["n"] = await world.stored()
                    await asyncio.sleep(0.05)

            poller = asyncio.get_running_loop().create_task(poll())
            try:
                await world.watch(run, lambda: waiting["n"] >= 2, 30, "answers stored")
            finally:
                poller.cancel()
            run.proc.send_signal(signal.SIGTERM)
            await asyncio.sleep(1.5)
            assert run.proc.returncode is None  # the stop waits for the rules
        # the lock is gone: the rules that waited for it write their alerts
        assert await asyncio.wait_for(run.proc.wait(), timeout=30) == 0, run.log()[-3000:]
        stored, alerted = await world.stored_and_alerted()
    assert stored >= 2
    assert alerted == stored, run.log()[-3000:]
    assert "stopped with" not in run.log()  # nothing abandoned, no rules left owed


@pytest.mark.postgres
async def test_rules_the_database_refused_run_at_the_stop(
    tmp_path: Path, token: str, pg_url: str
) -> None:
    """Answers stored while a lock on ``alerts`` makes their rules fail: those rules are owed.
    The lock goes and SIGTERM follows at once: the stop runs the owed rules before it exits,
    rather than leaving them to each creator's next fetch, a day later."""
    state = tmp_path / "state"
    async with _world(tmp_path, token, pg_url, tmp_path / "unused.jsonl", latency_ms=100) as world:
        async with _alerts_locked(pg_url):
            run = await world.start(
                "daemon", storage={"busy_timeout": "1s"}, STATE_DIRECTORY=str(state)
            )
            owed = "wait for the database"
            await world.watch(run, lambda: owed in run.log(), 30, "rules refused")
        run.proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(run.proc.wait(), timeout=30) == 0, run.log()[-3000:]
        stored, alerted = await world.stored_and_alerted()
    assert stored >= 1
    assert alerted == stored, run.log()[-3000:]
    assert "stopped with" not in run.log()


async def test_sigkill_with_a_spill_file_then_a_restart_stores_it_exactly_once(
    tmp_path: Path, token: str
) -> None:
    db = tmp_path / "history.db"
    spill = tmp_path / "history.db.pending.jsonl"
    db_url = f"sqlite+aiosqlite:///{db}"
    async with _world(tmp_path, token, db_url, spill, latency_ms=1500) as world:
        first = await world.start("first")
        await until(lambda: world.stored_at_least(2), 60, "2 answers stored", ended=first.ended)
        with _sqlite_locker(db, 600.0) as locker:
            assert await _line(locker) == "locked"
            await world.watch(first, lambda: first.spilled >= 1, 30, "a spilled answer")
            # the calls on the wire at the refusal come back and are held too: wait until each
            # call the simulator saw is stored or spilled (a kill while one is still on the wire
            # would lose that one, which no spill can help)
            accounted = {"n": -1}

            async def count() -> None:
                while True:
                    ((rows,),) = await world.rows("SELECT count(*) FROM fetches")
                    with contextlib.suppress(OSError):
                        accounted["n"] = int(rows) + len(spill.read_text().splitlines())
                    await asyncio.sleep(0.1)

            counter = asyncio.get_running_loop().create_task(count())
            try:
                await world.watch(
                    first,
                    lambda: accounted["n"] == world.sim.counters().by_endpoint["core"],
                    30,
                    "every call stored or spilled",
                )
            finally:
                counter.cancel()
            killed_at = time.monotonic()
            first.proc.send_signal(signal.SIGKILL)
            assert await first.proc.wait() == -signal.SIGKILL
            spilled_lines = len(spill.read_text().splitlines())
        second = await world.start("second")
        await world.settle(second)
        counters = world.sim.counters()
        figures = await _check_every_billed_call_stored(world, counters)
    assert spilled_lines >= 1
    assert "stored" in second.log()
    assert first.refused_at is not None
    assert _calls_between(counters, first.refused_at + SLACK, killed_at) == 0
    _report("sigkill + restart", second, figures | {"spilled_at_kill": spilled_lines})
