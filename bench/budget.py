"""Budget benchmark: how much of the budget the daemon turns into calls, against a vendor-style
sequential loop, and what 100,000 tracked creators cost at start-up.

Prints figures; it is not a test. Real time throughout (no compressed clock): the simulator has
latency p50 1 s / p99 20 s and a hard limit equal to the budget. To finish in a few minutes the
budget is 600 calls/min (not 30) and the rate is measured over 120 s of a 2,000-creator backlog,
after a first minute that holds the start-up burst; the sequential loop is measured over 60 s
and extrapolated.
Then the same with the default ``[schedule]`` (max_in_flight = "auto") against a 0.5 s and a
1 s p50 upstream, and at the default 30 calls/min (peak fetches in flight and connections).
``--quick`` shrinks everything for a smoke run; ``--defaults-only`` runs only the default-settings
runs; ``--startup-only [--creators N]`` measures only
the start-up (time to READY and RSS, first start and restart).
"""

from __future__ import annotations

import argparse
import asyncio
import compileall
import contextlib
import os
import socket
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx

import monitor
from monitor.config import parse_config
from monitor.daemon import Daemon, Options
from monitor.store import migrate
from monitor.upstream.simulator import CORE_DATA_PATH, SimKnobs, Simulator

TOKEN = "bench-token"  # the simulator accepts any token
MINUTE = timedelta(minutes=1)


def user(n: int) -> str:
    return f"5c3bf7f7{n:016x}"


def document(
    base_url: str, db_url: str, count: int, per_minute: int, *, defaults: bool = False
) -> dict[str, Any]:
    """The bench config; ``defaults``: the default ``[schedule]`` (max_in_flight = "auto")."""
    schedule = {"grace": "2s"} if defaults else {"max_in_flight": 128, "retry_attempts": 0}
    return {
        "api": {"base_url": base_url, "timeout": "60s"},
        "budget": {"calls_per_minute": per_minute, "burst": 10, "daily_calls": 1_000_000},
        "storage": {"url": db_url},
        "schedule": {"grace": "2s", **schedule},
        "defaults": {"every": "24h"},
        "creators": [{"user_id": user(n)} for n in range(count)],
    }


