"""The crash drill: ``creator-monitor run`` (a real subprocess) against the simulator under load,
SIGKILLed at random moments and restarted; after each kill the SQLite file is checked against
what the simulator answered and what the receiver got. A last run ends with SIGTERM and must
deliver everything that was still queued.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo

from support.receiver import Receiver
from support.wait import until
from support.zygote import Child, spawn

from drills.tally import Tally, dump, integrity, query
from monitor.store import migrate
from monitor.upstream.simulator import SimKnobs, Simulator

SHANGHAI = ZoneInfo("Asia/Shanghai")
HOOK_SECRET = "H00kS3cretPath"


@dataclass
class Daemon:
    """One ``creator-monitor run`` subprocess and everything it wrote to stderr."""

    config: Path
    token: str
    stderr: list[str] = field(default_factory=list)
    process: Child | None = None
    _reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
        env["JUSTONEAPI_TOKEN"] = self.token
        self.process = await spawn(
            sys.executable,
            "-m",
            "monitor",
            "-c",
            str(self.config),
            "run",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        assert self.process is not None
        assert self.process.stderr is not None
        async for line in self.process.stderr:
            self.stderr.append(line.decode(errors="replace"))

    async def stop(self, sig: signal.Signals, timeout: float = 60) -> int:
        assert self.process is not None
        self.process.send_signal(sig)
        code = await asyncio.wait_for(self.process.wait(), timeout=timeout)
        if self._reader is not None:
            await asyncio.wait_for(self._reader, timeout=10)
        return code


def write_config(path: Path, *, base_url: str, db: Path, hook: str, creators: int) -> None:
    lines = [
        f'[api]\nbase_url = "{base_url}"\ntimeout = "5s"\n',
        "[budget]\ncalls_per_minute = 600\nburst = 20\ndaily_calls = 100000\n",
        f'[storage]\nurl = "sqlite+aiosqlite:///{db}"\n',
        '[schedule]\nmax_in_flight = 8\nretry_base = "1s"\nretry_max = "2s"\n',
        '[defaults]\nevery = "10s"\n',
        f'[[channels]]\nname = "hook"\nurl = "{hook}"\n',
        '[notify]\ngroup_wait = "1s"\ngroup_interval = "1s"\n',
        # one message per creator: each stored message is matched to what the receiver got
        '[[rules]]\nname = "engaged"\nkind = "threshold"\nmetric = "engage"\nop = ">"\n'
        'value = 0\nseverity = "info"\ngroup_by = ["rule", "creator"]\n',
    ]
    lines += [
        f'[[creators]]\nuser_id = "5c3bf7f7{n:016x}"\nname = "creator-{n:03d}"\n'
        for n in range(creators)
    ]
    path.write_text("\n".join(lines), encoding="utf-8")
    path.chmod(0o600)


async def crash_drill(
    directory: Path,
    token: str,
    *,
    kills: int = 3,
    creators: int = 60,
    seed: int = 7,
    max_wait: float = 6.0,
) -> Tally:
    tally = Tally("crash (SIGKILL)")
    rng = random.Random(seed)
    db, cfg = directory / "crash.db", directory / "config.toml"
    await migrate.upgrade(f"sqlite+aiosqlite:///{db}")
    knobs = SimKnobs(seed=seed, latency_p50_ms=60, latency_p99_ms=400)
    async with Simulator(knobs) as sim, Receiver() as receiver:
        hook = receiver.url(f"/hooks/{HOOK_SECRET}")
        write_config(cfg, base_url=sim.base_url, db=db, hook=hook, creators=creators)
        daemons: list[Daemon] = []
        for _ in range(kills):
            daemon = Daemon(cfg, token)
            daemons.append(daemon)
            before = sim.counters().calls
            await daemon.start()
            await _first_call(sim, before)
            await asyncio.sleep(rng.uniform(0.2, max_wait))
            await daemon.stop(signal.SIGKILL)
            tally.faults += 1
            check(db, sim, receiver, tally, final=False)
        daemon = Daemon(cfg, token)
        daemons.append(daemon)
        await daemon.start()
        await _settle(db, sim)
        code = await daemon.stop(signal.SIGTERM)
        if code != 0:
            tally.notes.append(f"SIGTERM: exit code {code}")
        check(db, sim, receiver, tally, final=True)
        secrets = [token, hook, HOOK_SECRET]
        tally.leak([line for d in daemons for line in d.stderr], secrets, "daemon stderr")
        tally.leak([dump(db)], secrets, "the database dump")
    return tally


async def _first_call(sim: Simulator, before: int, timeout: float = 30) -> None:
    """Wait until the new process has sent a call (it has started and is working)."""
    await until(lambda: sim.counters().calls > before, timeout, "the daemon's first call")


async def _settle(db: Path, sim: Simulator, timeout: float = 40) -> None:
    """Run until every creator has a committed success and the outbox is empty."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    await _first_call(sim, sim.counters().calls)
    while loop.time() < deadline:
        pending = query(db, "SELECT count(*) FROM notifications WHERE status != 'sent'")[0][0]
        alerts = query(db, "SELECT count(*) FROM alerts")[0][0]
        creators = query(db, "SELECT count(*) FROM creators")[0][0]
        if pending == 0 and alerts == creators:
            return
        await asyncio.sleep(0.5)


