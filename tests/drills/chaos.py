"""Drill 2, upstream chaos: ``creator-monitor run`` (a real subprocess) against a simulator that
mixes every code and wire fault; the daemon must stay up in bounded memory, record each call in
``fetches`` as what it was, keep inside the budget through 302/601/303, and alert as the rules say.
"""

from __future__ import annotations

import asyncio
import math
import signal
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from support.receiver import Receiver

from drills.crash import Daemon, _check_ledger, _first_call
from drills.tally import Tally, dump, query
from monitor.store import migrate
from monitor.upstream.simulator import FAULT_KINDS, CallRecord, SimKnobs, Simulator

HOOK_SECRET = "Ch40sH00kPath"
TIMEOUT_S = 1.0  # api.timeout: short, so a hang ends in a client timeout within the drill
PROBE_EVERY_S = 2.0
#: how late a call already on the wire when a pause came back may reach the simulator (it runs
#: in the test process, whose loop a loaded host slows)
IN_FLIGHT_SLACK_S = 1.0
CPM, BURST = 240, 8
BROKEN = "0000000000000000000000b1"  # the simulator answers 400 for this prefix
EMPTY = "ffffff000000000000000e01"  # … and 201 for this one
UNDOCUMENTED = "5c3bf7f7000000000000beef"  # forced to an undocumented code on every call
#: the random part of the profile: about half of all calls go wrong somehow
PROFILE = {
    "301": 0.05,
    "500": 0.05,
    "gateway_400": 0.04,
    "html_502": 0.04,
    "truncated": 0.04,
    "hang": 0.03,
    "empty": 0.04,
    "wrong_type": 0.04,
    "huge": 0.02,
    "reset": 0.05,
    "trickle": 0.04,
}
#: what each call the simulator logged must look like in ``fetches`` (see ``row_kind``)
EXPECTED: dict[str, frozenset[str]] = {
    "0": frozenset({"ok"}),
    "trickle": frozenset({"ok", "timeout"}),  # a slow body ends in time or is cut at the deadline
    "wrong_type": frozenset({"parse"}),
    "hang": frozenset({"timeout"}),
    "huge": frozenset({"too_big"}),
    "reset": frozenset({"transport"}),
    "truncated": frozenset({"not_json"}),
    "empty": frozenset({"not_json"}),
    "gateway_400": frozenset({"gateway"}),
    "html_502": frozenset({"http_502"}),
}


def creators(count: int) -> list[str]:
    return [f"5c3bf7f7{n:016x}" for n in range(count)]


def knobs(seed: int) -> SimKnobs:
    return SimKnobs(
        seed=seed,
        latency_p50_ms=20,
        latency_p99_ms=200,
        faults=PROFILE,
        hang_s=TIMEOUT_S * 3,
        huge_bytes=3_000_000,  # over the client's 2 MB limit
        trickle_bytes=160,
        trickle_pause_s=0.1,  # ~40 writes of a 6 kB body: each read quick, the whole ~4 s
    )


def write_config(path: Path, *, base_url: str, db: Path, hook: str, users: list[str]) -> None:
    lines = [
        f'[api]\nbase_url = "{base_url}"\ntimeout = "{TIMEOUT_S:g}s"\n',
        f"[budget]\ncalls_per_minute = {CPM}\nburst = {BURST}\ndaily_calls = 100000\n",
        f'[storage]\nurl = "sqlite+aiosqlite:///{db}"\n',
        "[schedule]\nmax_in_flight = 8\nretry_attempts = 2\n"
        f'retry_base = "1s"\nretry_max = "2s"\nprobe_every = "{PROBE_EVERY_S:g}s"\ngrace = "10s"\n',
        '[defaults]\nevery = "4s"\n',
        f'[[channels]]\nname = "hook"\nurl = "{hook}"\n',
        '[notify]\ngroup_wait = "1s"\ngroup_interval = "1s"\n',
        # one message per creator, so each one's title can be matched at the receiver
        '[[rules]]\nname = "engaged"\nkind = "threshold"\nmetric = "engage"\nop = ">"\n'
        'value = 0\nseverity = "info"\ngroup_by = ["rule", "creator"]\n',
        '[[rules]]\nname = "out-of-money"\nkind = "api_error"\ncodes = [601, 602, 100]\n'
        'severity = "critical"\n',
        # the drill's broken bodies are paid answers this version cannot read: told per
        # creator here (replacing the built-in answer-unreadable), so titles match one by one
        '[[rules]]\nname = "unreadable"\nkind = "api_error"\ncodes = [0]\n'
        'group_by = ["rule", "creator"]\n',
    ]
    lines += [f'[[creators]]\nuser_id = "{u}"\n' for u in users]
    path.write_text("\n".join(lines), encoding="utf-8")
    path.chmod(0o600)


