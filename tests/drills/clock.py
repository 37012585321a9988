"""Clock faults on the real BudgetGate over a real SQLite ledger, and the cadence: the wall clock
jumps forward a day or back an hour while a dispatcher-like loop spends the budget on a grid of
due slots.

True (elapsed) time is kept apart from the wall clock the code is given: the gate gets the wall
clock and a monotonic clock that reads true time, and its sleeps move true time on. A burst is
measured as the upstream would see it: calls in any 60 s of true time.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import count, pairwise
from pathlib import Path
from zoneinfo import ZoneInfo

from support.store import first_due

from drills.tally import Tally
from monitor.model import Variant
from monitor.policy import cadence
from monitor.policy.budget import BudgetPolicy
from monitor.service.fetching.gate import BudgetGate
from monitor.store import Store, migrate

ZONE = ZoneInfo("Asia/Shanghai")
#: 23:45 in Shanghai: a jump of an hour back or a day forward crosses a quota day, and ten
#: minutes after it is still the same day (a day forward ends at 23:55 the next day)
START = datetime(2025, 12, 11, 15, 45, tzinfo=UTC)
#: true seconds into a run when the wall clock is stepped: mid-minute, with the window full
JUMP_AT = 330.0
STEP = 0.25  # seconds of true time the loop waits when nothing is due
_RUNS = count()


@dataclass(frozen=True, slots=True)
class _Due:
    """A series as ``cadence.pick_due`` orders it: its name and when it is due."""

    key: str
    due_at: datetime


@dataclass
class Run:
    """What the loop did: send times in true seconds, the ledger, and served (slot, due) pairs."""

    sends: list[float] = field(default_factory=list)
    ledger: dict[str, int] = field(default_factory=dict)
    served: list[tuple[str, datetime]] = field(default_factory=list)

    def max_in_minute(self) -> int:
        best, first = 0, 0
        for last, moment in enumerate(self.sends):
            while moment - self.sends[first] >= 60:
                first += 1
            best = max(best, last - first + 1)
        return best

    backlog_at_end: int = 0
    duration: float = 0.0

    def longest_gap(self) -> float:
        """The longest real time without a call, the end of the run included."""
        times = [0.0, *self.sends, self.duration]
        return max(b - a for a, b in pairwise(times))


class Clocks:
    """True time, and a wall clock that is stepped by ``jump`` once true time passes ``at``."""

    def __init__(self, jump: timedelta, at: float) -> None:
        self.true = 0.0
        self.jump = jump
        self.at = at

    def wall(self) -> datetime:
        stepped = self.jump if self.true >= self.at else timedelta(0)
        return START + timedelta(seconds=self.true) + stepped

    def monotonic(self) -> float:
        return self.true

    async def sleep(self, seconds: float) -> None:
        self.true += max(seconds, 1e-6)


async def run(
    folder: Path,
    budget: BudgetPolicy,
    *,
    jump: timedelta,
    jump_at: float,
    duration: float,
    slots: int = 600,
    every: timedelta = timedelta(hours=2),
) -> Run:
    """Spend the budget on ``slots`` series due every ``every``; the wall clock jumps once.

    600 series every 2 h is 5 calls a minute on average, but all of them start overdue (spread
    over the last 2 h), so there is a backlog older than an hour all along: a stall is the
    budget's doing, not the cadence's.
    """
    url = f"sqlite+aiosqlite:///{folder}/clock-{next(_RUNS)}.db"
    await migrate.upgrade(url)
    clocks = Clocks(jump, jump_at)
    store = Store.open(url, clock=clocks.wall)
    gate = await BudgetGate.open(
        budget, store, clock=clocks.wall, sleep=clocks.sleep, monotonic=clocks.monotonic
    )
    keys = [cadence.slot_key(f"5c3bf7f7{n:016x}", Variant()) for n in range(slots)]
    due = {key: first_due(key, every, START) for key in keys}
    result = Run(duration=duration)
    try:
        while clocks.true < duration:
            entries = [_Due(key, at) for key, at in due.items()]
            picked = cadence.pick_due(entries, clocks.wall(), 1)
            if not picked:
                await clocks.sleep(STEP)
                continue
            await gate.acquire()
            gate.answered()
            entry = picked[0]
            result.sends.append(clocks.true)
            result.served.append((entry.key, entry.due_at))
            due[entry.key] = cadence.next_due(entry.due_at, every, clocks.wall())
    finally:
        await store.close()
    with sqlite3.connect(url.removeprefix("sqlite+aiosqlite:///")) as db:
        result.ledger = dict(db.execute("SELECT day, calls FROM budget_days ORDER BY day"))
    wall = clocks.wall()
    result.backlog_at_end = sum(1 for at in due.values() if at <= wall)
    return result


def score(name: str, budget: BudgetPolicy, outcome: Run, tally: Tally) -> None:
    tally.faults += 1
    tally.rows_checked += len(outcome.sends)
    over = outcome.max_in_minute() - budget.calls_per_minute
    tally.breach(max(0, over), f"{name}: {outcome.max_in_minute()} calls in one real minute")
    unledgered = len(outcome.sends) - sum(outcome.ledger.values())
    tally.lose(unledgered, f"{name}: calls not in the ledger")
    served = outcome.served
    tally.duplicate(len(served) - len(set(served)), f"{name}: a slot served twice for one due time")
    # every series starts overdue, so a long silence means the budget held due work back
    if outcome.longest_gap() > 120:
        tally.notes.append(
            f"{name}: no call for {outcome.longest_gap():.0f} s of real time with series due "
            f"({outcome.backlog_at_end} still due at the end)"
        )


def budget(calls_per_minute: int = 30, burst: int = 5) -> BudgetPolicy:
    return BudgetPolicy(
        calls_per_minute=calls_per_minute, burst=burst, daily_calls=1_000_000, zone=ZONE
    )


async def clock_drill(folder: Path, minutes: float = 10.0) -> tuple[Tally, dict[str, Run]]:
    """Three runs: a steady clock, a jump forward by a day, a jump back by an hour."""
    tally = Tally("clock faults")
    b = budget()
    seconds = minutes * 60
    runs = {
        "steady": await run(folder, b, jump=timedelta(0), jump_at=1e12, duration=seconds),
        "forward 1 day": await run(
            folder, b, jump=timedelta(days=1), jump_at=JUMP_AT, duration=seconds
        ),
        "back 1 hour": await run(
            folder, b, jump=-timedelta(hours=1), jump_at=JUMP_AT, duration=seconds
        ),
    }
    for name, outcome in runs.items():
        score(name, b, outcome, tally)
    return tally, runs
