"""Scale-out benchmark: throughput of 1, 2 and 3 ``creator-monitor run`` instances on one
PostgreSQL database against a latency-bound simulated upstream with an ample budget, and the
per-fetch cost of PostgreSQL against SQLite for one instance, in the same run.

Prints figures; it is not a test. Needs the PostgreSQL on 127.0.0.1:5432 (or CM_BENCH_PG_DSN, an
admin DSN): it creates and drops its own databases. ``--quick`` shortens the windows.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from support.scaleout import Fleet, fleet_config, wait_for_instances

from monitor.store import migrate
from monitor.upstream.simulator import SimKnobs, Simulator

ADMIN_DSN = os.environ.get("CM_BENCH_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
TOKEN = "bench-token-not-secret"
AMPLE = {"calls_per_minute": 10_000, "burst": 200, "daily_calls": 10_000_000}


def creators(count: int) -> list[str]:
    return [f"5c3bf7f7{n:016x}" for n in range(count)]


@asynccontextmanager
async def pg_database() -> AsyncIterator[str]:
    name = f"cm_bench_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(ADMIN_DSN)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    base = ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
    try:
        yield f"{base}/{name}"
    finally:
        admin = await asyncpg.connect(ADMIN_DSN)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@dataclass
class Run:
    instances: int
    backend: str
    calls: int
    seconds: float
    cpu_seconds: float
    startup: float

    @property
    def rate(self) -> float:
        return self.calls / self.seconds

    @property
    def cpu_ms_per_fetch(self) -> float:
        return 1000 * self.cpu_seconds / max(1, self.calls)


async def measure(
    db_url: str,
    backend: str,
    instances: int,
    *,
    latency_ms: float,
    in_flight: int,
    warmup: float,
    window: float,
) -> Run:
    """Start ``instances`` daemons with every creator due over and over, count the calls the
    simulator answers in ``window`` seconds after ``warmup``, and the daemons' CPU time."""
    await migrate.upgrade(db_url)
    async with Simulator(SimKnobs(latency_ms=latency_ms)) as sim:
        with tempfile.TemporaryDirectory() as folder:
            document = fleet_config(
                sim.base_url,
                db_url,
                creators(3000),
                every="5s",  # far more due work than the pool can take: latency-bound
                budget=AMPLE,
                schedule={"max_in_flight": in_flight, "lease": "30s"},
            )
            fleet = Fleet(Path(folder), document, TOKEN)
            try:
                await fleet.start(instances)
                startup = await wait_for_instances(db_url, instances)
                await asyncio.sleep(warmup)
                cpu0 = sum(m.cpu_seconds() for m in fleet.members)
                start = time.monotonic()
                await asyncio.sleep(window)
                end = time.monotonic()
                cpu1 = sum(m.cpu_seconds() for m in fleet.members)
                calls = sum(1 for r in sim.counters().log if start <= r.monotonic < end)
                codes = await fleet.stop()
                if any(codes):
                    print(fleet.logs()[-3000:], file=sys.stderr)
                    raise SystemExit(f"an instance failed: exit codes {codes}")
            finally:
                await fleet.close()
    return Run(instances, backend, calls, end - start, cpu1 - cpu0, startup)


async def main(quick: bool) -> None:
    warmup, window = (3.0, 6.0) if quick else (5.0, 15.0)
    print(f"scale-out: 3,000 creators always due, ample budget; {window:.0f} s windows")
    print("\nlatency-bound upstream (500 ms per call), max_in_flight 8 per instance, PostgreSQL:")
    runs: list[Run] = []
    for n in (1, 2, 3):
        async with pg_database() as url:
            run = await measure(
                url, "postgresql", n, latency_ms=500, in_flight=8, warmup=warmup, window=window
            )
        runs.append(run)
        ratio = run.rate / runs[0].rate
        print(
            f"  {n} instance(s): {run.rate:6.1f} fetches/s  ×{ratio:.2f} over one  "
            f"(ready in {run.startup:.1f} s)"
        )
    print("\nper-fetch cost, one instance, upstream answers at once, max_in_flight 8:")
    cost: list[Run] = []
    with tempfile.TemporaryDirectory() as folder:
        sqlite_url = f"sqlite+aiosqlite:///{folder}/history.db"
        cost.append(
            await measure(
                sqlite_url, "sqlite", 1, latency_ms=0, in_flight=8, warmup=warmup, window=window
            )
        )
    async with pg_database() as url:
        cost.append(
            await measure(url, "postgresql", 1, latency_ms=0, in_flight=8, warmup=warmup,
                          window=window)
        )  # fmt: skip
    for run in cost:
        print(
            f"  {run.backend:10s}: {run.rate:6.1f} fetches/s, "
            f"{run.cpu_ms_per_fetch:5.1f} ms daemon CPU per fetch"
        )
    ratio = cost[1].cpu_ms_per_fetch / cost[0].cpu_ms_per_fetch
    print(f"  PostgreSQL / SQLite CPU per fetch: ×{ratio:.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="shorter windows (smoke run)")
    asyncio.run(main(parser.parse_args().quick))
