"""Steps of the wall clock, noticed by comparing it with a monotonic clock.

The budget's bucket and 60 s window, the 302 slow-down, the account probe's pace and the
daemon's interval jobs are about elapsed time, but they are stamped with wall-clock datetimes
(persisted, shown by ``status``, shared through PostgreSQL). When the wall clock is stepped (NTP
correcting a wrong clock, an operator, a VM resumed) those stamps suddenly lie: a step forward
would refill the bucket and empty the window at once, a step back would freeze both until the
wall clock caught up. Whoever holds such stamps asks ``WallJumps.check`` and moves them by the
step; the quota day and midnight stay on the wall clock, as the upstream's do.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

Clock = Callable[[], datetime]
Monotonic = Callable[[], float]

#: wall and monotonic clocks may part by this much between two checks without it being a step
#: (NTP slews at most 0.5 ms/s: 2 s is an hour of the steepest slew)
TOLERANCE = timedelta(seconds=2)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def micros(at: datetime) -> int:
    """``at`` as integer microseconds since the epoch (exact, unlike a float timestamp): how the
    live schedule holds its times and the budget state stores its window."""
    return (at - _EPOCH) // _MICROSECOND


def moment(us: int) -> datetime:
    """``micros``' inverse: the aware UTC datetime of ``us`` microseconds since the epoch."""
    return _EPOCH + timedelta(microseconds=us)


class WallJumps:
    """Each holder of wall-clock stamps keeps its own: every ``check`` reports the step since
    the previous one, once."""

    def __init__(self, wall: Clock, monotonic: Monotonic, tolerance: timedelta = TOLERANCE) -> None:
        self._wall = wall
        self._monotonic = monotonic
        self._tolerance = tolerance
        self._last = (wall(), monotonic())

    def check(self) -> timedelta:
        """How far the wall clock was stepped since the last check (zero when it was not)."""
        wall, steady = self._wall(), self._monotonic()
        last_wall, last_steady = self._last
        self._last = (wall, steady)
        step = (wall - last_wall) - timedelta(seconds=steady - last_steady)
        return step if abs(step) > self._tolerance else timedelta(0)


def describe(step: timedelta) -> str:
    """``forward 1 day, 0:00:00`` / ``back 1:00:00``: a step for a log line."""
    return f"forward {step}" if step > timedelta(0) else f"back {-step}"
