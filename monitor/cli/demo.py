"""``creator-monitor demo``: the real daemon against the built-in simulator, with a scripted story.

Eight creators on a compressed schedule, with their core metrics, followers and notes; one
creator's reads fall 40 %, one keeps failing (301) then recovers, one loses followers, one posts
a note that becomes a hit, the account runs out of balance and is topped up, and the story ends
with the balance forecast. A local receiver stands in for
Slack. Needs no config, token or network; ends by itself. It always starts from an empty
database: an existing ``--db`` file is refused unless ``--fresh`` replaces it, so its summary
and its alerts are this run's alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import stat
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

from aiohttp import web

from monitor.app import upgrade_schema
from monitor.config import Config, parse_config
from monitor.daemon import Daemon
from monitor.daemon.options import Options
from monitor.display import format_days, format_money
from monitor.errors import ConfigError
from monitor.policy.spend import Funds
from monitor.upstream.simulator import SimKnobs, Simulator

CREATORS = [
    ("5c3bf7f7000000000602fd63", "Lilyy", ["fitness", "tier-a"]),
    ("5a1b2c3d4e5f60718293a4b5", "Mia", ["beauty"]),
    ("5b2c3d4e5f60718293a4b5c6", "Chen Yu", ["food", "tier-a"]),
    ("5d4e5f60718293a4b5c6d7e8", "Xiaoxiao", ["travel"]),
    ("5e5f60718293a4b5c6d7e8f9", "Anna", ["beauty", "tier-a"]),
    ("5f60718293a4b5c6d7e8f901", "Leo", ["tech"]),
    ("60718293a4b5c6d7e8f90112", "Sasha", ["fitness"]),
    ("618293a4b5c6d7e8f9011223", "Momo", ["food"]),
]
FALLING, FLAKY = CREATORS[0], CREATORS[4]
#: a creator whose followers fall, and one who posts a note that becomes a hit
LOSING, POSTING = CREATORS[1], CREATORS[2]
#: what the simulated account holds at the start, and what each billed call takes from it
#: (a few dozen calls' worth: the story's calls spend it, and the account runs out by itself)
START_BALANCE, CALL_PRICE, TOP_UP = Decimal("3.50"), Decimal("0.05"), Decimal("500")
SERIES_QUERY = (
    "SELECT date_key, read, engage FROM daily_metrics d JOIN creators c ON c.id = d.creator_id "
    "WHERE c.name = 'Lilyy' ORDER BY date_key DESC LIMIT 5"
)
#: the story's three alerts (reads fall, keeps failing, out of money) each resolve once
STORY_RESOLUTIONS = 3
DEMO_TOKEN = "demo-token-not-secret"  # noqa: S105 - the simulator accepts any token


def demo_config(base_url: str, db_url: str, hook_url: str) -> Config:
    return parse_config(
        {
            "api": {"base_url": base_url, "timeout": "10s"},
            "budget": {"calls_per_minute": 240, "burst": 8, "daily_calls": 5000},
            "storage": {"url": db_url},
            "schedule": {
                "max_in_flight": 4,
                "retry_attempts": 1,
                "retry_base": "1s",
                "retry_max": "2s",
                "probe_every": "3s",
                "grace": "5s",
            },
            "defaults": {
                "every": "6s",
                "sources": ["core", "fans", "notes"],
                "every_source": {"fans": "12s", "notes": "8s"},
            },
            "creators": [{"user_id": u, "name": n, "tags": t} for u, n, t in CREATORS],
            "channels": [{"name": "demo-slack", "url": hook_url}],
            # the story is a minute long: groups wait seconds, not the default half minute
            "notify": {"group_wait": "2s", "group_interval": "2s"},
            "rules": [
                {
                    "name": "reads-fall",
                    "kind": "change",
                    "metric": "read",
                    "baseline": "previous",
                    "pct": -30,
                    "severity": "warning",
                },
                {
                    "name": "keeps-failing",
                    "kind": "api_error",
                    "consecutive": 3,
                    "severity": "warning",
                },
                {
                    "name": "out-of-money",
                    "kind": "api_error",
                    "codes": [100, 303, 600, 601, 602],
                    "severity": "critical",
                },
                {
                    "name": "followers-fall",
                    "kind": "change",
                    "metric": "fans",
                    "baseline": "previous",
                    "pct": -2,
                    "severity": "warning",
                },
                {"name": "new-notes", "kind": "new_note"},
                {
                    "name": "hit-note",
                    "kind": "note",
                    "metric": "reads",
                    "op": ">=",
                    "value": 10_000,
                    "within": "1d",
                },
            ],
        }
    )


@dataclass
class Receiver:
    """Stands in for Slack: apprise's json:// posts land here."""

    messages: list[dict[str, object]] = field(default_factory=list)
    on_message: Callable[[dict[str, object]], None] | None = None
    story_over: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.messages.append(body)
        if self.on_message is not None:
            self.on_message(body)
        if self.resolved() >= STORY_RESOLUTIONS and self.told("NEW NOTE"):
            self.story_over.set()
        return web.Response(text="ok")

    def resolved(self) -> int:
        return sum(1 for m in self.messages if "RESOLVED" in str(m.get("title", "")))

    def told(self, word: str) -> bool:
        return any(word in str(m.get("title", "")) for m in self.messages)


