"""What the simulated upstream records and reports: the call log, its counters, and the money
type of its balance. Plain data (no I/O); never holds a token.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

Money = int | Decimal


def money(value: object) -> Money | None:
    """An amount as an int when whole and given as one, else an exact Decimal (a float through
    its text); None stays None."""
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    if isinstance(value, Decimal):
        amount = value
    elif isinstance(value, float | str):
        try:
            amount = Decimal(str(value).strip())
        except InvalidOperation:
            raise ValueError(f"{value!r:.40} is not an amount") from None
    else:
        raise TypeError(f"expected an amount, not {type(value).__name__}")
    if not amount.is_finite():
        raise ValueError("an amount must be finite")
    return amount


def jsonable(value: object) -> object:
    """Decimals as 4-place strings (as the balance endpoint prints them); all else as is."""
    return f"{value:.4f}" if isinstance(value, Decimal) else value


@dataclass(frozen=True, slots=True)
class CallRecord:
    """One call as the simulator saw it (never the token)."""

    at: datetime  # the simulator clock
    monotonic: float  # wall time, for "how many calls in any 60 s"
    user_id: str | None
    variant: str | None
    code: int | None
    http_status: int | None
    billed: bool
    fault: str | None = None
    endpoint: str = "core"  # a key of ENDPOINTS


@dataclass(frozen=True)
class SimCounters:
    """What the simulator received; ``max_per_minute`` is over the call log by wall time."""

    calls: int
    billed: int
    by_code: Mapping[str, int]  # "0", "301" … or a fault without envelope ("html_502", "reset")
    by_series: Mapping[tuple[str, str], int]  # core_data only: (userId, variant label) -> calls
    max_per_minute: int
    balance: Money | None
    log: tuple[CallRecord, ...]
    by_endpoint: Mapping[str, int] = field(default_factory=dict)  # "core", "fans" … -> calls

    def max_in_window(self, window: timedelta, *, by_clock: bool = False) -> int:
        """The most calls in any ``window``, by wall time or by the simulator clock."""
        if by_clock:
            return max_in_window([r.at.timestamp() for r in self.log], window)
        return max_in_window([r.monotonic for r in self.log], window)

    def to_json(self) -> dict[str, Any]:
        return {
            "calls": self.calls,
            "billed": self.billed,
            "by_code": dict(self.by_code),
            "by_series": [
                {"user_id": user_id, "variant": label, "calls": calls}
                for (user_id, label), calls in sorted(self.by_series.items())
            ],
            "by_endpoint": dict(self.by_endpoint),
            "max_per_minute": self.max_per_minute,
            "balance": jsonable(self.balance),
            "log": [{**asdict(r), "at": r.at.isoformat()} for r in self.log],
        }


def max_in_window(times: list[float], window: timedelta) -> int:
    times = sorted(times)
    best, start, span = 0, 0, window.total_seconds()
    for end, moment in enumerate(times):
        while moment - times[start] >= span:
            start += 1
        best = max(best, end - start + 1)
    return best
