"""How the daemon runs: its clock, its sleep and its intervals; tests and the demo shrink them."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from monitor.ops.wallclock import Clock, Monotonic

Sleep = Callable[[float], Awaitable[None]]


def system_clock() -> datetime:
    return datetime.now(UTC)


@dataclass
class Options:
    """How the daemon runs; tests and the demo shrink the intervals."""

    clock: Clock = system_clock
    #: how the dispatcher, the gate and retries wait; tests pass one that moves ``clock``
    sleep: Sleep = asyncio.sleep
    #: tells steps of ``clock`` from elapsed time (None: ``clock`` is never stepped)
    monotonic: Monotonic | None = time.monotonic
    tick: float = 5.0  # longest dispatcher nap, seconds (it wakes early for due work)
    drain_every: float = 5.0
    evaluate_every: float = 60.0
    report_every: float = 60.0  # how often ended report periods are looked for
    balance_tick: float = 20.0  # how often the balance job looks whether a reading is due
    #: read the balance this often instead of ``[account] balance_every`` (the demo's minute
    #: is seconds long; the config's floor is a minute)
    balance_every: timedelta | None = None
    until: Callable[[], bool] | None = None  # the demo's "story is over" predicate
    config_path: Path | None = None  # for SIGHUP reloads
    environ: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    health_timeout: float = 5.0  # /healthz answers 503 when the database write takes longer
