"""Budget benchmark: how much of the budget the daemon turns into calls, against a vendor-style
sequential loop, and what 100,000 tracked creators cost at start-up.

Prints figures; it is not a test. Real time throughout (no compressed clock): the simulator has
latency p50 1 s / p99 20 s and a hard limit equal to the budget. To finish in a few minutes the
budget is 600 calls/min (not 30) and the rate is measured over 120 s of a 2,000-creator backlog,
after a first minute that holds the start-up burst; the sequential loop is measured over 60 s
and extrapolated.
Then the same with the default ``[schedule]`` (max_in_flight = "auto") against a 0.5 s and a
1 s p50 upstream, and at the default 30 calls/min (peak fetches in flight and connections).
Then every source (issue sources): 10,000 creators tracked with ``core``, ``fans`` and ``notes``
at the cadences a team would set (``every = "24h"``, ``[defaults.every_source] fans = "24h"``,
``notes = "6h"``; ``[account] balance_every`` left at its default, 1 h), a real ``creator-monitor
run`` process against the simulator, beside the same creators with ``core`` alone in the same
harness and the same run: READY, share of the budget used, 302s caused.
``--quick`` shrinks everything for a smoke run; ``--defaults-only`` runs only the default-settings
runs; ``--sources-only`` only the every-source runs; ``--startup-only [--creators N] [--rounds R]
[--sources core,fans]`` measures only the start-up (time to READY, the CPU the daemon used
to get there, and RSS; first start and restart), core alone and with the given sources
alternately, and prints medians.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import compileall
import contextlib
import os
import socket
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx

import monitor
from monitor.config import parse_config
from monitor.daemon import Daemon
from monitor.daemon.options import Options
from monitor.store import migrate
from monitor.upstream.simulator import CORE_DATA_PATH, SimKnobs, Simulator

TOKEN = "bench-token"  # the simulator accepts any token
ALL_SOURCES = ("core", "fans", "notes")
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


#: the cadences a team tracking every source would set: the issue's own example
EVERY_SOURCE = {"fans": "24h", "notes": "6h"}


def config_text(
    base_url: str,
    db_url: str,
    sources: tuple[str, ...],
    *,
    creators: str,
    budget: str = "calls_per_minute = 30",
    schedule: str = 'grace = "1s"',
    every: str | None = None,
) -> str:
    """A config file for a ``creator-monitor run`` process: ``creators`` is its
    ``[[creators]]`` entries or its ``[roster]`` section; every cadence is the default
    (``every = "24h"``) save ``EVERY_SOURCE`` when more than ``core`` is tracked, or
    ``every`` for all when given."""
    defaults = f"[defaults]\nsources = {list(sources)!r}\n".replace("'", '"')
    if every is not None:
        defaults += f'every = "{every}"\n'
    elif sources != ("core",):
        defaults += "[defaults.every_source]\n" + "".join(
            f'{source} = "{every}"\n' for source, every in EVERY_SOURCE.items()
        )
    return (
        f'[api]\nbase_url = "{base_url}"\ntimeout = "60s"\n[storage]\nurl = "{db_url}"\n'
        f"[budget]\n{budget}\n[schedule]\n{schedule}\n{defaults}{creators}"
    )


def creator_entries(count: int) -> str:
    return "".join(f'[[creators]]\nuser_id = "{user(n)}"\n' for n in range(count))


def _load() -> str:
    """The load average (1 min, 5 min): what the neighbours on a shared host were doing."""
    one, five = Path("/proc/loadavg").read_text().split()[:2]
    return f"load {one} / {five}"


def _memory(pid: int) -> tuple[int, int]:
    """RSS and its peak (VmHWM) of process ``pid``, in KiB."""
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of process ``pid`` so far, every thread of it."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    utime, stime = stat.rsplit(")", 1)[1].split()[11:13]
    return (int(utime) + int(stime)) / os.sysconf("SC_CLK_TCK")


@contextlib.asynccontextmanager
async def daemon_process(folder: Path, config: Path) -> AsyncIterator[tuple[int, float]]:
    """``creator-monitor -c config run`` as a process of its own, yielded once it said
    READY=1 (sd_notify): its pid and the seconds from exec to READY. Stopped with SIGTERM."""
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
        yield proc.pid, time.monotonic() - started
    finally:
        if proc.returncode is None:
            proc.terminate()
        await proc.wait()
        sock.close()


async def _ready_and_rss(folder: Path, config: Path) -> tuple[float, int, int, float]:
    """READY's seconds, RSS and peak 1 s later, and the CPU the process had used at READY (on a
    busy host the READY time is the neighbours' as much as the daemon's; its CPU much less)."""
    async with daemon_process(folder, config) as (pid, ready):
        cpu = _cpu_seconds(pid)
        await asyncio.sleep(1.0)  # settled: the first dispatch has run
        rss, peak = _memory(pid)
    return ready, rss, peak, cpu


def _compile() -> None:
    """As installed (pip compiles at install): a source tree run under PYTHONDONTWRITEBYTECODE
    would otherwise compile every module of the package again on each start."""
    compileall.compile_dir(str(Path(monitor.__file__).parent), quiet=1)


def _spread(values: list[float], unit: str = "", digits: int = 2) -> str:
    """The median and the range of ``values``: "1.23 s (1.10–1.40)"."""
    middle = statistics.median(values)
    return f"{middle:.{digits}f}{unit} ({min(values):.{digits}f}–{max(values):.{digits}f})"


async def startup(
    folder: Path,
    count: int,
    sources_sets: list[tuple[str, ...]],
    *,
    rounds: int = 1,
    roster: bool = False,
) -> None:
    """Time to READY=1 and RSS of ``creator-monitor run`` with ``count`` tracked creators, for
    each set of sources in turn, ``rounds`` times (each round a first start on a new database,
    then a restart), and the medians: on a shared host the sets are compared in one run."""
    _compile()
    runs = ("first start", "restart")
    figures: dict[tuple[tuple[str, ...], str], list[tuple[float, int, int, float]]] = {}
    # a slow upstream: start-up is measured, not fetching
    async with Simulator(SimKnobs(latency_ms=30_000)) as sim:
        if roster:  # the same creators from a roster file, as a spreadsheet saves it
            rows = "".join(f"{user(n)}\r\n" for n in range(count))
            (folder / "creators.csv").write_text("\ufeffuser_id\r\n" + rows, encoding="utf-8")
            creators = '[roster]\nfiles = ["creators.csv"]\n'
        else:
            creators = creator_entries(count)
        where = "from a roster CSV" if roster else "in config.toml"
        for round_ in range(rounds):
            for sources in sources_sets:
                name = "-".join(sources) + ("-roster" if roster else "")
                db_url = f"sqlite+aiosqlite:///{folder}/big-{name}-{round_}.db"
                await migrate.upgrade(db_url)
                config = folder / f"big-{name}.toml"
                text = config_text(sim.base_url, db_url, sources, creators=creators)
                config.write_text(text, encoding="utf-8")
                for run in runs:
                    ready, rss, peak, cpu = await _ready_and_rss(folder, config)
                    figures.setdefault((sources, run), []).append((ready, rss, peak, cpu))
                    print(
                        f"  round {round_ + 1}, {count:,} creators {where}, "
                        f"sources {','.join(sources)}, {run}: READY after {ready:.2f} s "
                        f"(CPU {cpu:.2f} s), RSS {rss / 1024:.0f} MB (peak {peak / 1024:.0f} MB)"
                        f"  [{_load()}]",
                        flush=True,
                    )
                os.unlink(f"{folder}/big-{name}-{round_}.db")  # a first start each round
    print(f"{count:,} creators {where}, medians of {rounds} (range)  (targets < 3 s, < 120 MB):")
    for (sources, run), values in figures.items():
        ready_s = _spread([v[0] for v in values], " s")
        cpu_s = _spread([v[3] for v in values], " s")
        rss_mb = _spread([v[1] / 1024 for v in values], " MB", 0)
        peak_mb = _spread([v[2] / 1024 for v in values], " MB", 0)
        print(
            f"  sources {','.join(sources)}, {run}: READY {ready_s}, CPU to READY {cpu_s}, "
            f"RSS {rss_mb}, peak {peak_mb}",
            flush=True,
        )


async def sources_rate(
    folder: Path,
    creators: int,
    per_minute: int,
    window: float,
    sources: tuple[str, ...],
    every: str | None = None,
) -> None:
    """A ``creator-monitor run`` process with ``creators`` tracked with ``sources``, all
    first due at start (a backlog of every series), against the simulator with the P1
    upstream (p50 1 s / p99 20 s, hard limit = the budget) and P1's ``[schedule]``: time to
    READY, share of the budget used over ``window`` after the first minute, 302s caused, and
    what was stored per source.

    A new series is first due at its place in its cadence, so the backlog is served oldest
    slot first: with notes every 6 h and the rest every 24 h, the notes come after every
    core and fans slot older than 6 h (25 min at 600/min). ``every`` (one cadence for all
    sources) mixes the three from the first minute."""
    _compile()
    name = "-".join(sources) + (f"-{every}" if every else "")
    db_path = folder / f"sources-{name}.db"
    db_url = f"sqlite+aiosqlite:///{db_path}"
    await migrate.upgrade(db_url)
    knobs = SimKnobs(latency_p50_ms=1000, latency_p99_ms=20_000, calls_per_minute=per_minute)
    async with Simulator(knobs) as sim:
        config = folder / f"sources-{name}.toml"
        text = config_text(
            sim.base_url,
            db_url,
            sources,
            creators=creator_entries(creators),
            budget=f"calls_per_minute = {per_minute}\nburst = 10\ndaily_calls = 1_000_000",
            schedule='grace = "2s"\nmax_in_flight = 128\nretry_attempts = 0',
            every=every,
        )
        config.write_text(text, encoding="utf-8")
        load_before = _load()
        async with daemon_process(folder, config) as (pid, ready):
            ready_rss, _ = _memory(pid)
            while sim.counters().calls == 0:  # noqa: ASYNC110 - polls another object's counter
                await asyncio.sleep(0.01)
            # the first minute holds the start-up burst: measure the steady state after it
            first = time.monotonic() + 60
            await asyncio.sleep(first - time.monotonic())
            cpu_first = _cpu_seconds(pid)
            await asyncio.sleep(window)
            cpu = _cpu_seconds(pid) - cpu_first
            rss, peak = _memory(pid)
            counters = sim.counters()
        load_after = _load()
    sent = [r for r in counters.log if first <= r.monotonic < first + window]
    achieved = len(sent) / (window / 60)
    endpoints = collections.Counter(r.endpoint for r in sent)
    series = creators * len(sources)
    cadences = f"every {every or '24h'}"
    if every is None and sources != ("core",):
        cadences += "".join(f", {source} {e}" for source, e in EVERY_SOURCE.items())
    print(
        f"{creators:,} creators, sources {','.join(sources)} ({series:,} series, all due, "
        f"{cadences}), a creator-monitor run process, budget {per_minute}/min  "
        f"[{load_before}; after: {load_after}]:"
    )
    print(f"  READY after {ready:.2f} s, RSS {ready_rss / 1024:.0f} MB")
    print(
        f"  {len(sent)} calls in {window:.0f} s after the first minute = {achieved:.1f} calls/min "
        f"({', '.join(f'{e} {n}' for e, n in sorted(endpoints.items()))})"
    )
    print(f"  achieved / budget: {achieved / per_minute:.3f}  (target >= 0.95)")
    print(f"  302s caused: {counters.by_code.get('302', 0)}  (target 0)")
    print(f"  most in any 60 s at the simulator: {counters.max_in_window(MINUTE)}")
    every_call = collections.Counter(r.endpoint for r in counters.log)
    print(
        f"  backlog: {counters.calls} calls in all "
        f"({', '.join(f'{e} {n}' for e, n in sorted(every_call.items()))}) "
        f"for {series:,} due series; daemon CPU "
        f"{cpu / window:.0%} of a core in the window, RSS {rss / 1024:.0f} MB "
        f"(peak {peak / 1024:.0f} MB)"
    )
    print(f"  stored: {_stored(db_path)}", flush=True)


def _stored(db_path: Path) -> str:
    """What the run stored, per source: answered fetches and their rows."""
    with contextlib.closing(sqlite3.connect(db_path)) as db:
        fetches = dict(
            db.execute("SELECT source, count(*) FROM fetches WHERE code = 0 GROUP BY source")
        )
        rows = {
            table: db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            for table in (
                "daily_metrics",
                "follower_counts",
                "notes",
                "note_observations",
                "balance_readings",
            )
        }
    answered = ", ".join(f"{source} {n}" for source, n in sorted(fetches.items()))
    return f"answered fetches {answered}; rows " + ", ".join(f"{t} {n}" for t, n in rows.items())


_RESULTS: dict[str, float] = {}


async def main(args: argparse.Namespace) -> None:
    creators, quick = 2_000, args.quick
    count = args.creators or (10_000 if quick else 100_000)
    sources_sets = [("core",), tuple(args.sources.split(","))]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if args.startup_only:
            await startup(folder, count, sources_sets, rounds=args.rounds)
            await startup(folder, count, sources_sets, roster=True)
            return
        per_minute, window = (120, 30.0) if quick else (600, 120.0)
        if args.sources_only:
            many = 1_000 if quick else 10_000
            for sources in (("core",), ALL_SOURCES):
                await sources_rate(folder, many, per_minute, window, sources)
            await sources_rate(folder, many, per_minute, window, ALL_SOURCES, every="6h")
            return
        if args.defaults_only or not quick:
            for p50_ms in (500.0, 1000.0):
                await default_rate(folder, creators, per_minute, p50_ms, window)
            await default_rate(folder, 200, 30, 1000.0, window)
            if args.defaults_only:
                return
        print(f"budget {per_minute} calls/min, simulator latency p50 1 s / p99 20 s, hard limit")
        await daemon_rate(folder, creators, per_minute, window)
        await sequential_rate(15.0 if quick else 60.0, creators)
        await sources_rate(folder, 1_000 if quick else 10_000, per_minute, window, ALL_SOURCES)
        await startup(folder, count, sources_sets, rounds=args.rounds)


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
        "--sources-only",
        action="store_true",
        help="measure only the every-source runs (core alone, then core, fans and notes)",
    )
    parser.add_argument(
        "--creators", type=int, default=None, help="tracked creators for the start-up run"
    )
    parser.add_argument(
        "--sources",
        default="core,fans",
        help="the sources whose start-up is measured beside core alone (default core,fans)",
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="start-up rounds, the sets alternating (default 3)"
    )
    asyncio.run(main(parser.parse_args()))