# --------------------------------------------------------------------------- watching the process


@dataclass
class Watch:
    """RSS samples of the daemon process (kB), and whether it was alive at each."""

    samples: list[int] = field(default_factory=list)
    died: bool = False

    async def run(self, daemon: Daemon, stop: asyncio.Event, every: float = 0.2) -> None:
        assert daemon.process is not None
        status = Path(f"/proc/{daemon.process.pid}/status")
        while not stop.is_set():
            if daemon.process.returncode is not None:
                self.died = True
                return
            self.samples.append(_rss_kb(status))
            await asyncio.sleep(every)

    def growth_kb(self) -> int:
        """Peak of the second half over peak of the first: a leak keeps climbing."""
        half = len(self.samples) // 2
        if half < 2:
            return 0
        return max(self.samples[half:]) - max(self.samples[:half])


def _rss_kb(status: Path) -> int:
    try:
        for line in status.read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


# --------------------------------------------------------------------------- the drill


@dataclass
class Events:
    """Simulator-log times of the account-wide answers the drill forced."""

    t601: float | None = None
    #: the first 302 or 303 of the end phase: either pauses every call (60 s or to midnight)
    t_pause: float | None = None


async def chaos_drill(
    directory: Path,
    token: str,
    *,
    seconds: float = 12.0,
    users: int = 16,
    seed: int = 11,
    max_rss_mb: int = 250,
) -> tuple[Tally, Watch]:
    tally = Tally("upstream chaos")
    db, cfg = directory / "chaos.db", directory / "config.toml"
    await migrate.upgrade(f"sqlite+aiosqlite:///{db}")
    people = [*creators(users), BROKEN, EMPTY, UNDOCUMENTED]
    async with Simulator(knobs(seed)) as sim, Receiver() as receiver:
        hook = receiver.url(f"/hooks/{HOOK_SECRET}")
        write_config(cfg, base_url=sim.base_url, db=db, hook=hook, users=people)
        # every wire fault at least once, whatever the dice say: one per creator, first call
        for user, kind in zip(people, FAULT_KINDS, strict=False):
            sim.force_code(user, kind, times=1)
        sim.force_code(UNDOCUMENTED, 503)
        daemon, watch, stop = Daemon(cfg, token), Watch(), asyncio.Event()
        await daemon.start()
        await _first_call(sim, 0)
        watcher = asyncio.get_running_loop().create_task(watch.run(daemon, stop))
        events = await _script(sim, people, seconds)
        stop.set()
        await watcher
        alive = daemon.process is not None and daemon.process.returncode is None
        code = await daemon.stop(signal.SIGTERM) if alive else -1
        if watch.died or code != 0:
            tally.lose(1, f"the daemon did not stay up (exit {code})")
        log = sim.counters().log
        tally.faults = sum(1 for r in log if _sim_kind(r) != "0")
        _check_fetches(db, log, tally)
        _check_budget(sim, log, events, tally)
        _check_ledger(db, sim, tally)
        _check_alerts(db, receiver, tally)
        _check_memory(watch, max_rss_mb, tally)
        stderr = daemon.stderr
        secrets = [token, hook, HOOK_SECRET]
        if any("Traceback" in line for line in stderr):
            # with what it was, for whoever reads the failure (secrets masked: a leak is its
            # own note below)
            at = next(i for i, line in enumerate(stderr) if "Traceback" in line)
            shown = "".join(stderr[max(0, at - 3) : at + 40])
            for secret in secrets:
                shown = shown.replace(secret, "***")
            tally.notes.append(f"a traceback reached stderr:\n{shown}")
        tally.leak(stderr, secrets, "daemon stderr")
        tally.leak([dump(db)], secrets, "the database dump")
    return tally, watch


