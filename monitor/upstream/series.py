"""Deterministic, plausible metric series for the simulated upstream (pure: no I/O, no clock).

Every value is a function of (userId, variant, date) through a stable hash, so a creator fetched
twice on one simulated day gets the same numbers and the window slides like the real one.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from functools import lru_cache
from typing import Any

from monitor.model import DateType, Variant

#: share of creators without a price (every cost field 0) and with holes in their history
NO_PRICE_SHARE = 0.2
GAPPY_SHARE = 0.2
#: in a gappy creator's history, this share of days is missing (about 21 of 30 remain)
GAP_RATE = 0.3
WINDOW_DAYS = {DateType.DAY_30: 30, DateType.DAY_90: 90}
SCRIPTABLE = ("imp", "read", "engage")
_DEFAULT_LABEL = Variant().label


@dataclass(frozen=True, slots=True)
class Script:
    """From ``since`` on, ``metric`` is multiplied by ``factor`` (all variants when ``variant``
    is None)."""

    metric: str
    factor: float
    since: date
    variant: str | None = None


@lru_cache(maxsize=1 << 16)
def unit(*parts: object) -> float:
    """A stable uniform number in [0, 1) for ``parts`` (unlike ``hash()``, equal across runs).

    Kept for the last 65,536 ``parts``: a creator's window slides by a day, so its next answer
    asks again for all but one day's numbers (a hash each, about 30 a point)."""
    digest = hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def has_price(user_id: str) -> bool:
    return unit(user_id, "price") >= NO_PRICE_SHARE


def has_gaps(user_id: str) -> bool:
    return unit(user_id, "gaps") < GAPPY_SHARE


def price(user_id: str) -> int:
    """The creator's note price in CNY (300 … 30 000, in hundreds); 0 when it has none."""
    if not has_price(user_id):
        return 0
    return max(300, int(round(300 * math.exp(unit(user_id, "p") * math.log(100)), -2)))


def window_dates(variant: Variant, today: date, user_id: str) -> list[date]:
    """The dates of ``dailyData``: T-1 back over the window, minus a gappy creator's holes.

    The newest day (T-1) is always present; older holes are fixed per (creator, date).
    """
    newest = today - timedelta(days=1)
    days = [newest - timedelta(days=n) for n in range(WINDOW_DAYS[variant.date_type] - 1, -1, -1)]
    if not has_gaps(user_id):
        return days
    return [d for d in days if d == newest or unit(user_id, "gap", d) >= GAP_RATE]


def daily_points(
    user_id: str, variant: Variant, today: date, scripts: Sequence[Script] = ()
) -> list[dict[str, Any]]:
    """``dailyData`` as the upstream sends it (API key names, costs 0 when there is no price)."""
    return [point(user_id, variant, d, scripts) for d in window_dates(variant, today, user_id)]


def point(
    user_id: str, variant: Variant, day: date, scripts: Sequence[Script] = ()
) -> dict[str, Any]:
    """One dated point; costs follow the price and the (possibly scripted) counts."""
    label = variant.label
    seed = f"{user_id}/{label}"
    scale = 1.0 if label == _DEFAULT_LABEL else 0.4 + 0.6 * unit(user_id, label)
    base_imp = 5_000 * math.exp(unit(user_id, "imp") * math.log(40)) * scale
    n = day.toordinal()
    imp = base_imp * _wave(seed + "imp", n, 0.35) * (0.99 + 0.02 * unit(seed, "j", n))
    read = imp * (0.05 + 0.10 * unit(user_id, "rr")) * _wave(seed + "rr", n, 0.15)
    engage = read * (0.03 + 0.07 * unit(user_id, "er")) * _wave(seed + "er", n, 0.15)
    counts = {"imp": imp, "read": read, "engage": engage}
    for script in scripts:
        if day >= script.since and script.variant in (None, label) and script.metric in counts:
            counts[script.metric] *= script.factor
    ints = {name: max(0, round(value)) for name, value in counts.items()}
    return {
        **ints,
        **_costs(user_id, seed, n, ints),
        "cpuv": 0,
        "thirdUserNum": 0,
        "dateKey": day.isoformat(),
    }


def _costs(user_id: str, seed: str, n: int, counts: dict[str, int]) -> dict[str, float | int]:
    note_price = price(user_id)
    if not note_price:
        return {"cpm": 0, "cpe": 0, "cpv": 0}
    views = counts["read"] * (0.4 + 0.3 * unit(user_id, "views"))  # cpv's base is unknown
    costs: dict[str, float | int] = {
        "cpm": note_price * 1000 / counts["imp"] if counts["imp"] else 0,
        "cpe": note_price / counts["engage"] if counts["engage"] else 0,
        "cpv": note_price / views if views >= 1 else 0,
    }
    if unit(seed, "whole", n) < 0.05:
        # the real API sometimes sends a whole number without a decimal point ("cpe": 60)
        costs = {name: round(value) for name, value in costs.items()}
    return costs


@lru_cache(maxsize=1 << 14)
def _wave(seed: str, day: int, spread: float) -> float:
    """A factor around 1 that drifts between knots and sometimes steps, like a rolling median."""
    period = 6 + int(unit(seed, "period") * 9)
    knot, offset = divmod(day, period)
    here, there = _level(seed, knot, spread), _level(seed, knot + 1, spread)
    if unit(seed, "step", knot) < 0.3:
        return here  # hold, then jump at the next knot: a strong note entering or leaving
    t = offset / period
    return here + (there - here) * t * t * (3 - 2 * t)


def _level(seed: str, knot: int, spread: float) -> float:
    wobble = sum(unit(seed, "k", knot, i) for i in range(3)) - 1.5  # roughly normal, ±1.5
    return math.exp(spread * wobble)