def say(text: str) -> None:
    print(f"\n▶ {text}", flush=True)


async def _story(sim: Simulator, daemon: Daemon, receiver: Receiver, seconds: float) -> None:
    """The scripted events, paced over ``seconds``; ends early once every alert resolved."""
    started = time.monotonic()
    step = seconds / 8
    await asyncio.sleep(step * 1.5)
    say(f"scripting: {FALLING[1]}'s reads fall 40 %")
    sim.script_change(FALLING[0], metric="read", factor=0.6)
    say(f"scripting: {FLAKY[1]} keeps failing with code 301")
    sim.force_code(FLAKY[0], 301, times=6, endpoint="core")
    say(f"scripting: {LOSING[1]} loses 3 % of their followers")
    sim.script_change(LOSING[0], metric="fans", factor=0.97)
    await asyncio.sleep(step)
    say(f"scripting: {POSTING[1]} posts a note that becomes a hit")
    sim.publish_note(POSTING[0], reads=80_000, tau_hours=0.004, title="一周通勤穿搭 | 小个子")
    await asyncio.sleep(step)
    # the calls spend the account's few CNY; a slow machine's calls are helped along
    if not await _until(lambda: _answered(sim, 601), step * 2):
        say("scripting: the account runs out of balance (code 601)")
        sim.set_balance(0)
    await _until(lambda: _answered(sim, 601), step * 2)
    say("the account ran out of balance (code 601): every call is paused")
    await asyncio.sleep(step * 1.5)
    say(f"scripting: the account is topped up with {format_money(TOP_UP)}")
    sim.set_balance(TOP_UP)
    await asyncio.sleep(step)
    say(f"scripting: {FALLING[1]}'s reads recover")
    sim.clear_script(FALLING[0])
    # a loaded machine may need longer than the script's pace; never past ``seconds`` + 12 s
    left = max(0.0, started + seconds + 12 - time.monotonic())
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(receiver.story_over.wait(), timeout=left)
    await asyncio.sleep(1.0)  # let the last delivery be recorded as sent
    say(forecast(daemon.gate.funds))
    daemon.request_stop()


def _answered(sim: Simulator, code: int) -> bool:
    return any(record.code == code for record in sim.counters().log)


async def _until(done: Callable[[], bool], seconds: float) -> bool:
    """Wait until ``done()`` holds, at most ``seconds``; whether it does."""
    deadline = time.monotonic() + seconds
    while not done() and time.monotonic() < deadline:  # noqa: ASYNC110 - the log has no event
        await asyncio.sleep(0.2)
    return done()


def forecast(funds: Funds) -> str:
    """The balance forecast line: what is left, what a call costs, how long it lasts."""
    if funds.balance is None:
        return "forecast: the balance was not read"
    line = f"forecast: the balance is {format_money(funds.balance, funds.currency)}"
    if funds.price is None or funds.days_left is None:
        return line + "; not enough readings yet to derive the price of a call"
    return (
        f"{line}; a billed call costs {format_money(funds.price, funds.currency, places=4)} "
        f"(derived from {funds.readings} readings), so it lasts "
        f"{format_days(funds.days_left)} days at this plan"
    )


