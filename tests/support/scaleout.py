"""A fleet of real ``creator-monitor run`` subprocesses on one database, against one simulator
and one notification receiver in the test process; shared by the scale-out tests and
``bench/scaleout.py``. Test support only: no assertions live here.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from monitor.upstream.simulator import CallRecord
from support.daemon import child_env, cli, write_toml
from support.wait import until
from support.zygote import Child, spawn

ROOT = Path(__file__).resolve().parent.parent.parent


def fleet_config(
    base_url: str,
    db_url: str,
    user_ids: Sequence[str],
    *,
    every: str,
    budget: dict[str, Any],
    schedule: dict[str, Any] | None = None,
    channel_url: str | None = None,
    rules: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    document: dict[str, Any] = {
        "api": {"base_url": base_url, "timeout": "10s"},
        "budget": {"timezone": "Asia/Shanghai", **budget},
        "storage": {"url": db_url},
        "schedule": {"retry_attempts": 0, "grace": "5s", **(schedule or {})},
        "defaults": {"every": every},
        "creators": [{"user_id": u} for u in user_ids],
    }
    if channel_url is not None:
        document["channels"] = [{"name": "hook", "url": channel_url, "digest": False}]
    if rules:
        document["rules"] = rules
    return document


@dataclass
class Member:
    """One instance: its process and where its stderr goes."""

    process: Child
    log_path: Path
    log: BinaryIO

    def cpu_seconds(self) -> float:
        """User + system CPU time of the process so far (Linux /proc)."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Fleet:
    """``creator-monitor run`` subprocesses sharing one config file."""

    folder: Path
    document: dict[str, Any]
    token: str
    members: list[Member] = field(default_factory=list)

    async def start(self, count: int = 1) -> list[Member]:
        config = self.folder / "config.toml"
        write_toml(config, self.document)
        started = []
        for _ in range(count):
            n = len(self.members)
            log_path = self.folder / f"instance-{n}.log"
            log = log_path.open("wb")
            process = await spawn(
                *cli(), "-c", str(config), "run",
                stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log,
                env=child_env(self.token), cwd=self.folder,
            )  # fmt: skip
            member = Member(process, log_path, log)
            self.members.append(member)
            started.append(member)
        return started

    def kill(self, member: Member) -> None:
        """SIGKILL: no cleanup at all, as when a host dies."""
        member.process.send_signal(signal.SIGKILL)

    async def stop(self, members: Iterable[Member] | None = None, timeout: float = 30) -> list[int]:
        """SIGTERM, then wait; returns the exit codes (-9 for killed ones)."""
        chosen = list(self.members if members is None else members)
        for m in chosen:
            if m.process.returncode is None:
                m.process.send_signal(signal.SIGTERM)
        codes = []
        for m in chosen:
            try:
                codes.append(await asyncio.wait_for(m.process.wait(), timeout))
            except TimeoutError:
                m.process.kill()
                codes.append(await m.process.wait())
            m.log.close()
        return codes

    async def close(self) -> None:
        for m in self.members:
            if m.process.returncode is None:
                m.process.kill()
                await m.process.wait()
            m.log.close()

    def logs(self) -> str:
        return "\n".join(m.log_path.read_text(errors="replace") for m in self.members)


async def wait_for_instances(db_url: str, count: int, timeout: float = 60) -> float:
    """Wait until ``count`` instances heartbeat in the database; returns seconds waited."""
    engine = create_async_engine(db_url)

    async def up() -> bool:
        with contextlib.suppress(Exception):  # the schema may not be there yet
            async with engine.connect() as conn:
                seen = await conn.scalar(text("SELECT count(*) FROM instances"))
            return int(seen or 0) >= count
        return False

    start = time.monotonic()
    try:
        return await until(up, timeout, f"{count} instances up", every=0.2) - start
    finally:
        await engine.dispose()


async def query(db_url: str, sql: str) -> list[Any]:
    engine = create_async_engine(db_url)
    try:
        async with engine.connect() as conn:
            return list((await conn.execute(text(sql))).all())
    finally:
        await engine.dispose()


def calls_by_series(log: Iterable[CallRecord]) -> Counter[str]:
    return Counter(r.user_id or "" for r in log)


def max_in_window(times: Sequence[float], seconds: float) -> int:
    """The most events in any half-open window of ``seconds``."""
    ordered = sorted(times)
    best = start = 0
    for end, moment in enumerate(ordered):
        while moment - ordered[start] >= seconds:
            start += 1
        best = max(best, end - start + 1)
    return best
