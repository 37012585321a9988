"""The gate every upstream call passes: waits on the budget, reserves the day's ledger, persists.

Owns the live ``BudgetState`` of this process and logs pause / resume transitions once each.
On a shared database (PostgreSQL) the state lives in the database instead: every decision is
made and written in one locked transaction (``cluster.try_spend``), so all instances spend one
budget. Must not decide what to fetch (the scheduler does) or talk to the upstream (the cycle does).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

from monitor import cluster
from monitor.budget import (
    ACCOUNT_CODES,
    ACCOUNT_OK_CODES,
    QUOTA_EXCEEDED,
    Budget,
    BudgetState,
    Outcome,
    day_of,
    outcome_code,
)
from monitor.errors import BudgetError
from monitor.rules import AccountSubject
from monitor.store import Store
from monitor.store.ledger import BudgetStateRow
from monitor.wallclock import Monotonic, WallJumps, describe

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
        monotonic: Monotonic | None = None,
    ) -> None:
        self.budget = budget
        self._store = store
        self._state = state
        self._clock = clock
        self._sleep = sleep
        self._lock = asyncio.Lock()
        self._on_the_wire = 0
        self._exhausted: tuple[str, int] | None = None
        #: several instances share the database: the stored row is the state, not ours
        self.shared = store.shared
        #: steps of the wall clock move the bucket, the window and the pauses (own state only:
        #: a shared row is stamped by every host's clock, which must agree, NTP-synced)
        self._jumps = None if monotonic is None or self.shared else WallJumps(clock, monotonic)
        #: told of every pause / resume transition, (code before, code after); the daemon
        #: evaluates the account rules then
        self.on_pause_change: Callable[[int | None, int | None], None] | None = None

    @classmethod
    async def open(
        cls,
        budget: Budget,
        store: Store,
        *,
        clock: Clock,
        sleep: Sleep = asyncio.sleep,
        monotonic: Monotonic | None = None,
    ) -> Meter:
        """Load the persisted state (a restart neither refills nor forgets a pause; a state
        stamped in the future, after the clock was stepped back, is moved back to now)."""
        row = await store.load_budget_state()
        now = clock()
        state = budget.initial(now) if row is None else BudgetState.from_row(row)
        if not store.shared:
            state = budget.rebased(state, now)
        return cls(budget, store, state, clock=clock, sleep=sleep, monotonic=monotonic)

    def with_budget(self, budget: Budget) -> None:
        """A reloaded config's limits take effect for the next call; the state carries over."""
        self.budget = budget

    @property
    def state(self) -> BudgetState:
        return self._state

    def hard_pause(self, now: datetime) -> str | None:
        """Why ordinary calls may not go at ``now`` (quota or account pause), else None."""
        self._follow_wall_clock()
        state = self.budget.settle(self._state, now)
        if state.pause_code in ACCOUNT_CODES or (
            state.pause_code == QUOTA_EXCEEDED and state.is_paused(now)
        ):
            return state.pause_reason or f"paused (code {state.pause_code})"
        return None

    def probe_due(self, now: datetime) -> bool:
        self._follow_wall_clock()
        return self._state.is_probe_due(now)

    def _follow_wall_clock(self) -> None:
        """Move the state's stamps by a step of the wall clock since the last look, if any."""
        if self._jumps is None:
            return
        step = self._jumps.check()
        if step:
            self._state = self.budget.shifted(self._state, step)
            log.warning(
                "the wall clock was stepped %s; the budget keeps real time (bucket, 60 s "
                "window, pauses), the ledger day follows the wall clock",
                describe(step),
            )

    @property
    def on_the_wire(self) -> int:
        """Calls counted by ``acquire`` whose answer has not come back yet (``answered``)."""
        return self._on_the_wire

    def day_exhausted(self, now: datetime) -> bool:
        """True when ``daily_calls`` was found used up for the quota day of ``now``.

        A cached answer (no database read), so the dispatcher can stop starting cycles that
        would only be refused; it clears itself when the day turns or the limit is raised.
        """
        return self._exhausted == (day_of(now, self.budget.zone), self.budget.daily_calls)

    async def acquire(self, *, probe: bool = False) -> None:
        """Wait until one call may be sent and count it; raises BudgetError when it may not go
        today (a hard pause that is not this call's probe turn, or the daily cap).

        The call is counted in the ledger and the bucket is saved BEFORE it is sent, so a crash
        can over-count a call but never under-count one. The lock is not held while waiting:
        answers of calls in flight (a 302 above all) must reach ``feedback`` at once.
        """
        while True:
            async with self._lock:
                delay = await self._take(probe)
            if delay <= 0:
                return
            await self._sleep(min(delay, _MAX_NAP))

    async def _take(self, probe: bool) -> float:
        """Count one call now and return 0.0, or return how long to wait first."""
        if self.shared:
            return await self._take_shared(probe)
        self._follow_wall_clock()
        now = self._clock()
        reason = self.hard_pause(now)
        if reason is not None and not (probe and self._state.is_probe_due(now)):
            raise BudgetError(f"calls paused: {reason}")
        # the bucket and the window first: waiting on them needs no database read
        delay = self.budget.acquire_delay(self._state, now)
        if delay > 0:
            return delay
        # the daily cap is checked by the ledger's own atomic reservation below: no read first
        day = day_of(now, self.budget.zone)
        self._on_the_wire += 1  # from here the call may be on its way: see ``answered``
        try:
            reserved = await self._store.reserve_call(day, self.budget.daily_calls)
            if reserved:
                before = self._state
                self._state = self.budget.spend(self._state, now)
                self._log_transition(before, self._state)  # a pause that ran out ends here
                await self._save()
        except BaseException:
            self._on_the_wire -= 1
            raise
        if not reserved:  # daily_calls used up (by us or another instance on the database)
            self._on_the_wire -= 1
            self._exhausted = (day, self.budget.daily_calls)
            raise BudgetError(f"daily_calls ({self.budget.daily_calls}) used up for {day}")
        return 0.0

    async def _take_shared(self, probe: bool) -> float:
        """``_take`` against the stored state, decided and written in one locked transaction."""
        now = self._clock()
        self._on_the_wire += 1  # counted before it commits: see ``answered``
        try:
            spend = await cluster.try_spend(self._store, self.budget, now, probe=probe)
        except BaseException:
            self._on_the_wire -= 1
            raise
        self._log_transition(self._state, spend.after)
        self._state = spend.after
        if spend.granted:
            return 0.0
        self._on_the_wire -= 1
        if spend.day_full:
            self._exhausted = (day_of(now, self.budget.zone), self.budget.daily_calls)
        if spend.refused is not None:
            raise BudgetError(spend.refused)
        return spend.delay

    async def refresh(self) -> None:
        """Shared database: read the state other instances may have changed (a pause)."""
        if self.shared:
            row = await self._store.load_budget_state()
            if row is not None:
                state = BudgetState.from_row(row)
                self._log_transition(self._state, state)
                self._state = state

    def answered(self) -> None:
        """The call counted by the last ``acquire`` of this caller is over (answered or not)."""
        self._on_the_wire = max(0, self._on_the_wire - 1)

    async def persist(self) -> None:
        """Write the current state again: the daemon's health check that the database takes
        writes (it changes nothing, so it is harmless at any time)."""
        if self.shared:  # our copy may be stale: rewrite the stored row as it stands
            await cluster.touch(self._store, self.budget, self._clock())
            return
        async with self._lock:
            await self._save()

    async def feedback(self, outcome: Outcome, *, billed: bool) -> None:
        """Apply the upstream's answer to a sent call: count a billed call, pause or resume."""
        now = self._clock()
        if self.shared and outcome_code(outcome) in ACCOUNT_OK_CODES and not self._state.paused:
            # the common case changes no shared state: count it without locking the bucket row
            if billed:
                await self._store.record_billed(day_of(now, self.budget.zone))
            return
        if self.shared:
            before, after = await cluster.apply_feedback(
                self._store, self.budget, outcome, now, billed=billed
            )
            self._log_transition(before, after)
            self._state = after
            return
        if billed:
            await self._store.record_billed(day_of(now, self.budget.zone))
        async with self._lock:
            self._follow_wall_clock()
            now = self._clock()
            before = self._state
            self._state = self.budget.on_result(before, outcome, now)
            self._log_transition(before, self._state)
            # the bucket was saved when the call was counted; only a new pause needs a write
            if _pause_of(self._state) != _pause_of(before):
                await self._save()

    async def gauge(self) -> Gauge:
        self._follow_wall_clock()
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

    async def account(self) -> AccountSubject:
        """What account-scope rules (and per-creator inhibition) see of the budget now."""
        gauge = await self.gauge()
        return AccountSubject(
            now=self._clock(),
            used_today=gauge.calls_today,
            daily_calls=gauge.daily_calls,
            pause_code=gauge.pause_code if gauge.paused else None,
            pause_reason=gauge.pause_reason,
        )

    async def _save(self) -> None:
        row = self._state.to_row()
        await self._store.save_budget_state(BudgetStateRow(**row))  # type: ignore[arg-type]

    def _log_transition(self, before: BudgetState, after: BudgetState) -> None:
        if after.pause_code == before.pause_code:
            return
        if self.on_pause_change is not None:
            self.on_pause_change(before.pause_code, after.pause_code)
        if after.pause_code is None:
            log.info("calls resumed (was: %s)", before.pause_reason or before.pause_code)
        elif after.pause_code in ACCOUNT_CODES or after.pause_code == QUOTA_EXCEEDED:
            log.error("calls paused: %s", after.pause_reason)
        else:
            log.warning("upstream rate limit (302): %s", after.pause_reason)


def _pause_of(state: BudgetState) -> tuple[object, ...]:
    return (state.pause_code, state.paused_until, state.rate_factor)
