"""Console benchmark: server time of the overview over 10,000 creators and of a creator page,
then, in one run of a real daemon against the simulator, the daemon's upstream calls per
minute without console load and with 20 requests/s on the console.

Prints figures; it is not a test. ``python bench/console.py`` takes about four minutes on two
cores; ``--quick`` shrinks everything for a smoke run; ``--pg URL`` adds an empty PostgreSQL
database for the first part.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import httpx

from monitor.config import parse_config
from monitor.model import AlertState, CoreData, Creator, DailyPoint, Phase, Severity, Variant
from monitor.store import FetchRecord, Store, migrate
from monitor.web import auth
from monitor.web.context import Console
from monitor.web.routes import mount

T0 = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)
V = Variant()
TAGS = ("beauty", "food", "travel", "tech", "fashion")


def _data(n: int) -> CoreData:
    start = date(2026, 11, 1)
    points = tuple(
        DailyPoint(
            date_key=start + timedelta(days=i),
            imp=30_000 + (n * 37 % 1000) * i,
            read=3_000 + n % 500 + i,
            engage=400 + i,
            cpm=800.0 + i,
            cpe=70.0 + i,
            cpv=15.0 + i / 10,
            cpuv=None,
            third_user_num=0,
        )
        for i in range(30)
    )
    return CoreData(summary=points[-1], daily=points)


async def populate(url: str, count: int) -> None:
    await migrate.upgrade(url)
    async with Store.open(url, clock=lambda: T0) as store:
        roster = [
            Creator(f"{n:024x}", f"creator {n:05d}", (TAGS[n % len(TAGS)],)) for n in range(count)
        ]
        ids = await store.sync_creators(roster)
        await store.schedule_new((cid, V, T0) for cid in ids.values())
        batch = []
        for n, creator in enumerate(roster):
            batch.append(
                FetchRecord(ids[creator.user_id], V, started_at=T0, latency_ms=900,
                            http_status=200, code=0, billed=True, data=_data(n), keep_raw=False)
            )  # fmt: skip
            if len(batch) == 1000:
                await store.record_fetches(batch)
                batch = []
        await store.record_fetches(batch)
        for n in range(0, count, 50):  # an open alert for every 50th creator
            alert = AlertState(rule="reads-down", scope=roster[n].user_id,
                               creator_id=ids[roster[n].user_id], severity=Severity.WARNING,
                               state=Phase.FIRING, fired_at=T0, summary="reads down",
                               details={"date": "2026-11-30"})  # fmt: skip
            await store.commit_transition(alert, [], now=T0, expect=None)


def _server_ms(reply: httpx.Response) -> float:
    match = re.search(r"dur=([\d.]+)", reply.headers.get("Server-Timing", ""))
    assert match, reply.headers
    return float(match.group(1))


async def render_times(url: str, count: int, rounds: int) -> None:
    from aiohttp import web

    token = secrets.token_urlsafe(16)
    config = parse_config({"storage": {"url": url}})
    async with Store.open(url) as store:
        app = web.Application()
        guard = auth.Guard(auth.Tokens(auth.SecretStr(token), None), loopback=True)
        mount(app, Console(config, store, guard))
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        pages = {
            "overview, page 1 (50 rows)": "/",
            "overview, page 100": "/?page=100",
            "overview, sorted by 7-day change": "/?sort=change",
            "overview, tag filter": "/?tag=food",
            "overview, name filter": "/?q=creator%2001",
            "creator page": f"/creators/{7:024x}",
            "API creators (50)": "/api/v1/creators",
            "API series": f"/creators/{7:024x}".replace("/creators", "/api/v1/creators")
            + "/series?metric=imp",
        }
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers=headers) as c:
            for name, path in pages.items():
                await c.get(path)  # warm the statement caches
                server, wall = [], []
                for _ in range(rounds):
                    started = time.perf_counter()
                    reply = await c.get(path)
                    wall.append((time.perf_counter() - started) * 1000)
                    assert reply.status_code == 200, (path, reply.status_code)
                    server.append(_server_ms(reply))
                print(
                    f"  {name:<34} server median {statistics.median(server):6.1f} ms, "
                    f"max {max(server):6.1f} ms; wall median {statistics.median(wall):6.1f} ms"
                )
        await runner.cleanup()
    print(f"  ({count:,} creators × 30 days, {rounds} requests each)")


def _cli() -> list[str]:
    script = Path(sys.executable).parent / "creator-monitor"
    return [str(script)] if script.exists() else [sys.executable, "-m", "monitor"]


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _calls(metrics: str) -> int:
    return int(
        sum(
            float(v)
            for v in re.findall(r"^creator_monitor_upstream_calls_total\{[^}]*\} (\S+)$",
                                metrics, re.MULTILINE)
        )
    )  # fmt: skip


async def _load(
    client: httpx.AsyncClient, rate: float, until: float, paths: list[str]
) -> list[float]:
    times: list[float] = []
    n = 0
    started = time.monotonic()

    async def one(path: str) -> None:
        t = time.perf_counter()
        reply = await client.get(path)
        assert reply.status_code == 200, (path, reply.status_code)
        times.append((time.perf_counter() - t) * 1000)

    tasks = set()
    while time.monotonic() < until:
        task = asyncio.create_task(one(paths[n % len(paths)]))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        n += 1
        await asyncio.sleep(max(0.0, started + n / rate - time.monotonic()))
    await asyncio.gather(*tasks)
    return times


def _start(
    folder: Path, creators: int, per_minute: int
) -> tuple[list[subprocess.Popen[bytes]], str, str]:
    """The simulator and a real daemon with the console; (processes, console URL, token)."""
    sim_port, http_port = _free_port(), _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JUSTONEAPI", "CREATOR_MON"))}
    env |= {"JUSTONEAPI_TOKEN": "bench-token", "PYTHONUNBUFFERED": "1"}
    admin = secrets.token_urlsafe(16)
    token_file = folder / "admin.token"
    token_file.write_text(admin)
    token_file.chmod(0o600)
    lines = [
        "[api]", f'base_url = "http://127.0.0.1:{sim_port}"',
        "[budget]", f"calls_per_minute = {per_minute}", "burst = 2", "daily_calls = 100000",
        "[storage]", f'url = "sqlite+aiosqlite:///{folder}/live.db"',
        "[schedule]", "max_in_flight = 4",
        "[http]", f'listen = "127.0.0.1:{http_port}"', f'token_file = "{token_file}"',
    ]  # fmt: skip
    for n in range(creators):
        lines += ["[[creators]]", f'user_id = "{n + 1:024x}"', f'name = "live {n:05d}"']
    config = folder / "live.toml"
    config.write_text("\n".join(lines) + "\n")
    quiet = {"env": env, "stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    subprocess.run([*_cli(), "-c", str(config), "db", "upgrade"], check=True, **quiet)
    sim = subprocess.Popen(
        [*_cli(), "simulate", "--port", str(sim_port), "--latency", "0.05"], **quiet
    )
    daemon = subprocess.Popen([*_cli(), "-c", str(config), "run"], **quiet)
    return [daemon, sim], f"http://127.0.0.1:{http_port}", admin


async def no_cost(folder: Path, creators: int, phase: float, per_minute: int) -> None:
    procs, base, admin = _start(folder, creators, per_minute)
    try:
        async with httpx.AsyncClient(
            base_url=base, headers={"Authorization": f"Bearer {admin}"}, timeout=30
        ) as client:
            for _ in range(300):
                try:
                    if (await client.get("/healthz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)
            await asyncio.sleep(10)  # past the burst: the budget's steady rate
            paths = ["/", "/?sort=change", "/alerts", f"/creators/{3:024x}", "/api/v1/creators",
                     "/account", "/api/v1/budget"]  # fmt: skip
            at = _calls((await client.get("/metrics")).text)
            await asyncio.sleep(phase)
            quiet = _calls((await client.get("/metrics")).text) - at
            at += quiet
            latencies = await _load(client, 20.0, time.monotonic() + phase, paths)
            loaded = _calls((await client.get("/metrics")).text) - at
        latencies.sort()
        p50 = latencies[len(latencies) // 2]
        p95 = latencies[int(len(latencies) * 0.95)]
        print(
            f"  budget {per_minute}/min, {creators:,} creators due, {phase:.0f} s per phase:\n"
            f"  upstream calls without console load: {quiet}; with 20 req/s on the console: "
            f"{loaded} ({len(latencies)} console requests, p50 {p50:.0f} ms, p95 {p95:.0f} ms)"
        )
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=20)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--pg", help="an empty PostgreSQL database URL for the render part")
    args = parser.parse_args()
    count = 1000 if args.quick else 10_000
    rounds = 5 if args.quick else 30
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        urls = [f"sqlite+aiosqlite:///{folder}/bench.db"] + ([args.pg] if args.pg else [])
        for url in urls:
            started = time.perf_counter()
            await populate(url, count)
            backend = url.split("+")[0]
            print(f"{backend}: populated in {time.perf_counter() - started:.0f} s")
            await render_times(url, count, rounds)
        print("daemon budget use under console load (simulator):")
        await no_cost(folder, 3000, 15.0 if args.quick else 60.0, 60)


if __name__ == "__main__":
    asyncio.run(main())
