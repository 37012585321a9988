"""The balance job: ``GET /user/get-balance`` through the one gate every ``[account]
balance_every`` (every minute while calls are paused for want of money), each reading stored,
a 601 pause ended by the first reading that shows money, and the account's figures (balance,
price per call, days left) kept on the gate for the account rules.

Must not work out what a call costs (``policy.spend``) nor evaluate rules (``on_reading`` does).
A reading counts against ``calls_per_minute`` and ``daily_calls`` like any call; it is not
counted as billed (the vendor does not say it is; if it is, its cost shows in the price). Like
a fetch, it is not sent while the database refuses writes (``Spill.waiting``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from monitor.config import Config
from monitor.errors import (
    BudgetError,
    StoreError,
    TransportError,
    Unreached,
    UnreadableAnswer,
    UpstreamError,
)
from monitor.ops.wallclock import Clock
from monitor.policy.budget import ACCOUNT_CODES, QUOTA_EXCEEDED, RATE_LIMITED, feedback_code
from monitor.policy.budget_state import INSUFFICIENT_BALANCE
from monitor.policy.cadence import Plan, call_plan
from monitor.policy.spend import (
    Funds,
    lookback,
    planned_calls,
    price_per_call,
    shows_money,
)
from monitor.service.fetching.budget_view import Ticket
from monitor.service.fetching.gate import BudgetGate
from monitor.service.fetching.spill import Spill
from monitor.store import Store
from monitor.upstream.balance import SOURCE
from monitor.upstream.client import JustOneClient

log = logging.getLogger(__name__)

#: while calls are paused for want of money the balance is read this often: a top-up ends the
#: pause within a minute, not at the next probe
PAUSED_EVERY = timedelta(minutes=1)

#: told about every answered reading: (code or failure kind, billed); telemetry counts them
Observe = Callable[[int | str, bool], None]
OnReading = Callable[[], Awaitable[object]]


async def funds_of(config: Config, store: Store, now: datetime, plan: Plan | None = None) -> Funds:
    """The account's figures as stored: the newest reading, the price per billed call derived
    from the readings and the ledger's billed calls of the price's window, and the calls per
    day of the plan (``plan``, else the config's)."""
    per_day = planned_calls(plan or call_plan(config))
    latest = await store.latest_balance()
    if latest is None:
        return Funds(calls_per_day=per_day)
    readings = await store.balance_readings(since=now - lookback(config.account.balance_every))
    price = None
    if len(readings) > 1:
        # the billed calls themselves, each at the instant it was sent: a quarter hour's
        # count spread evenly over it misplaces a burst against readings minutes apart
        billed = await store.billed_calls(readings[0].read_at, now)
        price = price_per_call([(r.read_at, r.amount) for r in readings], billed)
    return Funds(
        balance=latest.amount,
        currency=latest.currency,
        read_at=latest.read_at,
        price=price,
        calls_per_day=per_day,
        readings=len(readings),
    )


def does_not_answer(error: UpstreamError) -> bool:
    """The endpoint is not there for this account: HTTP 404, or a gateway error (HTTP 5xx
    without the upstream's envelope)."""
    if error.http_status == 404:
        return True
    return (
        error.code is None
        and not isinstance(error, TransportError)
        and error.http_status is not None
        and error.http_status >= 500
    )


class BalanceReader:
    """One per daemon: reads the balance once at start (``read``) and whenever it is due
    (``tick``, run often by the daemon's scheduler); the figures go to ``gate.funds``."""

    def __init__(
        self,
        config: Config,
        client: JustOneClient,
        store: Store,
        gate: BudgetGate,
        *,
        clock: Clock,
        spill: Spill | None = None,
        observe: Observe | None = None,
        on_reading: OnReading | None = None,
        every: timedelta | None = None,
    ) -> None:
        self._config = config
        #: read this often instead of ``[account] balance_every`` (the demo's seconds)
        self._every = every
        #: the fetch path's hold: while answers wait for the database, no call goes
        self._hold = spill if spill is not None else Spill(None)
        self._plan = call_plan(config)
        self._client = client
        self._store = store
        self._gate = gate
        self._clock = clock
        self._observe = observe
        self.on_reading = on_reading
        #: when this process last tried to read (a failure waits for the next interval too)
        self._tried_at: datetime | None = None
        #: why readings stopped until the next start (the endpoint does not answer), else None
        self.stopped: str | None = None
        self._unreadable_said = False
        #: one reading at a time: the scheduler's tick and the start's reading may meet
        self._lock = asyncio.Lock()
        #: the reading's wait for the gate (a stop drops it: nothing is spent yet)
        self._waiting: asyncio.Future[Ticket] | None = None
        self._stopping = False

    @property
    def every(self) -> timedelta | None:
        """How often the balance is read now (None: not at all)."""
        every = self._config.account.balance_every
        if every is not None and self._every is not None:
            every = self._every
        if every is None or self.stopped is not None:
            return None
        if self._gate.state.pause_code == INSUFFICIENT_BALANCE:
            return min(every, PAUSED_EVERY)
        return every

    def reconfigure(self, config: Config) -> None:
        """A reloaded config: its ``balance_every`` applies from the next tick, its plan to
        the days left now."""
        self._config = config
        self._plan = call_plan(config)
        self._gate.funds = self._gate.funds.with_plan(self._plan)

    def stop(self) -> None:
        """No reading from now on (the daemon stops): one waiting for the gate is dropped, one
        on the wire finishes."""
        self._stopping = True
        if self._waiting is not None:
            self._waiting.cancel()

    async def load(self) -> None:
        """The stored figures, without a call (the daemon's start)."""
        self._gate.funds = await funds_of(self._config, self._store, self._clock(), self._plan)

    def due(self, now: datetime) -> bool:
        """A reading is due at ``now`` as far as this process knows (another instance may
        have read since: ``tick`` looks)."""
        every = self.every
        return every is not None and (self._tried_at is None or now - self._tried_at >= every)

    async def tick(self) -> bool:
        """Read the balance if it is due (at once after a start); True when a reading was
        stored."""
        async with self._lock:
            now = self._clock()
            every = self.every
            if every is None or not self.due(now):
                return False
            if self._tried_at is not None:
                # another instance on this database may have read it since: its reading
                # serves here, and the next is due ``every`` after it
                latest = await self._store.latest_balance()
                if latest is not None and now - latest.read_at < every:
                    self._tried_at = max(self._tried_at, latest.read_at)
                    known = self._gate.funds.read_at
                    if known is None or latest.read_at > known:
                        await self.load()
                    return False
            return await self._read()

    async def read(self) -> bool:
        """One reading now, due or not (``tick`` reads when due)."""
        async with self._lock:
            return await self._read()

    async def _read(self) -> bool:
        """One reading through the gate, stored; False when none was (readings are off or
        stopped, the budget refused the call now, or it failed: the next interval tries)."""
        if self.every is None or self._stopping or self._hold.waiting:
            return False
        self._tried_at = self._clock()
        self._waiting = asyncio.ensure_future(self._gate.acquire(balance=True))
        try:
            ticket = await self._waiting
        except BudgetError as exc:
            log.debug("balance not read now: %s", exc)
            return False
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if self._stopping and (task is None or not task.cancelling()):
                return False  # dropped by the stop before anything was spent
            raise
        finally:
            self._waiting = None
        try:
            answer = await self._client.balance()
        except UpstreamError as exc:
            self._gate.answered()
            await self._failed(exc, ticket)
            return False
        self._gate.answered()
        # the reading's time: its answer's (the next is due ``every`` after it)
        read_at = self._tried_at = self._clock()
        self._tell(0)
        balance = answer.data
        try:
            if shows_money(balance.amount, self._gate.funds.price):
                await self._gate.money_shown(sent_at=ticket.sent_at)  # ends a 601 pause
            await self._store.store_balance(read_at, balance)
        except StoreError as exc:
            self._hold.refused(exc)  # no call goes until a write goes through again
            raise
        await self.load()
        if self.on_reading is not None:
            await self.on_reading()
        return True

    async def _failed(self, error: UpstreamError, ticket: Ticket) -> None:
        self._tell(_label(error))
        if isinstance(error, Unreached):
            try:
                await self._gate.release(ticket)
            except StoreError as exc:  # over-counted by one: the safe side
                log.debug("the unsent balance call stays counted: %s", exc)
            return
        if does_not_answer(error):
            self.stopped = str(error)
            log.warning(
                "the balance endpoint does not answer (%s): the balance is not read again "
                "until the next start; fetching goes on",
                error,
            )
            return
        if isinstance(error, UnreadableAnswer):
            await self._keep(error)
            return
        code = feedback_code(error)
        if code in (RATE_LIMITED, QUOTA_EXCEEDED) and self._gate.state.pause_code in ACCOUNT_CODES:
            # a reading that went past a 601 pause says nothing of the pause by a 302 or 303
            # (the balance endpoint is not refused for want of money): no probe answered
            return
        await self._gate.feedback(error, billed=False, sent_at=ticket.sent_at)

    async def _keep(self, error: UnreadableAnswer) -> None:
        """A code 0 answer this version cannot read: kept for ``reparse``, told once."""
        if error.raw_body is not None:
            await self._store.keep_unreadable(
                source=SOURCE,
                body=error.raw_body,
                fetched_at=self._clock(),
                params=error.params,
                error=str(error),
            )
        if not self._unreadable_said:
            self._unreadable_said = True
            log.warning("the balance answer could not be read (%s); its body is kept", error)

    def _tell(self, code: int | str) -> None:
        if self._observe is not None:
            self._observe(code, False)


def _label(error: UpstreamError) -> int | str:
    """The code a failed reading counts under in telemetry, as a fetch's would."""
    if error.code is not None:
        return error.code
    return "transport" if error.http_status is None else f"http_{error.http_status}"
