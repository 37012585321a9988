"""Helpers for the daemon tests: virtual time, a config builder, and running the real daemon
in-process against the simulator (or as a subprocess with a notify socket).

Virtual time: every sleep of the daemon (dispatcher naps, budget waits, retry backoff) goes
through ``VirtualTime.sleep``; a driver moves the fake clock to the earliest sleeper's deadline
once nothing is on the wire, so a day of schedule runs in seconds and the simulator (on the same
clock) stamps each call with the time the budget let it go.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import os
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from monitor.config import Config, parse_config
from monitor.daemon import Daemon
from monitor.daemon.options import Options
from monitor.store import migrate
from monitor.upstream.simulator import CallRecord, Simulator
from support.sim import CAPTURE_TIME, FakeClock, creator_id
from support.zygote import Child, spawn

SHANGHAI = ZoneInfo("Asia/Shanghai")
MINUTE = timedelta(minutes=1)


class VirtualTime:
    """A discrete-event clock for asyncio code that sleeps through an injected ``sleep``."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.busy: Callable[[], bool] = lambda: False
        self._heap: list[tuple[datetime, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()
        self.sleeping: set[asyncio.Task[Any]] = set()

    async def sleep(self, seconds: float) -> None:
        deadline = self.clock.now + timedelta(seconds=max(0.0, seconds))
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._heap, (deadline, next(self._seq), future))
        task = asyncio.current_task()
        assert task is not None
        self.sleeping.add(task)
        try:
            await future
        finally:
            self.sleeping.discard(task)

    async def sleep_until(self, moment: datetime) -> None:
        await self.sleep((moment - self.clock.now).total_seconds())

    async def drive(self) -> None:
        """Advance to the next deadline whenever the loop has settled and no call is out."""
        while True:
            for _ in range(30):  # let every runnable task run first
                await asyncio.sleep(0)
            while self._heap and self._heap[0][2].done():
                heapq.heappop(self._heap)
            if self.busy() or not self._heap:
                await asyncio.sleep(0.002)
                continue
            self.clock.now = max(self.clock.now, self._heap[0][0])
            while self._heap and self._heap[0][0] <= self.clock.now:
                _, _, future = heapq.heappop(self._heap)
                if not future.done():
                    future.set_result(None)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[VirtualTime]:
        task = asyncio.get_running_loop().create_task(self.drive())
        try:
            yield self
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def daemon_config(
    base_url: str,
    db_url: str,
    creators: Iterable[str],
    *,
    budget: dict[str, Any] | None = None,
    schedule: dict[str, Any] | None = None,
    every: str = "24h",
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A config document (what a TOML file would hold) for the daemon tests."""
    return {
        "api": {"base_url": base_url, "timeout": "10s"},
        "budget": {"calls_per_minute": 60, "burst": 5, "daily_calls": 5000, **(budget or {})},
        "storage": {"url": db_url},
        "schedule": {
            "max_in_flight": 5,
            "retry_attempts": 2,
            "retry_base": "10s",
            "retry_max": "60s",
            "probe_every": "15m",
            "grace": "5s",
            **(schedule or {}),
        },
        "defaults": {"every": every},
        "creators": [{"user_id": u} for u in creators],
        **(extra or {}),
    }


def logged(records: Iterable[logging.LogRecord], text: str) -> list[str]:
    """The messages of ``records`` (``caplog.records``) that hold ``text``."""
    return [r.getMessage() for r in records if text in r.getMessage()]


def creators(count: int, start: int = 0) -> list[str]:
    return [creator_id(n) for n in range(start, start + count)]


@dataclass
class InProcess:
    """One in-process daemon on virtual time against one simulator."""

    sim: Simulator
    vt: VirtualTime
    db_url: str
    token: str
    daemons: list[Daemon] = field(default_factory=list)

    @property
    def clock(self) -> FakeClock:
        return self.vt.clock

    def make(self, document: dict[str, Any], **options: Any) -> Daemon:
        config: Config = parse_config(document)
        # the jobs' scheduler runs on real time: its jobs look rarely unless a test asks, so
        # that a test slowed down by a loaded host makes no reading or drain a fast one does not
        jobs = {"drain_every": 3600.0, "evaluate_every": 3600.0, "balance_tick": 3600.0}
        opts = Options(
            clock=self.clock,
            sleep=self.vt.sleep,
            # virtual time is elapsed time: the fake wall clock is never stepped behind its back
            monotonic=lambda: self.clock.now.timestamp(),  # noqa: PLW0108 - now is rebound
            tick=60.0,
            environ={"JUSTONEAPI_TOKEN": self.token},
            **(jobs | options),
        )
        daemon = Daemon(config, opts)
        self.daemons.append(daemon)
        return daemon

    async def run_until(
        self,
        daemon: Daemon,
        done: Callable[[], bool],
        *,
        real_timeout: float = 30.0,
        busy: Callable[[], bool] = lambda: False,
    ) -> None:
        """Run ``daemon`` until ``done()`` holds (checked in real time), then stop it; time
        does not move while ``busy()`` holds either (a job the test waits for is due)."""
        self.vt.busy = lambda: _busy(daemon, self.vt) or busy()
        task = asyncio.get_running_loop().create_task(daemon.run())
        deadline = time.monotonic() + real_timeout
        try:
            while not done():
                if task.done():
                    raise AssertionError(f"daemon ended early: {task.result()}")
                if time.monotonic() > deadline:
                    raise AssertionError(f"timed out at virtual {self.clock.now.isoformat()}")
                await asyncio.sleep(0.01)
        finally:
            daemon.request_stop()
            assert await asyncio.wait_for(task, timeout=15) == 0


def _busy(daemon: Daemon, vt: VirtualTime) -> bool:
    """Time may not move while a call is on the wire, a fetch is working (not sleeping), or
    the dispatcher has yet to react to a fetch that ended (its wake is pending, or the ended
    fetch's callback has not run): jumping then would skip the calls it is about to start."""
    if not hasattr(daemon, "dispatcher"):
        return False
    dispatcher = daemon.dispatcher
    if daemon.gate.on_the_wire > 0 or dispatcher.woken:
        return True
    queued = daemon.gate.queued  # waiting for their turn at the gate: idle, not working
    return any(t.done() or (t not in vt.sleeping and t not in queued) for t in dispatcher.tasks)


@asynccontextmanager
async def in_process(tmp_path: Path, token: str, **knobs: Any) -> AsyncIterator[InProcess]:
    """A migrated SQLite file, a simulator on the virtual clock, and the driver running."""
    from monitor.upstream.simulator import SimKnobs

    db_url = f"sqlite+aiosqlite:///{tmp_path}/history.db"
    await migrate.upgrade(db_url)
    clock = FakeClock(CAPTURE_TIME)
    vt = VirtualTime(clock)
    async with Simulator(SimKnobs(**knobs), clock=clock) as sim, vt.running():
        yield InProcess(sim, vt, db_url, token)


def calls_per_day(log: Iterable[CallRecord]) -> dict[str, int]:
    days: dict[str, int] = {}
    for record in log:
        day = record.at.astimezone(SHANGHAI).date().isoformat()
        days[day] = days.get(day, 0) + 1
    return days


def next_shanghai_midnight(moment: datetime) -> datetime:
    local = moment.astimezone(SHANGHAI).date() + timedelta(days=1)
    return datetime.combine(local, datetime.min.time(), tzinfo=SHANGHAI).astimezone(UTC)


# ---------------------------------------------------------------- subprocess helpers


def cli() -> list[str]:
    script = Path(sys.executable).parent / "creator-monitor"
    return [str(script)] if script.exists() else [sys.executable, "-m", "monitor"]


async def start_run(config: Path, log: Path, env: dict[str, str], cwd: Path | str) -> Child:
    """``creator-monitor -c CONFIG run`` as a process of its own, no stdin, its stdout and
    stderr both into ``log``."""
    with log.open("wb") as sink:
        return await spawn(
            *cli(), "-c", str(config), "run",
            stdin=asyncio.subprocess.DEVNULL, stdout=sink, stderr=sink, env=env, cwd=cwd,
        )  # fmt: skip


def child_env(token: str, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("JUSTONEAPI", "CREATOR_MON", "NOTIFY_SOCKET", "WATCHDOG"))
    }
    env |= {"JUSTONEAPI_TOKEN": token, "PYTHONUNBUFFERED": "1", **extra}
    return env


def write_toml(path: Path, document: dict[str, Any]) -> Path:
    """A tiny TOML writer for the documents ``daemon_config`` builds."""
    lines: list[str] = []
    tables = {k: v for k, v in document.items() if isinstance(v, dict)}
    arrays = {k: v for k, v in document.items() if isinstance(v, list)}
    for name, table in tables.items():
        lines.append(f"[{name}]")
        lines.extend(f"{key} = {_toml(value)}" for key, value in table.items())
    for name, items in arrays.items():
        for item in items:
            lines.append(f"[[{name}]]")
            lines.extend(f"{key} = {_toml(value)}" for key, value in item.items())
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


class NotifySocket:
    """A unix datagram socket standing in for systemd's notify socket."""

    def __init__(self, folder: Path) -> None:
        self.path = str(folder / "notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.setblocking(False)
        self.messages: list[str] = []

    def drain(self) -> list[str]:
        while self.sock.fileno() >= 0:
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except BlockingIOError:
                break
        return self.messages

    async def wait_for(self, field_: str, timeout: float = 60.0) -> str:
        """The first message (from the start) holding ``field_`` (e.g. ``READY=1``)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for message in self.drain():
                if field_ in message.split("\n"):
                    return message
            await asyncio.sleep(0.02)
        raise AssertionError(f"no {field_} within {timeout} s; got {self.messages}")

    def count(self, field_: str) -> int:
        return sum(field_ in m.split("\n") for m in self.drain())

    def close(self) -> None:
        self.sock.close()
