"""Clock faults on the pure budget and cadence: the wall clock jumps forward a day or back an
hour while a dispatcher-like loop spends the budget on a grid of due slots.

True (elapsed) time is kept apart from the wall clock the code is given, so a burst is measured
as the upstream would see it: calls in any 60 s of real time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

from drills.tally import Tally
from monitor import cadence
from monitor.budget import Budget, day_of
from monitor.model import Variant

ZONE = ZoneInfo("Asia/Shanghai")
#: 23:50 in Shanghai: a jump of an hour back or a day forward crosses a quota day
START = datetime(2025, 12, 11, 15, 50, tzinfo=UTC)
STEP = 0.25  # seconds of true time per loop turn


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


def run(
    budget: Budget,
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
    state = budget.initial(START)
    keys = [cadence.slot_key(f"5c3bf7f7{n:016x}", Variant()) for n in range(slots)]
    due = {key: cadence.first_due(key, every, START) for key in keys}
    result = Run(duration=duration)
    true = 0.0
    while true < duration:
        wall = START + timedelta(seconds=true) + (jump if true >= jump_at else timedelta(0))
        day = day_of(wall, ZONE)
        calls = result.ledger.get(day, 0)
        delay = budget.acquire_delay(state, wall, calls)
        entries = [cadence.DueEntry(key, at) for key, at in due.items()] if delay <= 0 else []
        for entry in cadence.pick_due(entries, wall, 1):
            state = budget.spend(state, wall, calls)
            result.sends.append(true)
            result.ledger[day] = calls + 1
            result.served.append((entry.key, entry.due_at))
            due[entry.key] = cadence.next_due(entry.due_at, every, wall)
        # skip the turns the budget would sleep through anyway (never across the jump)
        turns = max(1, int(delay / STEP))
        if true < jump_at:
            turns = min(turns, max(1, int((jump_at - true) / STEP)))
        true += turns * STEP
    wall = START + timedelta(seconds=duration) + jump
    result.backlog_at_end = sum(1 for at in due.values() if at <= wall)
    return result


def score(name: str, budget: Budget, outcome: Run, tally: Tally) -> None:
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


def budget(calls_per_minute: int = 30, burst: int = 5) -> Budget:
    return Budget(calls_per_minute=calls_per_minute, burst=burst, daily_calls=1_000_000, zone=ZONE)


def clock_drill(minutes: float = 10.0) -> tuple[Tally, dict[str, Run]]:
    """Three runs: a steady clock, a jump forward by a day, a jump back by an hour."""
    tally = Tally("clock faults")
    b = budget()
    runs = {
        "steady": run(b, jump=timedelta(0), jump_at=1e12, duration=minutes * 60),
        "forward 1 day": run(b, jump=timedelta(days=1), jump_at=300, duration=minutes * 60),
        "back 1 hour": run(b, jump=-timedelta(hours=1), jump_at=300, duration=minutes * 60),
    }
    for name, outcome in runs.items():
        score(name, b, outcome, tally)
    return tally, runs
