"""PURE money math: what a billed call costs, derived from the balance readings and the billed
calls sent between them (each at the instant ``fetches`` records), and how many days the money
lasts at the current plan. Time is passed in; no I/O. The readings and the calls are read by the
store, the reading is taken by the balance job (service/fetching/balance.py).
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal
from itertools import pairwise
from typing import Any

from monitor.policy.budget import BudgetPolicy, BudgetState
from monitor.policy.budget_state import INSUFFICIENT_BALANCE
from monitor.policy.cadence import Plan

#: how far back the readings that make the price go (at least 3 intervals of the cadence)
PRICE_WINDOW = timedelta(days=7)
#: a price needs at least this many billed calls between readings: below it, the balance's
#: 4 decimal places say more about rounding than about the price
MIN_BILLED = 1
#: a price is kept to this many decimal places (a call costs fen, not yuan)
PRICE_PLACES = Decimal("0.000001")

#: (when, amount) of one balance reading
Reading = tuple[datetime, Decimal]
#: (the instant billed calls were sent, how many) as ``fetches`` records them
BilledCalls = tuple[datetime, int]


@dataclass(frozen=True, slots=True)
class Funds:
    """The account's money as the newest reading shows it, with the derived price per billed
    call and the calls per day the current plan bills; None where nothing is known yet."""

    balance: Decimal | None = None
    currency: str = "CNY"
    read_at: datetime | None = None
    price: Decimal | None = None
    #: what the schedule bills per day, capped by the budget (``planned_calls``)
    calls_per_day: float = 0.0
    #: readings in the price's window that the price was derived from
    readings: int = 0

    @property
    def days_left(self) -> float | None:
        """Days until the money runs out at the plan (as of the reading; None: unknown)."""
        return days_left(self.balance, self.price, self.calls_per_day)

    def facts(self) -> dict[str, Any]:
        """The ``AccountSubject`` fields the balance rules read."""
        return {
            "balance": self.balance,
            "balance_read_at": self.read_at,
            "price_per_call": self.price,
            "days_left": self.days_left,
        }

    def with_plan(self, plan: Plan) -> Funds:
        """The same money under another plan (a reload changed the schedule)."""
        return replace(self, calls_per_day=planned_calls(plan))


def lookback(balance_every: timedelta | None) -> timedelta:
    """How far back the readings that make the price go: a week, or three readings when they
    are further apart than that."""
    return PRICE_WINDOW if balance_every is None else max(PRICE_WINDOW, 3 * balance_every)


def planned_calls(plan: Plan) -> float:
    """The billed calls per day the schedule makes: every source's calls, capped by what the
    budget lets through, less the balance readings (not counted as billed; they take their
    share of the cap)."""
    readings = sum(calls for source, calls, _ in plan.by_source if source == "balance")
    return max(0.0, min(plan.calls_per_day, float(plan.capacity)) - readings)


def price_per_call(readings: Sequence[Reading], billed: Sequence[BilledCalls]) -> Decimal | None:
    """What one billed call costs: the balance's fall over the billed calls between readings,
    summed over every interval between two readings in which the balance did not rise.

    A rise is money added (and maybe some spent): that interval says nothing of the price and
    is left out, calls and all. Each entry of ``billed`` is the instant its calls were sent; a
    call sent at the instant of a reading counts after it (it went out once the reading's
    answer came). None with fewer than ``MIN_BILLED`` billed calls between usable readings (one
    reading, a top-up between the only two, no calls).
    """
    ordered = sorted(readings, key=lambda r: r[0])
    count = _Cumulative(billed)
    fell, calls = Decimal(0), 0
    for (before, had), (after, has) in pairwise(ordered):
        if has > had:
            continue  # money added
        fell += had - has
        calls += count.at(after) - count.at(before)
    if calls < MIN_BILLED:
        return None
    return (fell / calls).quantize(PRICE_PLACES)


def days_left(balance: Decimal | None, price: Decimal | None, calls_per_day: float) -> float | None:
    """Days the balance lasts at ``calls_per_day`` billed calls of ``price`` each: 0 when no
    money is left; None when the price or the balance is unknown, or nothing is spent."""
    if balance is None or price is None:
        return None
    if balance <= 0:
        return 0.0
    per_day = price * Decimal(repr(calls_per_day))
    if per_day <= 0:
        return None
    return float(balance / per_day)


def shows_money(amount: Decimal, price: Decimal | None) -> bool:
    """A reading shows money for calls: above zero, and at least one call's price when the
    price is known (the upstream refuses a call the balance cannot pay in full)."""
    return amount > 0 and (price is None or amount >= price)


def ended_by_money(
    budget: BudgetPolicy, state: BudgetState, now: datetime, *, sent_at: datetime
) -> BudgetState:
    """``state`` after a balance reading sent at ``sent_at`` showed money: a pause for want of
    it (601) ends as a successful probe ends it; any other pause, or a 601 that began after the
    reading was sent, stays."""
    if state.pause_code != INSUFFICIENT_BALANCE:
        return state
    return budget.on_result(state, 0, now, sent_at=sent_at)


class _Cumulative:
    """Billed calls sent before an instant."""

    def __init__(self, billed: Sequence[BilledCalls]) -> None:
        spans = sorted((at, n) for at, n in billed if n > 0)
        self._instants = [at for at, _ in spans]
        self._before: list[int] = []  # calls sent before each instant
        total = 0
        for _, n in spans:
            self._before.append(total)
            total += n
        self._total = total

    def at(self, moment: datetime) -> int:
        index = bisect.bisect_left(self._instants, moment)
        return self._total if index == len(self._instants) else self._before[index]
