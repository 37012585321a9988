"""The one gate every paid call passes, from every command: the budget decided and written in ONE
locked transaction on the stored state (SQLite ``BEGIN IMMEDIATE``, PostgreSQL ``SELECT … FOR
UPDATE``), so the daemon, ``fetch``, ``fetch --all``, ``--dry-run``, ``demo`` and other instances
spend one bucket, one 60 s window and one daily ledger.

Keeps only a cached copy of the stored state for the dispatcher's quick looks (``hard_pause``);
every decision re-reads the row. Logs pause and resume transitions once each. Must not decide
what to fetch (the scheduler does) or talk to the upstream (the fetcher does).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import datetime, timedelta

from monitor.errors import MonitorError, StoreError
from monitor.ops.wallclock import TOLERANCE, Clock, Monotonic, WallJumps, describe
from monitor.policy.budget import (
    ACCOUNT_CODES,
    ACCOUNT_OK_CODES,
    QUOTA_EXCEEDED,
    RATE_LIMITED,
    BudgetPolicy,
    BudgetState,
    Feedback,
    feedback_code,
    token_fingerprint,
)
from monitor.policy.budget_state import INSUFFICIENT_BALANCE
from monitor.policy.rules import AccountSubject
from monitor.policy.spend import Funds, ended_by_money
from monitor.service.fetching.budget_view import (
    BudgetReading,
    Ticket,
    day_used_up,
    hard_pause,
    ledger_day,
    paused_refusal,
    pauses_all,
    rate_refusal,
    reading_of,
)
from monitor.store import Store
from monitor.store.ledger import BudgetRow, BudgetTxn, LedgerDay

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]

#: longest single sleep while waiting for the bucket, so a stop or a reload is noticed quickly
_MAX_NAP = 1.0
#: how long a caller waits while an answer that pauses every call is being stored
_PAUSING_NAP = 0.05
#: answers that slow down or pause every call (302, 303, the account codes)
PAUSING_CODES = frozenset({RATE_LIMITED, QUOTA_EXCEEDED, *ACCOUNT_CODES})


#: an account pause that ended less than this long ago still shows to the account rules: a
#: pause that ends and comes back within seconds is one alert, not a firing, a resolution and
#: a firing again (the daemon evaluates once more when this has passed)
ACCOUNT_HYSTERESIS = timedelta(seconds=5)


def _row(state: BudgetState) -> BudgetRow:
    return BudgetRow(**state.to_row())  # type: ignore[arg-type]


class BudgetGate:
    """One per process; every ``acquire`` and ``feedback`` is one locked transaction on the
    stored budget, so processes and instances sharing the database spend one budget."""

    def __init__(
        self,
        budget: BudgetPolicy,
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
        self._on_the_wire = 0
        self._exhausted: tuple[str, int] | None = None
        #: steps of the wall clock move the stored bucket, window and pauses. Only on a database
        #: of one host (SQLite): a shared row is stamped by every host's clock, which must agree
        self._jumps = None if monotonic is None or store.shared else WallJumps(clock, monotonic)
        self._step = timedelta(0)
        #: told of every pause / resume transition, (code before, code after); the daemon
        #: evaluates the account rules then (not at its next tick)
        self.on_pause_change: Callable[[int | None, int | None], None] | None = None
        #: this process's callers queue here, not in SQLite's busy handler (which sleeps in
        #: steps of up to 100 ms); other processes and instances meet on the database lock
        self._lock = asyncio.Lock()
        #: callers waiting for their turn to spend, in arrival order (asyncio.Lock is FIFO)
        self._queue = asyncio.Lock()
        #: tasks waiting for their turn (idle, like a sleeper: test clocks may move meanwhile)
        self.queued: set[asyncio.Task[object] | None] = set()
        #: answers that pause every call, being stored right now (see ``feedback``)
        self._pausing = 0
        #: pausing answers whose write the database refused, with when they came; merged into
        #: every decision and written by the next transaction that commits
        self._unsaved: list[tuple[Feedback, datetime]] = []
        self._merged = 0
        #: (day label, calls counted) as the last spend of this process read them
        self._counted: tuple[str, int] | None = None
        #: fingerprint of the token this process sends (``use_token``); never the token
        self._token: str | None = None
        #: the last account pause this process saw end: (code, reason, when it ended)
        self._ended: tuple[int, str | None, datetime] | None = None
        #: the account's money as the balance job last found it (the account subject shows it)
        self.funds = Funds()

    @classmethod
    async def open(
        cls,
        budget: BudgetPolicy,
        store: Store,
        *,
        clock: Clock,
        sleep: Sleep = asyncio.sleep,
        monotonic: Monotonic | None = None,
    ) -> BudgetGate:
        """Read the stored state (a restart neither refills nor forgets a pause; on SQLite a
        state stamped in the future, after the clock was stepped back, is moved back to now)."""
        gate = cls(
            budget, store, budget.initial(clock()), clock=clock, sleep=sleep, monotonic=monotonic
        )
        # a read: ``status`` opens a gate too, and must not write; nor log a stored pause as
        # if it began now (the daemon's STATUS, ``status`` and a refused call each say it)
        await gate.refresh(announce=False)
        return gate

    def use_token(self, token: str) -> None:
        """The API token this process sends from now on: an account pause answered to another
        token lets one call of this one through at once (its answer ends the pause or not)."""
        self._token = token_fingerprint(token)

    def token_changed(self) -> bool:
        """The stored account pause was answered to another token than the one sent now."""
        return self._state.token_changed(self._token)

    def with_budget(self, budget: BudgetPolicy) -> None:
        """A reloaded config's limits take effect for the next call; the state carries over."""
        self.budget = budget
        self._exhausted = None

    @property
    def state(self) -> BudgetState:
        """The stored state as last seen by this process (read at every decision)."""
        return self._state

    @property
    def on_the_wire(self) -> int:
        """Calls counted by ``acquire`` whose answer has not come back yet (``answered``)."""
        return self._on_the_wire

    def hard_pause(self, now: datetime) -> str | None:
        """Why ordinary calls may not go at ``now`` (quota or account pause), else None."""
        self._follow_wall_clock()
        return hard_pause(self.budget, self._state, now)

    def probe_due(self, now: datetime) -> bool:
        """The account probe may go now: its time came, or the token changed since."""
        self._follow_wall_clock()
        return self._state.is_probe_due(now) or self.token_changed()

    def day_exhausted(self, now: datetime) -> bool:
        """True when ``daily_calls`` was found used up for the budget day of ``now``.

        A cached answer (no database read), so the dispatcher can stop starting fetches that
        would only be refused; it clears itself when the day turns or the limit is raised.
        """
        return self._exhausted == (ledger_day(self.budget, now).label, self.budget.daily_calls)

    async def acquire(
        self, *, probe: bool = False, wait: bool = True, balance: bool = False
    ) -> Ticket:
        """Wait until one call may be sent and count it; raises BudgetError when it may not go
        today (a hard pause that is not this call's probe turn, or the daily cap), or, with
        ``wait=False``, when it may not go right now. A ``balance`` reading passes a 601 pause.

        The call is counted in the ledger and the bucket is saved BEFORE it is sent, so a crash
        can over-count a call but never under-count one; a call that then never reached a
        server gives its count back (``release``).
        """
        if not wait:
            return await self._take_now(probe, balance)
        # first come, first served: the dispatcher starts the most overdue work first, and a
        # caller that has waited longest must not lose its turn to whoever wakes first
        task = asyncio.current_task()
        self.queued.add(task)
        try:
            await self._queue.acquire()
        finally:
            self.queued.discard(task)
        try:
            while True:
                delay = await self._take_whole(probe, balance)
                if isinstance(delay, Ticket):
                    return delay
                await self._sleep(min(delay, _MAX_NAP))
        finally:
            self._queue.release()

    async def _take_whole(self, probe: bool, balance: bool) -> float | Ticket:
        """``_take``, run to its end when the caller is cancelled meanwhile (a stop cancels the
        fetches waiting here): a spend cut off in its commit may or may not be counted, so it
        finishes, and a call it counted for a caller that is gone gives its count back."""
        take = asyncio.ensure_future(self._take(probe, balance))
        try:
            return await asyncio.shield(take)
        except asyncio.CancelledError:
            try:
                ticket = await asyncio.shield(take)
                if isinstance(ticket, Ticket):
                    self.answered()
                    await self.release(ticket)
            except (MonitorError, asyncio.CancelledError):
                pass  # refused, or a second cancel: over-counted by one at most, the safe side
            raise

    async def _take_now(self, probe: bool, balance: bool) -> Ticket:
        delay = await self._take_whole(probe, balance)
        if isinstance(delay, Ticket):
            return delay
        raise rate_refusal(self.budget, delay, self._clock())

    @asynccontextmanager
    async def _locked(self) -> AsyncIterator[tuple[BudgetTxn, datetime]]:
        """The stored budget, locked, and the time to decide at: read once the lock is held,
        since it may have been a while coming (a stale time would stamp sends too early)."""
        async with self._lock:
            self._follow_wall_clock()
            now = self._clock()
            day = ledger_day(self.budget, now)
            initial = _row(self.budget.initial(now))
            async with self._store.budget_txn(day, initial, now=now) as txn:
                self._merged = 0
                yield txn, max(now, self._clock())
            # committed: the pauses merged into what was written are stored now
            del self._unsaved[: self._merged]

    async def _take(self, probe: bool, balance: bool = False) -> float | Ticket:
        """Count one call now and return its ticket, or return how long to wait first."""
        if self._pausing:
            return _PAUSING_NAP
        # the bucket and the 60 s window as last stored can only have tightened since (others
        # spend; time refills them for all alike): while they say wait, wait without the lock.
        # Pauses are not taken from the copy: another process may have ended one.
        self._follow_wall_clock()
        waits = self.budget.waits(self._state, self._clock())
        waiting = max(waits["bucket"], waits["window"]).total_seconds()
        if waiting > 0:
            return waiting
        self._on_the_wire += 1  # counted before it commits: see ``answered``
        try:
            async with self._locked() as (txn, now):
                # an answer that pauses every call arrived while this caller waited for the
                # lock: let it be written first, then decide on the paused state
                delay = (
                    _PAUSING_NAP if self._pausing else await self._decide(txn, now, probe, balance)
                )
        except BaseException:
            self._on_the_wire -= 1
            raise
        if not isinstance(delay, Ticket):
            self._on_the_wire -= 1
        return delay

    async def _decide(
        self, txn: BudgetTxn, now: datetime, probe: bool, balance: bool = False
    ) -> float | Ticket:
        before, moved = self._stored(txn, now)
        budget = self.budget
        if txn.calls >= budget.daily_calls:
            self._exhausted = (txn.day.label, budget.daily_calls)
            raise day_used_up(budget, txn.day)
        reason = hard_pause(budget, before, now)
        # a token other than the one the pause was answered to has not been tried: its first
        # call goes at once, whoever sends it (the daemon, ``fetch``, ``resume``)
        trying = (probe and before.is_probe_due(now)) or before.token_changed(self._token)
        past = balance and before.pause_code == INSUFFICIENT_BALANCE and not trying
        if reason is not None and not trying and not past:
            raise paused_refusal(budget, budget.settle(before, now), reason)
        if trying and before.token_changed(self._token) and before.paused_until is not None:
            before = replace(before, paused_until=min(before.paused_until, now))  # due now
        delay = budget.acquire_delay(before, now, txn.calls, past_pause=past)
        if delay > 0:
            if moved:
                await txn.save(_row(before), now=now)  # keep the moved stamps
            return delay
        after = budget.spend(before, now, txn.calls, token=self._token, past_pause=past)
        await txn.reserve()
        self._counted = (txn.day.label, txn.calls)
        await txn.save(_row(after), now=now)
        self._adopt(after)  # a pause that ran out ends here
        return Ticket(day=txn.day, sent_at=now)

    def _stored(self, txn: BudgetTxn, now: datetime) -> tuple[BudgetState, bool]:
        """The state in the locked row, moved by any wall-clock step this process noticed (and
        whether it was moved); adopted as this process's view, so a pause another process
        started is logged here."""
        stored = BudgetState.from_row(txn.row)
        state = stored
        if self._step:
            state = self.budget.shifted(state, self._step)
            self._step = timedelta(0)
        if not self._store.shared and state.refilled_at > now + TOLERANCE:
            # stamped in the future: the clock was stepped back while no process watched it
            # (a stamp a moment ahead is only another process's send, made while we waited)
            state = self.budget.rebased(state, now)
        for outcome, at in self._unsaved:  # pauses whose own write the database refused
            state = self._on_result(state, outcome, at, None)
        self._merged = len(self._unsaved)
        self._adopt(state)
        return state, state != stored

    async def probe_now(self) -> None:
        """Make the account probe due now (``resume``): one locked transaction; nothing
        changes when there is no account pause."""
        await self._move(
            lambda s, now: replace(s, paused_until=now) if s.pause_code in ACCOUNT_CODES else s
        )

    async def release(self, ticket: Ticket) -> None:
        """The call of ``ticket`` never reached a server (refused, host not found): give its
        count in the ledger back, in one locked transaction like the spend that counted it.
        The bucket and the 60 s window keep it (a dead upstream is not hammered faster)."""
        async with self._locked() as (txn, _now):
            await txn.release(ticket.day)
            if self._counted is not None and self._counted[0] == txn.day.label:
                self._counted = (txn.day.label, txn.calls)

    def answered(self) -> None:
        """The call counted by the last ``acquire`` of this caller is over (answered or not)."""
        self._on_the_wire = max(0, self._on_the_wire - 1)

    def changes_nothing(self, outcome: Feedback) -> bool:
        """The answer leaves the budget state as it is (a success with no pause to end): its
        billed count may travel with the stored answer instead of a transaction of its own."""
        return feedback_code(outcome) in ACCOUNT_OK_CODES and self._state.pause_code is None

    def billed_day(self) -> LedgerDay:
        """The ledger day (and quarter hour) a billed call counted now goes under."""
        return ledger_day(self.budget, self._clock())

    async def feedback(
        self, outcome: Feedback, *, billed: bool, sent_at: datetime | None = None
    ) -> None:
        """Apply the upstream's answer to a call sent at ``sent_at``: count a billed call,
        pause or resume (only a call sent after an account pause began can end it)."""
        code = feedback_code(outcome)
        if code in PAUSING_CODES:
            # from this instant no caller of this process is let through until the pause is
            # stored: a call must not start after the answer that paused everything came back
            self._pausing += 1
            try:
                await self._apply(outcome, billed=billed, sent_at=sent_at)
            except StoreError:
                # the database refused the write: the pause still holds here, and goes into
                # the stored row with the next transaction that commits
                now = self._clock()
                self._unsaved.append((outcome, now))
                self._adopt(self._on_result(self._state, outcome, now, None))
                raise
            finally:
                self._pausing -= 1
            return
        if self.changes_nothing(outcome):
            # the common case changes no budget state: count it without locking the bucket (a
            # pause another process began is ended by the next probe, whose answer goes below)
            if billed:
                await self._store.count_billed(ledger_day(self.budget, self._clock()))
            return
        await self._apply(outcome, billed=billed, sent_at=sent_at)

    def _on_result(
        self, state: BudgetState, outcome: Feedback, now: datetime, sent_at: datetime | None
    ) -> BudgetState:
        return self.budget.on_result(state, outcome, now, sent_at=sent_at, token=self._token)

    async def _apply(
        self, outcome: Feedback, *, billed: bool, sent_at: datetime | None = None
    ) -> None:
        await self._move(lambda state, now: self._on_result(state, outcome, now, sent_at), billed)

    async def money_shown(self, *, sent_at: datetime) -> None:
        """A balance reading sent at ``sent_at`` showed money: a 601 pause ends, as at a
        successful probe (one locked transaction: the pause may be another instance's)."""
        await self._move(lambda s, now: ended_by_money(self.budget, s, now, sent_at=sent_at))

    async def _move(
        self, step: Callable[[BudgetState, datetime], BudgetState], billed: bool = False
    ) -> None:
        async with self._locked() as (txn, now):
            if billed:
                await txn.record_billed()
            before, moved = self._stored(txn, now)
            after = step(before, now)
            if after != before or moved:
                await txn.save(_row(after), now=now)
        self._adopt(after)

    async def refresh(self, *, announce: bool = True) -> None:
        """Read the stored state (another process or instance may have paused every call);
        ``announce``: log a pause that began or ended since the last look."""
        row = await self._store.load_budget_state()
        if row is not None:
            state, now = BudgetState.from_row(row), self._clock()
            if not self._store.shared and state.refilled_at > now + TOLERANCE:
                state = self.budget.rebased(state, now)  # as the next decision will see it
            if announce:
                self._adopt(state)
            else:
                self._state = state

    async def persist(self) -> None:
        """Rewrite the stored row as it stands: the daemon's health check that the database
        takes writes (it changes nothing, so it is harmless at any time)."""
        async with self._locked() as (txn, now):
            state, _ = self._stored(txn, now)
            await txn.save(_row(state), now=now)

    async def reading(self) -> BudgetReading:
        self._follow_wall_clock()
        now = self._clock()
        day = ledger_day(self.budget, now)
        calls, billed = await self._store.ledger_day(day)
        return reading_of(self.budget, self._state, now, day=day.label, calls=calls, billed=billed)

    async def account(self) -> AccountSubject:
        """What account-scope rules (and per-creator inhibition) see of the budget now.

        Evaluated after every fetch: the day's count is the one this process's last spend
        read under the lock (no query), else read from the ledger. A hard pause that ended
        less than ``ACCOUNT_HYSTERESIS`` ago still shows: one that comes back within seconds
        stays one alert."""
        now = self._clock()
        label = ledger_day(self.budget, now).label
        if self._counted is not None and self._counted[0] == label:
            state = self.budget.settle(self._state, now)
            paused = hard_pause(self.budget, state, now) is not None
            used, code, reason = self._counted[1], state.pause_code, state.pause_reason
        else:
            reading = await self.reading()
            used, paused = reading.calls_today, reading.paused
            code, reason = reading.pause_code, reading.pause_reason
        if not paused and self._ended is not None and now - self._ended[2] < ACCOUNT_HYSTERESIS:
            paused, (code, reason, _) = True, self._ended
        return AccountSubject(
            now=now,
            used_today=used,
            daily_calls=self.budget.daily_calls,
            pause_code=code if paused else None,
            pause_reason=reason,
            **self.funds.facts(),
        )

    def _follow_wall_clock(self) -> None:
        """Note a step of the wall clock since the last look; the next transaction moves the
        stored stamps by it (and the cached copy now)."""
        if self._jumps is None:
            return
        step = self._jumps.check()
        if step:
            self._step += step
            self._state = self.budget.shifted(self._state, step)
            log.warning(
                "the wall clock was stepped %s; the budget keeps real time (bucket, 60 s "
                "window, pauses), the ledger day follows the wall clock",
                describe(step),
            )

    def _adopt(self, state: BudgetState) -> None:
        before, self._state = self._state, state
        if state.pause_code != before.pause_code:
            if pauses_all(before.pause_code) and not pauses_all(state.pause_code):
                self._ended = (before.pause_code, before.pause_reason, self._clock())
            elif pauses_all(state.pause_code):
                self._ended = None
            self._log_transition(before, state)

    def _log_transition(self, before: BudgetState, after: BudgetState) -> None:
        if after.pause_code is None:
            log.info("calls resumed (was: %s)", before.pause_reason or before.pause_code)
        elif after.pause_code in ACCOUNT_CODES or after.pause_code == QUOTA_EXCEEDED:
            log.error("calls paused: %s", after.pause_reason)
        else:
            log.warning("upstream rate limit (302): %s", after.pause_reason)
        if self.on_pause_change is not None:
            self.on_pause_change(before.pause_code, after.pause_code)