def check(db: Path, sim: Simulator, receiver: Receiver, tally: Tally, *, final: bool) -> None:
    """Compare the database with the simulator's log and the receiver's inbox."""
    verdict = integrity(db)
    if verdict != "ok":
        tally.lose(1, f"integrity_check: {verdict}")
    _check_points(db, tally)
    _check_ledger(db, sim, tally)
    _check_outbox(db, receiver, tally, final=final)


def _check_points(db: Path, tally: Tally) -> None:
    # the newest committed success of each series owns exactly its points in daily_metrics
    latest = query(
        db,
        "SELECT f.id, f.points, (SELECT count(*) FROM daily_metrics m WHERE m.fetch_id = f.id) "
        "FROM fetches f WHERE f.code = 0 AND f.id = (SELECT max(g.id) FROM fetches g "
        "WHERE g.code = 0 AND g.creator_id = f.creator_id AND g.business = f.business "
        "AND g.note_type = f.note_type AND g.date_type = f.date_type "
        "AND g.advertise = f.advertise)",
    )
    for fetch_id, points, stored in latest:
        tally.rows_checked += int(str(points))
        if points != stored or not points:
            tally.lose(abs(int(str(points)) - int(str(stored))) or 1, f"fetch {fetch_id} points")


def _check_ledger(db: Path, sim: Simulator, tally: Tally) -> None:
    sent = Counter(r.at.astimezone(SHANGHAI).date().isoformat() for r in sim.counters().log)
    ledger = {
        str(day): int(str(calls)) for day, calls in query(db, "SELECT day, calls FROM budget_days")
    }
    for day, calls in sent.items():
        tally.rows_checked += 1
        if ledger.get(day, 0) < calls:
            tally.breach(
                calls - ledger.get(day, 0),
                f"{day}: ledger {ledger.get(day, 0)} < {calls} calls sent",
            )
    fetches = int(str(query(db, "SELECT count(*) FROM fetches")[0][0]))
    if fetches > sum(sent.values()):
        tally.notes.append(f"{fetches} fetches recorded but only {sum(sent.values())} calls made")


def _check_outbox(db: Path, receiver: Receiver, tally: Tally, *, final: bool) -> None:
    rows = query(db, "SELECT title, status, claimed_until FROM notifications")
    got = Counter(body["title"] for body in receiver.bodies())
    tally.rows_checked += len(rows)
    sent = [str(title) for title, status, _claim in rows if status == "sent"]
    tally.lose(len([t for t in sent if t not in got]), "marked sent but never received")
    if not final:
        return
    waiting = [(str(title), claim) for title, status, claim in rows if status != "sent"]
    # killed between the send and its mark: delivered, and re-sent once the dead process's
    # claim lease ends (the notifier's documented at-least-once window, one per channel)
    window = [title for title, _claim in waiting if title in got]
    if window:
        tally.notes.append(f"at-least-once window: {len(window)} delivered but not marked sent")
    # claimed by a killed process and not delivered: it goes when the claim lease ends
    held = [title for title, claim in waiting if title not in got and claim is not None]
    lost = [title for title, claim in waiting if title not in got and claim is None]
    if held:
        tally.notes.append(f"{len(held)} held by a dead process's claim until its lease ends")
    tally.lose(len(lost), f"still queued after a clean stop: {lost[:3]}")
    # one firing per creator and rule: the title's "[FIRING] who" part names it
    keys = Counter(title.split(":", 1)[0] for title in got.elements())
    extra = sum(n - 1 for n in keys.values() if n > 1)
    tally.duplicate(extra, f"sent twice: {[k for k, n in keys.items() if n > 1][:3]}")