def _connections_to(port: int) -> int:
    """Established TCP connections to 127.0.0.1:``port`` (the daemon's side of each)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table, encoding="ascii") as rows:
            for row in rows.readlines()[1:]:
                fields = row.split()
                if fields[3] == "01" and int(fields[2].rsplit(":", 1)[1], 16) == port:
                    count += 1
    return count


async def default_rate(
    folder: Path, creators: int, per_minute: int, p50_ms: float, window: float
) -> None:
    """The daemon with the default ``[schedule]``: share of the budget used, 302s it caused,
    and the most fetches in flight and connections open at once (sampled every 50 ms)."""
    db_url = f"sqlite+aiosqlite:///{folder}/default-{per_minute}-{p50_ms:.0f}.db"
    await migrate.upgrade(db_url)
    knobs = SimKnobs(latency_p50_ms=p50_ms, latency_p99_ms=p50_ms * 20, calls_per_minute=per_minute)
    async with Simulator(knobs) as sim:
        port = int(sim.base_url.rsplit(":", 1)[1])
        config = parse_config(document(sim.base_url, db_url, creators, per_minute, defaults=True))
        daemon = Daemon(config, Options(environ={"JUSTONEAPI_TOKEN": TOKEN}, tick=1.0))
        task = asyncio.get_running_loop().create_task(daemon.run())
        while sim.counters().calls == 0:  # noqa: ASYNC110 - polls another object's counter
            await asyncio.sleep(0.01)
        first = time.monotonic() + 60
        end = first + window
        peak_in_flight = peak_connections = 0
        while time.monotonic() < end:
            peak_in_flight = max(peak_in_flight, daemon.dispatcher.inflight)
            peak_connections = max(peak_connections, _connections_to(port))
            await asyncio.sleep(0.05)
        limit = daemon.dispatcher.sizer.limit()
        latency = daemon.dispatcher.sizer.latency
        counters = sim.counters()
        daemon.request_stop()
        await task
    sent = [r for r in counters.log if first <= r.monotonic < first + window]
    achieved = len(sent) / (window / 60)
    print(
        f"default [schedule], budget {per_minute}/min, upstream p50 {p50_ms / 1000:g} s / "
        f"p99 {p50_ms * 20 / 1000:g} s:"
    )
    print(f"  {achieved:.1f} calls/min over {window:.0f} s after the first minute")
    print(f"  achieved / budget: {achieved / per_minute:.3f}  (target >= 0.95)")
    print(f"  302s caused: {counters.by_code.get('302', 0)}  (target 0)")
    print(
        f"  in flight: limit {limit} at the end (latency average {latency:.2f} s); "
        f"peak {peak_in_flight} cycles, {peak_connections} connections"
    )


async def daemon_rate(folder: Path, creators: int, per_minute: int, window: float) -> None:
    db_url = f"sqlite+aiosqlite:///{folder}/rate.db"
    await migrate.upgrade(db_url)
    knobs = SimKnobs(latency_p50_ms=1000, latency_p99_ms=20_000, calls_per_minute=per_minute)
    async with Simulator(knobs) as sim:
        config = parse_config(document(sim.base_url, db_url, creators, per_minute))
        daemon = Daemon(config, Options(environ={"JUSTONEAPI_TOKEN": TOKEN}, tick=1.0))
        task = asyncio.get_running_loop().create_task(daemon.run())
        while sim.counters().calls == 0:  # noqa: ASYNC110 - polls another object's counter
            await asyncio.sleep(0.01)
        # the first minute holds the start-up burst: measure the steady state after it
        first = time.monotonic() + 60
        await asyncio.sleep(60 + window)
        counters = sim.counters()
        daemon.request_stop()
        await task
    sent = [r for r in counters.log if first <= r.monotonic < first + window]
    achieved = len(sent) / (window / 60)
    print(f"daemon: {len(sent)} calls in {window:.0f} s after the first minute")
    print(f"  = {achieved:.1f} calls/min ({counters.calls} calls in all)")
    print(f"  achieved / budget: {achieved / per_minute:.3f}  (target >= 0.95)")
    print(f"  302s caused: {counters.by_code.get('302', 0)}  (target 0)")
    print(f"  most in any 60 s at the simulator: {counters.max_in_window(MINUTE)}")
    print(f"  2,000 creators at this rate: {creators / achieved:.1f} min")
    _RESULTS["daemon"] = achieved


async def sequential_rate(window: float, creators: int) -> None:
    """What the vendor's sample script does: one GET after the other, no budget."""
    knobs = SimKnobs(latency_p50_ms=1000, latency_p99_ms=20_000)
    async with Simulator(knobs) as sim, httpx.AsyncClient(timeout=60) as client:
        started, n = time.monotonic(), 0
        while time.monotonic() - started < window:
            query = {"token": TOKEN, "userId": user(n)}
            (await client.get(sim.base_url + CORE_DATA_PATH, params=query)).raise_for_status()
            n += 1
        took = time.monotonic() - started
    rate = n / (took / 60)
    print(f"sequential loop: {n} calls in {took:.0f} s = {rate:.1f} calls/min")
    print(f"  2,000 creators at this rate: {creators / rate:.0f} min")
    print(f"  daemon / sequential: {_RESULTS['daemon'] / rate:.1f}x")


