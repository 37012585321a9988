"""The money math (``policy.spend``): the price of a billed call from the balance's fall over the
billed calls between readings, robust to top-ups and to few readings; the days the money lasts
at the plan; what counts as money for calls; and a 601 pause ended by a reading."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from monitor.config import parse_config
from monitor.policy.budget import BudgetPolicy, BudgetState
from monitor.policy.cadence import call_plan
from monitor.policy.spend import (
    Funds,
    days_left,
    ended_by_money,
    lookback,
    planned_calls,
    price_per_call,
    shows_money,
)

T0 = datetime(2025, 12, 11, 2, 0, tzinfo=UTC)
H = timedelta(hours=1)
Q = timedelta(minutes=15)


def _hourly(amounts: list[str]) -> list[tuple[datetime, Decimal]]:
    return [(T0 + i * H, Decimal(a)) for i, a in enumerate(amounts)]


def _steady(per_quarter: int, hours: int) -> list[tuple[datetime, int]]:
    """``per_quarter`` calls sent together at the start of every quarter hour."""
    return [(T0 + i * Q, per_quarter) for i in range(4 * hours)]


def test_the_price_is_the_fall_over_the_billed_calls_between() -> None:
    # 40 billed calls an hour (10 a quarter hour) at 0.05: the balance falls 2.00 an hour
    readings = _hourly(["100.0000", "98.0000", "96.0000", "94.0000"])
    price = price_per_call(readings, _steady(10, 3))
    assert price == Decimal("0.05")


def test_a_top_up_is_money_added_not_a_negative_price() -> None:
    # +500 between the 2nd and 3rd reading (and 2.00 spent there too): that hour is left out
    readings = _hourly(["100.0000", "98.0000", "596.0000", "594.0000"])
    price = price_per_call(readings, _steady(10, 3))
    assert price == Decimal("0.05")


@pytest.mark.parametrize(
    ("readings", "billed"),
    [
        ([], []),  # never read
        (["100.0000"], [(T0, 10)]),  # one reading
        (["100.0000", "600.0000"], [(T0, 10)]),  # a top-up between the only two
        (["100.0000", "100.0000"], []),  # no billed call between them
    ],
)
def test_too_few_readings_or_calls_give_no_price(
    readings: list[str], billed: list[tuple[datetime, int]]
) -> None:
    assert price_per_call(_hourly(readings), billed) is None


def test_a_call_sent_at_a_readings_instant_counts_after_it() -> None:
    # readings at 02:05 and 02:10; 10 calls sent before the first, 15 at its instant (once its
    # answer came) and 5 at the second's: only the 15 fall between them
    five = timedelta(minutes=5)
    readings = [(T0 + five, Decimal("10.0000")), (T0 + 2 * five, Decimal("9.2500"))]
    billed = [(T0, 10), (T0 + five, 15), (T0 + 2 * five, 5)]
    assert price_per_call(readings, billed) == Decimal("0.05")


def test_the_sum_over_many_intervals_is_exact_however_the_calls_bunch() -> None:
    # a reading every 7 minutes for 84 minutes, 0.35 a reading; 84 calls in bursts that fall
    # unevenly between the readings: the whole fall over all the calls
    readings = [
        (T0 + timedelta(minutes=7 * i), Decimal(100) - Decimal("0.35") * i) for i in range(13)
    ]
    billed = [(T0, 30), (T0 + 2 * Q, 20), (T0 + 3 * Q, 25), (T0 + 5 * Q, 9)]
    assert price_per_call(readings, billed) == Decimal("0.05")


def test_days_left_is_the_balance_over_the_plans_daily_spend() -> None:
    assert days_left(Decimal("120"), Decimal("0.05"), 240.0) == 10.0
    assert days_left(Decimal("0"), Decimal("0.05"), 240.0) == 0.0
    assert days_left(Decimal("-1.5"), Decimal("0.05"), 240.0) == 0.0
    assert days_left(Decimal("120"), None, 240.0) is None  # no price yet
    assert days_left(None, Decimal("0.05"), 240.0) is None  # never read
    assert days_left(Decimal("120"), Decimal("0"), 240.0) is None  # nothing is spent
    assert days_left(Decimal("120"), Decimal("0.05"), 0.0) is None  # the plan bills nothing


def test_the_plan_is_capped_by_the_budget_and_the_readings_are_not_billed() -> None:
    creators = [{"user_id": f"5c3bf7f7{n:016x}"} for n in range(100)]
    document = {"budget": {"daily_calls": 1000}, "defaults": {"every": "1h"}, "creators": creators}
    plan = call_plan(parse_config(document | {"account": {"balance_every": "off"}}))
    assert plan.calls_per_day == 2400
    assert planned_calls(plan) == 1000  # daily_calls caps what the schedule bills
    # hourly readings take 24 of the 1,000 calls a day, and are not counted as billed
    assert planned_calls(call_plan(parse_config(document))) == 1000 - 24
    small = document | {"budget": {"daily_calls": 5000}, "creators": creators[:10]}
    assert planned_calls(call_plan(parse_config(small))) == 240
    funds = Funds(balance=Decimal("500"), price=Decimal("0.05")).with_plan(plan)
    assert funds.days_left == 10.0
    assert funds.facts() == {
        "balance": Decimal("500"),
        "balance_read_at": None,
        "price_per_call": Decimal("0.05"),
        "days_left": 10.0,
    }


def test_the_price_looks_back_a_week_or_three_readings() -> None:
    assert lookback(None) == timedelta(days=7)
    assert lookback(H) == timedelta(days=7)
    assert lookback(timedelta(days=7)) == timedelta(days=21)


def test_money_for_calls_is_above_zero_and_one_calls_price() -> None:
    assert shows_money(Decimal("0.01"), None)
    assert not shows_money(Decimal("0"), None)
    assert not shows_money(Decimal("0.01"), Decimal("0.05"))  # cannot pay one call
    assert shows_money(Decimal("0.05"), Decimal("0.05"))


def test_a_reading_with_money_ends_a_601_pause_only_when_sent_after_it_began() -> None:
    budget = BudgetPolicy(
        calls_per_minute=10, burst=5, daily_calls=100, zone=ZoneInfo("Asia/Shanghai")
    )
    running = budget.initial(T0)
    paused = budget.on_result(running, 601, T0, sent_at=T0)
    assert paused.pause_code == 601
    later = T0 + timedelta(minutes=2)
    ended = ended_by_money(budget, paused, later, sent_at=T0 + timedelta(minutes=1))
    assert ended.pause_code is None
    assert ended.paused_until is None
    # a reading sent before the pause began says nothing of it
    early = ended_by_money(budget, paused, later, sent_at=T0 - timedelta(seconds=1))
    assert early.pause_code == 601
    # nor one sent the instant it began: its answer may predate the 601 (on virtual time, a
    # reading and the last call that drained the account went out at the same instant)
    assert ended_by_money(budget, paused, later, sent_at=T0).pause_code == 601
    # another account pause (a token's cap) is not for a balance reading to end
    capped = budget.on_result(running, 602, T0, sent_at=T0)
    assert ended_by_money(budget, capped, later, sent_at=later) == capped
    assert isinstance(ended, BudgetState)


def test_a_call_past_a_601_pause_counts_and_leaves_the_probe_where_it_was() -> None:
    budget = BudgetPolicy(
        calls_per_minute=10, burst=5, daily_calls=100, zone=ZoneInfo("Asia/Shanghai")
    )
    paused = budget.on_result(budget.initial(T0), 601, T0, sent_at=T0)
    now = T0 + timedelta(minutes=1)
    assert budget.blocked_by(paused, now) == "pause"
    assert budget.blocked_by(paused, now, past_pause=True) is None
    after = budget.spend(paused, now, past_pause=True)
    assert after.paused_until == paused.paused_until  # the next probe stays put
    assert after.pause_code == 601
    assert after.recent is not None
    assert after.recent[-1] == now
    assert after.tokens == pytest.approx(budget.tokens_at(paused, now) - 1)
