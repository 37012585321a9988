"""How many fetches may be under way at once: ``schedule.max_in_flight``, fixed or "auto".

"auto" sizes the pool by Little's law from the budget's rate and the observed call latency (the
mean of the last calls, so it follows the upstream as it speeds up or slows down), with headroom,
within a cap. Pure:
no I/O, no clock. It never decides whether a call may go: the budget gate does that for every
call; this only lets enough calls be in flight for the budget to be used.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

from monitor.config import Config

#: the most fetches "auto" ever allows (and the HTTP pool's size then)
AUTO_CAP = 64
#: the latency assumed before the first answer (the vendor's typical call takes about a second)
INITIAL_LATENCY = 1.0
#: the latency is the mean of this many last calls: a plain mean, because Little's law wants the
#: mean and a long tail (p99 twenty times p50) drags an average of few samples far below it
WINDOW = 256
#: multiplier on the mean calls in flight, plus three standard deviations of their (Poisson-like)
#: count: a long-tailed upstream's calls bunch, and a pool a call too small wastes budget, while
#: a slot too many costs only a task waiting for the budget (connections open only when used)
HEADROOM = 1.5


def needed_in_flight(calls_per_minute: float, latency: float, *, cap: int = AUTO_CAP) -> int:
    """Fetches needed to keep ``calls_per_minute`` going when a call takes ``latency`` seconds on
    average: Little's law (L = λW) with headroom, at least 1 and at most ``cap``."""
    mean = calls_per_minute / 60 * max(0.0, latency)
    return max(1, min(cap, math.ceil(mean * HEADROOM + 3 * math.sqrt(mean)) + 1))


@dataclass(slots=True)
class InFlightSizer:
    """The limit on concurrent fetches: a fixed ``max_in_flight``, or sized from latency."""

    calls_per_minute: int
    fixed: int | None = None  # an integer max_in_flight: the limit, whatever the latency
    recent: deque[float] = field(default_factory=lambda: deque(maxlen=WINDOW))
    total: float = 0.0  # the sum of ``recent``
    observed: int = 0

    @property
    def latency(self) -> float:
        """Seconds: the mean latency of the last ``WINDOW`` calls (a guess before the first)."""
        return self.total / len(self.recent) if self.recent else INITIAL_LATENCY

    @classmethod
    def from_config(cls, config: Config) -> InFlightSizer:
        sizer = cls(config.budget.calls_per_minute)
        sizer.retune(config)
        return sizer

    def retune(self, config: Config) -> None:
        """A reloaded config: its rate and mode; the latency learnt so far is kept."""
        self.calls_per_minute = config.budget.calls_per_minute
        setting = config.schedule.max_in_flight
        self.fixed = None if setting == "auto" else int(setting)

    def observe(self, seconds: float) -> None:
        """One call's latency (answered or failed on the wire)."""
        seconds = max(0.0, seconds)
        if len(self.recent) == WINDOW:
            self.total -= self.recent[0]
        self.recent.append(seconds)
        self.total += seconds
        self.observed += 1
        if self.observed % WINDOW == 0:  # a fresh sum now and then: no rounding drift
            self.total = math.fsum(self.recent)

    def limit(self) -> int:
        if self.fixed is not None:
            return self.fixed
        return needed_in_flight(self.calls_per_minute, self.latency)


def pool_size(config: Config) -> int:
    """HTTP connections to allow: one per possible fetch, and one for the balance reading, so
    it never waits in the pool behind fetches (connections open only when used)."""
    setting = config.schedule.max_in_flight
    fetches = AUTO_CAP if setting == "auto" else int(setting)
    return fetches + (0 if config.account.balance_every is None else 1)