async def startup(folder: Path, count: int, *, roster: bool = False) -> None:
    """Time to READY=1 and RSS of ``creator-monitor run`` with ``count`` tracked creators."""
    # as installed (pip compiles at install): a source tree run under PYTHONDONTWRITEBYTECODE
    # would otherwise compile every module of the package again on each start
    compileall.compile_dir(str(Path(monitor.__file__).parent), quiet=1)
    db_url = f"sqlite+aiosqlite:///{folder}/big{'-roster' if roster else ''}.db"
    await migrate.upgrade(db_url)
    # a slow upstream: start-up is measured, not fetching
    async with Simulator(SimKnobs(latency_ms=30_000)) as sim:
        config = folder / "big.toml"
        lines = [
            f'[api]\nbase_url = "{sim.base_url}"\n[storage]\nurl = "{db_url}"\n',
            "[budget]\ncalls_per_minute = 30\n",
            '[schedule]\ngrace = "1s"\n',  # stopping between runs need not wait out 30 s calls
        ]
        if roster:  # the same creators from a roster file, as a spreadsheet saves it
            rows = "".join(f"{user(n)}\r\n" for n in range(count))
            (folder / "creators.csv").write_text("\ufeffuser_id\r\n" + rows, encoding="utf-8")
            lines.append('[roster]\nfiles = ["creators.csv"]\n')
        else:
            lines += [f'[[creators]]\nuser_id = "{user(n)}"\n' for n in range(count)]
        config.write_text("".join(lines), encoding="utf-8")
        source = "from a roster CSV" if roster else "in config.toml"
        for run in ("first start (empty schedule)", "restart (schedule persisted)"):
            ready, rss, peak = await _ready_and_rss(folder, config)
            print(
                f"{count:,} creators {source}, {run}: READY after {ready:.2f} s, "
                f"RSS {rss / 1024:.0f} MB (peak {peak / 1024:.0f} MB)  (targets < 3 s, < 120 MB)"
            )


async def _ready_and_rss(folder: Path, config: Path) -> tuple[float, int, int]:
    path = folder / "notify.sock"
    path.unlink(missing_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.setblocking(False)
    env = {**os.environ, "JUSTONEAPI_TOKEN": TOKEN, "NOTIFY_SOCKET": str(path)}
    script = Path(sys.executable).parent / "creator-monitor"
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        str(script), "-c", str(config), "run", env=env, stderr=asyncio.subprocess.DEVNULL
    )
    try:
        while True:
            try:
                if b"READY=1" in sock.recv(4096):
                    break
            except BlockingIOError:
                await asyncio.sleep(0.005)
            if proc.returncode is not None or time.monotonic() - started > 120:
                raise SystemExit("the daemon did not become ready")
        ready = time.monotonic() - started
        await asyncio.sleep(1.0)  # settled: the first dispatch has run
        status = Path(f"/proc/{proc.pid}/status").read_text()  # noqa: ASYNC240 - procfs, instant
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        rss = int(fields["VmRSS"].split()[0])
        peak = int(fields["VmHWM"].split()[0])
    finally:
        proc.terminate()
        await proc.wait()
        sock.close()
    return ready, rss, peak


_RESULTS: dict[str, float] = {}


async def main(quick: bool, startup_only: bool, defaults_only: bool, count: int | None) -> None:
    creators = 2_000
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if startup_only:
            await startup(folder, count or (10_000 if quick else 100_000))
            await startup(folder, count or (10_000 if quick else 100_000), roster=True)
            return
        per_minute, window = (120, 30.0) if quick else (600, 120.0)
        if defaults_only or not quick:
            for p50_ms in (500.0, 1000.0):
                await default_rate(folder, creators, per_minute, p50_ms, window)
            await default_rate(folder, 200, 30, 1000.0, window)
            if defaults_only:
                return
        print(f"budget {per_minute} calls/min, simulator latency p50 1 s / p99 20 s, hard limit")
        await daemon_rate(folder, creators, per_minute, window)
        await sequential_rate(15.0 if quick else 60.0, creators)
        await startup(folder, count or (10_000 if quick else 100_000))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument(
        "--startup-only", action="store_true", help="measure only start-up (READY time and RSS)"
    )
    parser.add_argument(
        "--defaults-only",
        action="store_true",
        help='measure only the default [schedule] runs (max_in_flight = "auto")',
    )
    parser.add_argument(
        "--creators", type=int, default=None, help="tracked creators for the start-up run"
    )
    args = parser.parse_args()
    asyncio.run(main(args.quick, args.startup_only, args.defaults_only, args.creators))