async def _script(sim: Simulator, people: list[str], seconds: float) -> Events:
    """Chaos for ``seconds``: a 601 (pause, probe, resume) a third in; at the end a 302 and a
    303 on two creators: whichever comes first must stop every call for the rest of the run."""
    events = Events()
    started = time.monotonic()
    await asyncio.sleep(seconds / 3)
    sim.force_code(people[11], 601, times=1)
    events.t601 = await _answered(sim, {601})
    await asyncio.sleep(max(0.0, seconds - 3.0 - (time.monotonic() - started)))
    sim.force_code(people[12], 302)
    sim.force_code(people[13], 303)
    events.t_pause = await _answered(sim, {302, 303})
    await asyncio.sleep(2.5)  # the pause must hold: nothing more goes out
    return events


async def _answered(sim: Simulator, codes: set[int], timeout: float = 15) -> float | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        hits = [r.monotonic for r in sim.counters().log if r.code in codes and r.fault is None]
        if hits:
            return hits[0]
        await asyncio.sleep(0.02)
    return None


# --------------------------------------------------------------------------- the checks


def _sim_kind(record: CallRecord) -> str:
    return record.fault or str(record.code)


def row_kind(code: object, http_status: object, error: object) -> str:
    """What a ``fetches`` row says happened, in the simulator's vocabulary."""
    text = str(error or "")
    if code == 0:
        return "parse" if error else "ok"
    if code is not None:
        return str(code)
    if "larger than" in text:
        return "too_big"
    if "Timeout" in text or "api.timeout sets the limit" in text:
        return "timeout"
    if http_status == 502:
        return "http_502"
    if "gateway error" in text:
        return "gateway"
    if "not JSON" in text:
        return "not_json"
    return "transport"


def _check_fetches(db: Path, log: tuple[CallRecord, ...], tally: Tally) -> None:
    """Each creator's calls, in order, against its ``fetches`` rows, in order."""
    rows = query(
        db,
        "SELECT c.user_id, f.code, f.http_status, f.error FROM fetches f "
        "JOIN creators c ON c.id = f.creator_id ORDER BY f.id",
    )
    stored: dict[str, list[str]] = defaultdict(list)
    for user, code, status, error in rows:
        stored[str(user)].append(row_kind(code, status, error))
    sent: dict[str, list[str]] = defaultdict(list)
    for record in log:
        if record.endpoint == "core":  # the balance readings are no creator's fetches
            sent[record.user_id or "?"].append(_sim_kind(record))
    for user in sorted(set(sent) | set(stored)):
        calls, kept = sent[user], stored[user]
        tally.rows_checked += len(calls)
        tally.lose(max(0, len(calls) - len(kept)), f"{user[-4:]}: calls missing from fetches")
        if len(kept) > len(calls):
            tally.notes.append(f"{user[-4:]}: {len(kept) - len(calls)} fetches never sent")
        wrong = [
            (want, got)
            for want, got in zip(calls, kept, strict=False)
            if got not in EXPECTED.get(want, frozenset({want}))
        ]
        tally.lose(len(wrong), f"{user[-4:]}: recorded as something else {wrong[:3]}")


def _check_budget(
    sim: Simulator, log: tuple[CallRecord, ...], events: Events, tally: Tally
) -> None:
    counters = sim.counters()
    # the token bucket: in any w seconds at most burst + rate × w (+1: send vs arrival jitter)
    for window in (1.0, 5.0, 10.0, 60.0):
        most = counters.max_in_window(timedelta(seconds=window))
        bound = BURST + math.floor(CPM * window / 60) + 1
        if window == 60.0:
            bound = CPM
        tally.breach(max(0, most - bound), f"{most} calls in {window:g} s (bound {bound})")
    if events.t601 is not None:
        # not a budget matter (a 601 is not billed): the budget resumes on ANY billed answer,
        # also that of a call sent before the 601 came back (budget.on_result → _resume)
        early = _during(log, events.t601, PROBE_EVERY_S - 0.3)
        if early:
            tally.notes.append(f"601: {len(early)} calls before the probe was due")
    if events.t_pause is not None:
        # the calls on the wire when the pause came back (max_in_flight) may still land: by the
        # simulator's clock a loaded host showed one 0.3-1 s after it, so they get a second;
        # a gate that let calls through would keep sending at 4/s for the pause's 2.5 s
        during = _during(log, events.t_pause, math.inf, slack=IN_FLIGHT_SLACK_S)
        lags = [round(r.monotonic - events.t_pause, 2) for r in during]
        tally.breach(len(during), f"302/303 pause: {Counter(map(_sim_kind, during))} at +{lags} s")
    if events.t601 is None or events.t_pause is None:
        tally.notes.append(f"a forced account answer never came: {events}")


