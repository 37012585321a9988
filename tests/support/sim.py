"""Helpers for tests that drive the simulated upstream: a settable clock and creator ids."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from monitor.upstream import series as sim_series

#: 2025-12-11 10:17:58 in Asia/Shanghai, the moment the 30-day sample was captured
CAPTURE_TIME = datetime(2025, 12, 11, 2, 17, 58, 460419, tzinfo=UTC)


class FakeClock:
    """An aware UTC clock that moves only when told to."""

    def __init__(self, start: datetime = CAPTURE_TIME) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


def creator_id(n: int) -> str:
    """A 24-hex id that the simulator's prefix rules leave alone."""
    return f"5c3bf7f7{n:016x}"


def find_creator(predicate: Callable[[str], bool]) -> str:
    """The first generated creator id for which ``predicate`` holds."""
    for n in range(10_000):
        user_id = creator_id(n)
        if predicate(user_id):
            return user_id
    raise AssertionError("no creator matches")


def plain_creator() -> str:
    """A creator with a price and no missing days."""
    return find_creator(lambda u: sim_series.has_price(u) and not sim_series.has_gaps(u))


def no_price_creator() -> str:
    return find_creator(lambda u: not sim_series.has_price(u) and not sim_series.has_gaps(u))


def gappy_creator() -> str:
    return find_creator(lambda u: sim_series.has_gaps(u) and sim_series.has_price(u))
