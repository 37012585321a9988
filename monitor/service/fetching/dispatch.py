"""When things happen: the live schedule of every creator × variant and the dispatcher that hands
due slots to a bounded pool, most overdue first, inside the budget.

Owns the in-memory schedule (mirrored in the ``schedule`` table). On a shared database the table
is the schedule: due slots are claimed from it under a lease (``cluster.Claims``), so instances
see each other's due times and never run one twice. Must not talk to the upstream or evaluate
rules itself: each slot runs through ``fetch.Fetcher``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from monitor.config import Config
from monitor.errors import BudgetError, MonitorError
from monitor.model import Variant
from monitor.ops.wallclock import Clock
from monitor.policy import cadence
from monitor.policy.budget import ACCOUNT_CODES, next_midnight
from monitor.policy.concurrency import InFlightSizer
from monitor.service.fetching.cluster import Claims, ready_bound
from monitor.service.fetching.fetch import Fetcher
from monitor.service.fetching.gate import BudgetGate
from monitor.service.fetching.slot import Ending, Slot, SlotFate
from monitor.service.fetching.spill import Spill
from monitor.service.fetching.timetable import Timetable
from monitor.store import FetchRecord, Store

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]

#: the dispatcher never spins: even "due now" waits this long unless a fetch ends first
_SHORTEST_NAP = 0.05
#: shared database: how often to look for work other instances' due times made due
_SHARED_POLL = 1.0
#: while the database refuses writes, dispatch waits this long, doubling up to the cap
_STORE_BACKOFF = (1.0, 60.0)


@dataclass(frozen=True, slots=True)
class StoreFault:
    """The database refused a write: dispatch waits until ``until``; ``pause`` seconds so far."""

    until: datetime
    pause: float


class Dispatcher:
    """Hands due slots to at most ``max_in_flight`` concurrent fetches (fixed, or sized by
    ``sizer`` from the observed latency)."""

    def __init__(
        self,
        config: Config,
        fetcher: Fetcher,
        store: Store,
        slots: Timetable,
        *,
        gate: BudgetGate,
        spill: Spill,
        clock: Clock,
        claims: Claims | None = None,
        sizer: InFlightSizer | None = None,
    ) -> None:
        self.config = config
        self.sizer = sizer or InFlightSizer.from_config(config)
        self._fetcher = fetcher
        self._gate = gate  # the gate every call of ``fetcher`` passes
        self._hold = spill  # the answers the database refused: while any wait, no call goes
        self._store = store
        self.slots = slots
        self._clock = clock
        #: set on a shared database: due work comes from the table, under leases
        self.claims = claims
        self._inflight: dict[str, asyncio.Task[None]] = {}
        self._accepting = True
        self._wake = asyncio.Event()  # a fetch finished, the config changed, or stop
        self.completed = 0
        #: the database refused a write: no dispatch before this (a call it cannot store is
        #: money thrown away), then one fetch at a time until a write goes through
        self._store_fault: StoreFault | None = None

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    @property
    def tasks(self) -> list[asyncio.Task[None]]:
        """The running fetches (a virtual-time test waits until each is parked in a sleep)."""
        return list(self._inflight.values())

    @property
    def woken(self) -> bool:
        """A fetch ended (or a reload or stop came) and the next ``tick`` has not run yet."""
        return self._wake.is_set()

    def effective_due(self, due_at: datetime) -> datetime:
        return cadence.apply_window(
            due_at, self.config.schedule.fetch_after, self.config.budget.zone
        )

    def _bound(self, now: datetime) -> datetime:
        """The latest stored due time that is ready now (``apply_window`` keeps order, so a
        bound on the stored time)."""
        return ready_bound(now, self.config.schedule.fetch_after, self.config.budget.zone)

    def oldest_overdue(self, now: datetime) -> float:
        table = self.slots
        oldest = next(table.due_first(self._bound(now)), None)
        if oldest is None:
            return 0.0
        return (now - self.effective_due(table.due_at(oldest))).total_seconds()

    def tick(self) -> int:
        """Start as many due fetches as the pool and the budget allow; returns how many."""
        self._wake.clear()
        if not self._accepting:
            return 0
        now = self._clock()
        free, probe = self._room(now)
        if free <= 0:
            return 0
        # only as many as the bucket can take soon: the rest stay due and get more overdue
        table = self.slots
        rows = table.pick(self._bound(now), now, free, self.effective_due)
        for row in rows:
            self._start(table.slot(row), probe=probe)
        return len(rows)

    async def step(self) -> int:
        """One dispatch round: ``tick`` on a database of our own, ``claim_tick`` on a shared one.

        While the database refuses writes, the round is the store probe instead: the held
        answers are written (or, none held, the budget row), and only then may calls go again.
        """
        if not await self._store_ready():
            return 0
        if self.claims is None:
            return self.tick()
        return await self.claim_tick()

    async def claim_tick(self) -> int:
        """``tick`` for several instances: the due slots are leased from the database, most
        overdue first, so each due time goes to exactly one instance."""
        self._wake.clear()
        assert self.claims is not None
        if not self._accepting:
            return 0
        await self._gate.refresh()  # another instance may have paused every call
        now = self._clock()
        free, probe = self._room(now)
        if free <= 0:
            return 0
        schedule = self.config.schedule
        bound = ready_bound(now, schedule.fetch_after, self.config.budget.zone)
        taken = await self.claims.take(
            self._find, self._inflight.keys(), now=now, due_before=bound, limit=free
        )
        for slot in taken:
            self._start(slot, probe=probe)
        return len(taken)

    def _room(self, now: datetime) -> tuple[int, bool]:
        """How many fetches may start now, and whether the one that may is the account probe."""
        free = self.sizer.limit() - len(self._inflight)
        if self._store_fault is not None or self._hold.waiting:
            return 0, False  # ``_store_ready`` probes the database first
        gate = self._gate
        if free <= 0 or gate.day_exhausted(now):
            return 0, False
        if gate.hard_pause(now) is None:
            return free, False
        if gate.state.pause_code not in ACCOUNT_CODES or self._inflight:
            return 0, False
        return (1, True) if gate.probe_due(now) else (0, False)

    def next_wake(self, now: datetime) -> float:
        """Seconds until ``tick`` may have something to start (inf: only when woken)."""
        if not self._accepting:
            return math.inf
        if self._store_fault is not None:
            return max(0.0, (self._store_fault.until - now).total_seconds())
        if self._hold.waiting:
            return 0.0  # answers held (an earlier run's spill file): probe at once
        held = self._budget_wait(now)
        if held is not None:
            return held
        if len(self._inflight) >= self.sizer.limit():
            return math.inf
        # shared: due times live in the database (others move them), so look again soon
        return _SHARED_POLL if self.claims is not None else self._until_due(now)

    def _budget_wait(self, now: datetime) -> float | None:
        """Seconds the budget holds every call back (the day's cap, a pause), else None."""
        gate = self._gate
        if gate.day_exhausted(now):
            return (next_midnight(now, self.config.budget.zone) - now).total_seconds()
        state = gate.state
        if gate.hard_pause(now) is None:
            return None
        if state.pause_code in ACCOUNT_CODES and not self._inflight and gate.probe_due(now):
            return 0.0  # a changed token is tried at once
        if state.paused_until is None or (state.pause_code in ACCOUNT_CODES and self._inflight):
            return math.inf
        return (state.paused_until - now).total_seconds()

    def _until_due(self, now: datetime) -> float:
        earliest = self.slots.earliest()
        if earliest is None:
            return math.inf
        return (self.effective_due(earliest) - now).total_seconds()

    def _find(self, creator_id: int, variant: Variant) -> Slot | None:
        """The series as a ``Slot`` (the live one while it is fetched), None when unknown."""
        row = self.slots.find(creator_id, variant)
        return None if row is None else self.slots.slot(row)

    async def nap(self, sleep: Sleep, longest: float) -> None:
        """Sleep until the next due time, a finished fetch or a stop, at most ``longest`` s."""
        seconds = min(longest, max(_SHORTEST_NAP, self.next_wake(self._clock())))
        waits = [asyncio.ensure_future(sleep(seconds)), asyncio.ensure_future(self._wake.wait())]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waits:
                task.cancel()
            await asyncio.gather(*waits, return_exceptions=True)

    def _start(self, slot: Slot, *, probe: bool) -> None:
        self.slots.check_out(slot)
        task = asyncio.get_running_loop().create_task(
            self._run(slot, probe=probe), name=f"fetch {slot.key}"
        )
        self._inflight[slot.key] = task

        def forget(_task: asyncio.Task[None], key: str = slot.key) -> None:
            self.slots.release(slot)  # the table of the config in force now (a reload adopts)
            self._inflight.pop(key, None)
            self._wake.set()

        task.add_done_callback(forget)

    async def _run(self, slot: Slot, *, probe: bool) -> None:
        if self.claims is None:
            await self._cycle(slot, probe=probe)
            return
        try:
            await self._cycle(slot, probe=probe)
        finally:
            # the fetch stored the next due time (or nothing: the slot stays due for anyone)
            with contextlib.suppress(MonitorError):
                broken = (self._clock(), _broken_reason(slot)) if slot.broken else (None, None)
                if not await self.claims.give_back(slot, broken_at=broken[0], reason=broken[1]):
                    log.warning("lease on %s ran out before its fetch ended", slot.key)

    async def _cycle(self, slot: Slot, *, probe: bool) -> None:
        try:
            run = await self._fetcher.run(slot, probe=probe, reschedule=True)
        except BudgetError as exc:
            log.debug("%s waits: %s", slot.key, exc)
            return
        except MonitorError as exc:  # the store refused: keep the slot due, back off
            self._store_refused(slot, str(exc))
            return
        except Exception:  # a bug must not kill the daemon silently: log it, keep the slot due
            log.exception("fetch of %s crashed", slot.creator.user_id)
            return
        if run.ending is not Ending.STORED:
            # held, or no call went: the slot stays as the fetch left it (a held answer moved
            # it on); rules owed: the fetch is done and stored, its rules wait for the store
            self._store_refused(None, run.reason)
            if run.ending is Ending.RULES_OWED:
                self.completed += 1
            return
        verdict = run.verdict
        now = self._clock()
        # DONE: the fetcher moved the slot on in the transaction that recorded the fetch
        if verdict is SlotFate.BROKEN:
            slot.mark_broken()
            if self.claims is None:  # shared: marked in the statement that ends the lease
                await self._store.mark_broken(
                    slot.creator_id, slot.variant, at=now, reason=_broken_reason(slot)
                )
            log.error(
                "creator %s marked broken (code 400); fix its variant and reload",
                slot.creator.user_id,
            )
        self.completed += 1

    async def _store_ready(self) -> bool:
        """True when calls may go; else, once the backoff is over, probe the database (the
        spill's ``flush``) and resume dispatch if it takes the write. Fetches still ending need
        no wait: an answer that comes back during the probe joins the hold, after it in order.
        """
        spill = self._hold
        if self._store_fault is None and not spill.waiting:
            await self._evaluate_owed()
            return True
        now = self._clock()
        if self._store_fault is not None and now < self._store_fault.until:
            return False
        try:
            stored = await spill.flush(self._store, self._gate.persist)
        except MonitorError as exc:
            self._store_refused(None, str(exc), probe=True)
            return False
        log.info(
            "the database takes writes again (%d held answers stored); dispatch resumed",
            len(stored),
        )
        self._store_fault = None
        await self.evaluate_stored(stored)
        return True

    async def evaluate_stored(self, records: list[FetchRecord]) -> None:
        """The rules of the creators whose held answers were just stored (by the store probe,
        or at start-up from an earlier run's spill file), and of those whose answers were
        stored while their rules could not be (the fetcher's owed rules). What the database
        refuses again stays owed and is tried again a minute later; fetching goes on meanwhile."""
        series = [(r.creator_id, r.variant) for r in records]
        # and the owed rules a replay read from the spill file (a run killed while they waited)
        series += [(owed.creator_id, owed.variant) for owed in self._hold.take_owed()]
        found = (self._find(creator_id, variant) for creator_id, variant in series)
        stored = [slot for slot in found if slot is not None]
        await self._fetcher.evaluate_owed(stored, retry=_owed_retry())

    async def evaluate_owed_now(self) -> None:
        """The rules still owed since a refused write, tried now whatever the backoff (a
        stop's last try; what is cancelled or refused stays owed, see ``owed_creators``)."""
        if self._fetcher.owed_creators():
            await self._fetcher.evaluate_owed(retry=_owed_retry())

    def owed_creators(self) -> int:
        """How many creators have stored answers whose rules have not run yet."""
        return self._fetcher.owed_creators()

    def owed_where(self) -> str:
        """Where the owed rules are kept: the spill file (a restart runs them), or memory."""
        return self._hold.owed_where()

    async def _evaluate_owed(self) -> None:
        """Rules owed since a refused write, at most once a minute."""
        if self._fetcher.owed_due():
            await self._fetcher.evaluate_owed(retry=_owed_retry())

    def _store_refused(self, slot: Slot | None, why: str, *, probe: bool = False) -> None:
        """Pause dispatch with a doubling backoff; log when it starts, not on every try. Only
        a failed probe doubles the pause: fetches ending under the same fault leave it be. A
        ``slot`` whose call the ledger refused goes to the back of the queue."""
        now = self._clock()
        first, cap = _STORE_BACKOFF
        fault = self._store_fault
        if fault is not None and not probe:
            if slot is not None:
                _requeue(slot, now, cap)
            return
        pause = first if fault is None else min(cap, fault.pause * 2)
        if fault is None:
            log.error(
                "the database refuses writes, dispatch paused (no call is sent; a write is "
                "tried again, backing off to %.0f s): %s",
                cap,
                why,
            )
        self._store_fault = StoreFault(until=now + timedelta(seconds=pause), pause=pause)
        if slot is not None:
            _requeue(slot, now, cap)

    def reconfigure(self, config: Config, slots: Timetable) -> None:
        """A reloaded config: new limits and the new set of slots (in-flight ones finish, and
        write back into the new table where their series is still tracked)."""
        self.config = config
        self._fetcher.reconfigure(config)
        self.sizer.retune(config)
        slots.adopt(self.slots.live())
        self.slots = slots
        if self.claims is not None:
            self.claims.lease = config.schedule.lease
        self._wake.set()

    def wake(self) -> None:
        """Look again now: a pause ended outside a fetch (a balance reading showed money)."""
        self._wake.set()

    def stop_accepting(self) -> None:
        self._accepting = False
        self._wake.set()

    async def wait_idle(self, grace: float) -> int:
        """Let calls on the wire finish (and be recorded) within ``grace`` seconds; fetches still
        waiting for the budget or a retry are cancelled at once (their slots stay due).
        Returns how many calls were abandoned after the grace period."""
        sending = self._fetcher.sending
        waiting = [t for key, t in self._inflight.items() if not sending(key)]
        for task in waiting:
            task.cancel()
        if waiting:
            await asyncio.wait(waiting, timeout=5)
        return await finish_or_cancel(list(self._inflight.values()), grace)


async def finish_or_cancel(tasks: Collection[asyncio.Task[Any]], seconds: float) -> int:
    """Let ``tasks`` end within ``seconds``, then cancel the rest and give them 5 s to unwind
    (a stop's bounded wait); returns how many were cancelled."""
    if not tasks:
        return 0
    _done, pending = await asyncio.wait(tasks, timeout=seconds)
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.wait(pending, timeout=5)
    return len(pending)


def _requeue(slot: Slot, now: datetime, cap: float) -> None:
    """The call never went (the ledger refused it): the slot goes to the back of the queue.
    (A held answer moved its slot on with it; a call refused before it went, or an answer
    whose rules wait, leaves the slot as it is.)"""
    slot.move_to(max(slot.due_at, now) + timedelta(seconds=cap))


def _owed_retry() -> timedelta:
    """How long rules the database refused again wait: the store backoff's cap."""
    return timedelta(seconds=_STORE_BACKOFF[1])


def _broken_reason(slot: Slot) -> str:
    return f"invalid parameters (400) for {slot.variant.label}"