def _during(
    log: tuple[CallRecord, ...], start: float, length: float, *, slack: float = 0.3
) -> list[CallRecord]:
    """Calls that arrived in a pause, bar those already past the gate (``slack`` seconds)."""
    return [r for r in log if start + slack < r.monotonic < start + length]


def _check_alerts(db: Path, receiver: Receiver, tally: Tally) -> None:
    """``engaged`` fires for exactly the creators with stored data; the 601 fires at most one
    alert, for the account and not per creator; nothing else fires; every notification was
    delivered, none twice."""
    alerts = query(db, "SELECT rule, creator_id FROM alerts")
    with_data = {row[0] for row in query(db, "SELECT DISTINCT creator_id FROM daily_metrics")}
    engaged = [creator for rule, creator in alerts if rule == "engaged"]
    account = [creator for rule, creator in alerts if rule == "out-of-money"]
    # the built-in account alert covers what no configured rule does: here the closing 303
    builtin = [creator for rule, creator in alerts if rule == "account-blocked"]
    tally.misalert(len(builtin) - builtin.count(None) + max(0, len(builtin) - 1), "303 alerts")
    # the built-in alert on a paid answer this version could not read (the drill's broken
    # bodies): only for a creator one of whose paid answers (code 0) failed
    unreadable = [creator for rule, creator in alerts if rule == "unreadable"]
    broke = {
        row[0]
        for row in query(db, "SELECT creator_id FROM fetches WHERE code = 0 AND error IS NOT NULL")
    }
    tally.misalert(len(set(unreadable) - broke), "'unreadable' for a creator without one")
    allowed = ("engaged", "out-of-money", "account-blocked", "unreadable")
    others = [rule for rule, _creator in alerts if rule not in allowed]
    tally.rows_checked += len(alerts)
    tally.misalert(len(set(engaged) - with_data), "'engaged' for a creator without data")
    tally.misalert(len(others), f"alerts of rules that cannot fire: {others[:3]}")
    per_creator = [c for c in account if c is not None]
    tally.misalert(len(per_creator) + max(0, len(account) - 1), "601 alerted more than once")
    missing = with_data - set(engaged)
    tally.misalert(len(missing), "creators with data and no 'engaged' alert")
    if not account:
        # the account rules run every 60 s in ``run``; the drill's 601 pause ends sooner
        tally.notes.append("601: pause shorter than the 60 s account evaluation, no alert")
    rows = query(db, "SELECT title, status FROM notifications")
    got = Counter(str(body["title"]) for body in receiver.bodies())
    tally.rows_checked += len(rows)
    tally.lose(sum(1 for t, s in rows if s != "sent" or got[str(t)] == 0), "not delivered")
    tally.duplicate(sum(n - 1 for n in got.values() if n > 1), "a notification sent twice")


def _check_memory(watch: Watch, max_rss_mb: int, tally: Tally) -> None:
    if not watch.samples:
        tally.notes.append("no RSS sample taken")
        return
    peak = max(watch.samples) // 1024
    tally.rows_checked += len(watch.samples)
    if peak > max_rss_mb:
        tally.lose(1, f"RSS peaked at {peak} MB (bound {max_rss_mb} MB)")


def summary(watch: Watch) -> Callable[[], str]:
    return lambda: (
        f"RSS peak {max(watch.samples, default=0) // 1024} MB, "
        f"growth {watch.growth_kb() // 1024} MB over {len(watch.samples)} samples"
    )