async def _demo(db_path: Path, seconds: float) -> int:
    db_url = f"sqlite+aiosqlite:///{db_path}"
    await upgrade_schema(db_url)
    receiver = Receiver(on_message=lambda m: print(f"  ✉ slack: {m.get('title')}", flush=True))
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    started = time.monotonic()
    try:
        knobs = SimKnobs(
            latency_p50_ms=80, latency_p99_ms=400, balance=START_BALANCE, call_price=CALL_PRICE
        )
        async with Simulator(knobs) as sim:
            config = demo_config(sim.base_url, db_url, f"json://127.0.0.1:{port}/hook")
            options = Options(
                tick=0.25,
                drain_every=0.5,
                evaluate_every=1.0,
                balance_tick=0.5,
                balance_every=timedelta(seconds=4),
                environ={"JUSTONEAPI_TOKEN": DEMO_TOKEN},
            )
            daemon = Daemon(config, options)
            say(
                f"tracking {len(CREATORS)} creators every 6 s against the simulator at "
                f"{sim.base_url}"
            )
            story = asyncio.create_task(_story(sim, daemon, receiver, seconds))
            await daemon.run()
            story.cancel()
            counters = sim.counters()
    finally:
        await runner.cleanup()
    _summary(db_path, counters.calls, counters.billed, receiver, time.monotonic() - started)
    return 0


def _summary(db_path: Path, calls: int, billed: int, receiver: Receiver, took: float) -> None:
    with sqlite3.connect(db_path) as db:
        rows = db.execute("SELECT count(*) FROM daily_metrics").fetchone()[0]
        fetches = db.execute("SELECT count(*) FROM fetches").fetchone()[0]
        readings = db.execute("SELECT count(*) FROM balance_readings").fetchone()[0]
        fired = db.execute("SELECT count(*) FROM alerts WHERE fired_at IS NOT NULL").fetchone()[0]
        resolved = db.execute("SELECT count(*) FROM alerts WHERE state = 'resolved'").fetchone()[0]
        sent = db.execute("SELECT count(*) FROM notifications WHERE status = 'sent'").fetchone()[0]
    print(
        f"""
== demo summary ({took:.0f} s)
calls made      {calls} ({billed} billed), {fetches} attempts recorded, {readings} balance readings
rows stored     {rows} daily points in daily_metrics
alerts          {fired} fired, {resolved} resolved
messages        {sent} delivered ({len(receiver.messages)} received by the stand-in for Slack)

database: {db_path}
try:
  sqlite3 {db_path} "{SERIES_QUERY}"
  sqlite3 {db_path} "SELECT name, date_key, read, engage FROM latest_metrics ORDER BY read DESC"
  sqlite3 {db_path} "SELECT rule, scope, state, fired_at, resolved_at, summary FROM alerts"
{keep_using(db_path)}""",
        flush=True,
    )


def keep_using(db_path: Path) -> str:
    """The closing lines: a config that points at the demo's database, and what to run on it."""
    config = db_path.with_name("demo.toml")
    return f"""
keep using this database: put these lines in {config}
  [storage]
  url = "sqlite+aiosqlite:///{db_path}"
then:
  creator-monitor -c {config} status
  creator-monitor -c {config} history {FALLING[0]} --metric read
"""


#: the first bytes of every SQLite 3 database file
_SQLITE_HEADER = b"SQLite format 3\x00"


def _not_a_database(path: Path) -> str | None:
    """What ``path`` is when --fresh must not delete it (a folder, a device, a FIFO, a file
    that is not a SQLite database: a config typed in the wrong place); None for a database or
    an empty file."""
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        return f"not readable ({exc.strerror})"
    if stat.S_ISDIR(mode):
        return "a folder"
    if not stat.S_ISREG(mode):
        return "not a regular file (a device, a FIFO or a socket)"
    try:
        with path.open("rb") as file:
            head = file.read(len(_SQLITE_HEADER))
    except OSError as exc:
        return f"not readable ({exc.strerror})"
    if head and head != _SQLITE_HEADER:
        return "not a SQLite database"
    return None


def run_demo(db: Path | None, *, seconds: float = 40.0, fresh: bool = False) -> int:
    """Run the story into ``db`` (a new temporary file when None); an existing file is refused
    unless ``fresh``, which replaces it."""
    if db is None:
        folder = Path(tempfile.mkdtemp(prefix="creator-monitor-demo-"))
        return asyncio.run(_demo(folder / "history.db", seconds))
    db = db.resolve()
    if db.exists() or db.is_symlink():
        if not fresh:
            raise ConfigError(
                "demo --db",
                f"{db} exists; add --fresh to replace it, or name a new file",
            )
        if (what := _not_a_database(db)) is not None:
            raise ConfigError(
                "demo --db",
                f"{db} is {what}; --fresh replaces only a SQLite database: name a new file",
            )
        for path in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
            path.unlink(missing_ok=True)
    db.parent.mkdir(parents=True, exist_ok=True)
    return asyncio.run(_demo(db, seconds))
