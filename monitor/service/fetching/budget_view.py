"""The budget as the gate shows it, read from a budget state at a moment: the ``BudgetReading`` that
``status``, telemetry and the systemd STATUS line show, why ordinary calls may not go (a hard
pause), the ledger day a call counts under, and the ``Ticket`` of a call the gate let go."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeGuard

from monitor.errors import BudgetError
from monitor.policy.budget import (
    ACCOUNT_CODES,
    QUOTA_EXCEEDED,
    BudgetPolicy,
    BudgetState,
    day_edges,
    quarter_of,
)
from monitor.store.ledger import LedgerDay


@dataclass(frozen=True, slots=True)
class Ticket:
    """One call the gate let go: where the ledger counted it, and when it was let go (an
    answer to it ends an account pause only when it was sent after the pause began)."""

    day: LedgerDay
    sent_at: datetime


@dataclass(frozen=True, slots=True)
class BudgetReading:
    """What ``status``, telemetry and the systemd STATUS line show of the budget."""

    day: str
    calls_today: int
    billed_today: int
    daily_calls: int
    tokens: float
    paused: bool
    pause_code: int | None
    pause_reason: str | None
    rate_factor: float
    #: quota and 302: when calls may go again; account codes: when the next probe may go
    paused_until: datetime | None = None


def hard_pause(budget: BudgetPolicy, state: BudgetState, now: datetime) -> str | None:
    """Why ordinary calls may not go at ``now`` (quota or account pause), else None."""
    settled = budget.settle(state, now)
    if settled.pause_code in ACCOUNT_CODES or (
        settled.pause_code == QUOTA_EXCEEDED and settled.is_paused(now)
    ):
        return settled.pause_reason or f"paused (code {settled.pause_code})"
    return None


def ledger_day(budget: BudgetPolicy, now: datetime) -> LedgerDay:
    """The budget day ``now`` falls in, in the configured zone, as the ledger counts it."""
    label, start, end = day_edges(now, budget.zone)
    return LedgerDay(label=label, start=start, end=end, slot=max(start, quarter_of(now)))


def reading_of(
    budget: BudgetPolicy, state: BudgetState, now: datetime, *, day: str, calls: int, billed: int
) -> BudgetReading:
    """``state`` read at ``now``, with the ledger's ``calls`` and ``billed`` of ``day``."""
    state = budget.settle(state, now)
    return BudgetReading(
        day=day,
        calls_today=calls,
        billed_today=billed,
        daily_calls=budget.daily_calls,
        tokens=budget.tokens_at(state, now),
        paused=hard_pause(budget, state, now) is not None,
        pause_code=state.pause_code,
        pause_reason=state.pause_reason,
        rate_factor=budget.factor_at(state, now),
        paused_until=state.paused_until,
    )


def pauses_all(code: int | None) -> TypeGuard[int]:
    """A code that pauses every call (an account code or the daily quota)."""
    return code is not None and (code in ACCOUNT_CODES or code == QUOTA_EXCEEDED)


def zone_time(moment: datetime, budget: BudgetPolicy) -> str:
    """``moment`` on the budget zone's clock, to the minute, with the zone's name."""
    local = moment.astimezone(budget.zone)
    return f"{local:%Y-%m-%d %H:%M} {budget.zone.key}"


def rate_refusal(budget: BudgetPolicy, delay: float, now: datetime) -> BudgetError:
    """The refusal of a call that may not wait (``fetch``) while the bucket is empty."""
    return BudgetError(
        f"calls_per_minute ({budget.calls_per_minute}): the next call is allowed in {delay:.1f} s",
        cap="calls_per_minute",
        until=now + timedelta(seconds=delay),
    )


def day_used_up(budget: BudgetPolicy, day: LedgerDay) -> BudgetError:
    """The refusal once the day's ``daily_calls`` are counted: it names when the day frees up."""
    return BudgetError(
        f"daily_calls ({budget.daily_calls}) used up for {day.label} "
        f"({budget.zone.key}); frees up at {zone_time(day.end, budget)}",
        cap="daily_calls",
        until=day.end,
    )


def paused_refusal(budget: BudgetPolicy, settled: BudgetState, reason: str) -> BudgetError:
    """The refusal during a hard pause: when it frees up, or (an account pause, whose cause a
    person fixes) that ``resume`` tries at once."""
    account = settled.pause_code in ACCOUNT_CODES
    until = None if account else settled.paused_until
    frees = "" if until is None else f"; frees up at {zone_time(until, budget)}"
    if until is None:  # fixed the cause? no need to wait for the next probe
        frees = "; `creator-monitor resume` tries now"
    return BudgetError(
        f"calls paused: {reason}{frees}", cap="account" if account else "quota", until=until
    )
