"""The gate every upstream call passes: waits on the budget, reserves the day's ledger, persists.

Owns the live ``BudgetState`` of this process and logs pause / resume transitions once each.
Must not decide what to fetch (the scheduler does) or talk to the upstream (the cycle does).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

from monitor.budget import ACCOUNT_CODES, QUOTA_EXCEEDED, Budget, BudgetState, Outcome, day_of
from monitor.errors import BudgetError
from monitor.store import Store
from monitor.store.ledger import BudgetStateRow

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
Sleep = Callable[[float], Awaitable[None]]

#: longest single sleep while waiting for the bucket, so a stop or a reload is noticed quickly
_MAX_NAP = 1.0


@dataclass(frozen=True, slots=True)
class Gauge:
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


class Meter:
    """One per process; serialises callers on one lock so the bucket is spent in order."""

    def __init__(
        self,
        budget: Budget,
        store: Store,
        state: BudgetState,
        *,
        clock: Clock,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.budget = budget
        self._store = store
        self._state = state
        self._clock = clock
        self._sleep = sleep
        self._lock = asyncio.Lock()

    @classmethod
    async def open(
        cls, budget: Budget, store: Store, *, clock: Clock, sleep: Sleep = asyncio.sleep
    ) -> Meter:
        """Load the persisted state (a restart neither refills nor forgets a pause)."""
        row = await store.load_budget_state()
        state = budget.initial(clock()) if row is None else BudgetState.from_row(row)
        return cls(budget, store, state, clock=clock, sleep=sleep)

    def with_budget(self, budget: Budget) -> None:
        """A reloaded config's limits take effect for the next call; the state carries over."""
        self.budget = budget

    @property
    def state(self) -> BudgetState:
        return self._state

    def hard_pause(self, now: datetime) -> str | None:
        """Why ordinary calls may not go at ``now`` (quota or account pause), else None."""
        state = self.budget.settle(self._state, now)
        if state.pause_code in ACCOUNT_CODES or (
            state.pause_code == QUOTA_EXCEEDED and state.is_paused(now)
        ):
            return state.pause_reason or f"paused (code {state.pause_code})"
        return None

    def probe_due(self, now: datetime) -> bool:
        return self._state.is_probe_due(now)

    async def acquire(self, *, probe: bool = False) -> None:
        """Wait until one call may be sent and count it; raises BudgetError when it may not go
        today (a hard pause that is not this call's probe turn, or the daily cap)."""
        async with self._lock:
            while True:
                now = self._clock()
                day = day_of(now, self.budget.zone)
                calls = await self._store.calls_on(day)
                waits = self.budget.waits(self._state, now, calls)
                if waits["daily"].total_seconds() > 0:
                    raise BudgetError(f"daily_calls ({self.budget.daily_calls}) used up for {day}")
                reason = self.hard_pause(now)
                if reason is not None and not (probe and self._state.is_probe_due(now)):
                    raise BudgetError(f"calls paused: {reason}")
                delay = max(w.total_seconds() for w in waits.values())
                if delay > 0:
                    await self._sleep(min(delay, _MAX_NAP))
                    continue
                if not await self._store.reserve_call(day, self.budget.daily_calls):
                    raise BudgetError(f"daily_calls ({self.budget.daily_calls}) used up for {day}")
                self._state = self.budget.spend(self._state, now, calls)
                await self._save()
                return

    async def feedback(self, outcome: Outcome, *, billed: bool) -> None:
        """Apply the upstream's answer to a sent call: count a billed call, pause or resume."""
        async with self._lock:
            now = self._clock()
            if billed:
                await self._store.record_billed(day_of(now, self.budget.zone))
            before = self._state
            self._state = self.budget.on_result(before, outcome, now)
            self._log_transition(before, self._state)
            await self._save()

    async def gauge(self) -> Gauge:
        now = self._clock()
        day = day_of(now, self.budget.zone)
        calls, billed = await self._store.ledger_day(day)
        state = self.budget.settle(self._state, now)
        return Gauge(
            day=day,
            calls_today=calls,
            billed_today=billed,
            daily_calls=self.budget.daily_calls,
            tokens=self.budget.tokens_at(state, now),
            paused=self.hard_pause(now) is not None,
            pause_code=state.pause_code,
            pause_reason=state.pause_reason,
            rate_factor=self.budget.factor_at(state, now),
        )

    async def _save(self) -> None:
        row = self._state.to_row()
        await self._store.save_budget_state(BudgetStateRow(**row))  # type: ignore[arg-type]

    @staticmethod
    def _log_transition(before: BudgetState, after: BudgetState) -> None:
        if after.pause_code == before.pause_code:
            return
        if after.pause_code is None:
            log.info("calls resumed (was: %s)", before.pause_reason or before.pause_code)
        elif after.pause_code in ACCOUNT_CODES or after.pause_code == QUOTA_EXCEEDED:
            log.error("calls paused: %s", after.pause_reason)
        else:
            log.warning("upstream rate limit (302): %s", after.pause_reason)
