"""When things happen: the live schedule of every creator × variant and the dispatcher that hands
due slots to a bounded pool, most overdue first, inside the budget.

Owns the in-memory schedule (mirrored in the ``schedule`` table). On a shared database the table
is the schedule: due slots are claimed from it under a lease (``cluster.Claims``), so instances
see each other's due times and never run one twice. Must not talk to the upstream or evaluate
rules itself: each slot runs through ``cycle.Fetcher``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from monitor.config import Config, collector_paused
from monitor.errors import BudgetError, MonitorError
from monitor.model import Variant
from monitor.policy import cadence
from monitor.policy.budget import ACCOUNT_CODES, next_midnight
from monitor.policy.concurrency import InFlightSizer
from monitor.service.cluster import Claims, ready_bound
from monitor.service.fetch import Fetcher, Slot, Verdict
from monitor.service.spill import AnswerHeld, WritesRefused
from monitor.store import FetchRecord, Store

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
Sleep = Callable[[float], Awaitable[None]]

#: the dispatcher never spins: even "due now" waits this long unless a cycle ends first
_SHORTEST_NAP = 0.05
#: shared database: how often to look for work other instances' due times made due
_SHARED_POLL = 1.0
#: while the database refuses writes, dispatch waits this long, doubling up to the cap
_STORE_BACKOFF = (1.0, 60.0)


async def load_slots(config: Config, store: Store, now: datetime) -> dict[str, Slot]:
    """Sync the configured creators into the store and build the live schedule from it.

    A new slot is first due at its stable offset inside its cadence (spread, no herd at start);
    a known slot keeps its persisted due time, so a restart re-fetches nothing already served.
    Runs for every creator at start-up and on reload (100,000 of them): per creator it only
    looks up and builds, what depends on settings alone is done once per setting, and the
    stored schedule is read a page at a time into the slots already built.
    """
    with collector_paused():  # 100,000 slots: no collector walks while they are built
        ids = await store.sync_creators([c.creator() for c in config.creators])
        slots: dict[str, Slot] = {}
        # variants tuple (shared by every creator without overrides) -> (variant, "/label") pairs;
        # keyed by identity, the tuple itself kept in the value so its id cannot be reused
        suffixes: dict[int, tuple[tuple[Variant, ...], list[tuple[Variant, str]]]] = {}
        for entry in config.creators:
            creator = entry.creator()
            user_id = creator.user_id
            creator_id = ids[user_id]
            every = config.every_of(entry)
            variants = config.variants_of(entry)
            plan = suffixes.get(id(variants))
            if plan is None:
                plan = suffixes[id(variants)] = (variants, [(v, "/" + v.label) for v in variants])
            group: list[Slot] = []
            for variant, suffix in plan[1]:
                key = user_id + suffix  # cadence.slot_key(user_id, variant)
                slot = Slot(
                    key, creator_id, creator, variant, every, _UNSCHEDULED, tracked_since=now
                )
                group.append(slot)
                slots[key] = slot
            if len(group) > 1:  # a lone slot is its own sibling (``Slot.siblings`` stays empty)
                for slot in group:
                    slot.siblings = group
        del ids
        async for page in store.slot_states():
            for key, _creator_id, due, success, failures, code, broken in page:
                found = slots.get(key)
                if found is not None:
                    found.due_at = due
                    found.last_success_at = success
                    found.consecutive_failures = failures
                    found.last_code = code
                    found.broken = broken
        fresh = [slot for slot in slots.values() if slot.due_at is _UNSCHEDULED]
        for slot in fresh:
            slot.due_at = cadence.first_due(slot.key, slot.every, now)
        if fresh:  # one transaction, however many new creators
            await store.schedule_new((s.creator_id, s.variant, s.due_at) for s in fresh)
    return slots


#: a slot's due time until the stored schedule or its first slot in the cadence sets it
_UNSCHEDULED = datetime.min.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class StoreFault:
    """The database refused a write: dispatch waits until ``until``; ``pause`` seconds so far."""

    until: datetime
    pause: float


class Dispatcher:
    """Hands due slots to at most ``max_in_flight`` concurrent cycles (fixed, or sized by
    ``sizer`` from the observed latency)."""

    def __init__(
        self,
        config: Config,
        fetcher: Fetcher,
        store: Store,
        slots: dict[str, Slot],
        *,
        clock: Clock,
        claims: Claims | None = None,
        sizer: InFlightSizer | None = None,
    ) -> None:
        self.config = config
        self.sizer = sizer or InFlightSizer.from_config(config)
        self._fetcher = fetcher
        self._store = store
        self.slots = slots
        self._clock = clock
        #: set on a shared database: due work comes from the table, under leases
        self.claims = claims
        #: the slots by (creator id, variant), for the claims of a shared database only: on
        #: SQLite it would be 100,000 tuples and entries (13 MB) that nothing reads
        self._by_id = _by_id(slots) if claims is not None else {}
        self._inflight: dict[str, asyncio.Task[None]] = {}
        self._accepting = True
        self._wake = asyncio.Event()  # a cycle finished, the config changed, or stop
        self.completed = 0
        #: the database refused a write: no dispatch before this (a call it cannot store is
        #: money thrown away), then one cycle at a time until a write goes through
        self._store_fault: StoreFault | None = None

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    @property
    def tasks(self) -> list[asyncio.Task[None]]:
        """The running cycles (a virtual-time test waits until each is parked in a sleep)."""
        return list(self._inflight.values())

    @property
    def woken(self) -> bool:
        """A cycle ended (or a reload or stop came) and the next ``tick`` has not run yet."""
        return self._wake.is_set()

    def effective_due(self, slot: Slot) -> datetime:
        return cadence.apply_window(
            slot.due_at, self.config.schedule.fetch_after, self.config.budget.zone
        )

    def due(self, now: datetime) -> Iterator[Slot]:
        return (
            s
            for s in self.slots.values()
            if not s.broken and s.key not in self._inflight and self.effective_due(s) <= now
        )

    def oldest_overdue(self, now: datetime) -> float:
        due = self.due(now)
        return max(((now - self.effective_due(s)).total_seconds() for s in due), default=0.0)

    def tick(self) -> int:
        """Start as many due cycles as the pool and the budget allow; returns how many."""
        self._wake.clear()
        if not self._accepting:
            return 0
        now = self._clock()
        free, probe = self._room(now)
        if free <= 0:
            return 0
        # only as many as the bucket can take soon: the rest stay due and get more overdue
        ordered = cadence.pick_due(
            (cadence.DueEntry(s.key, self.effective_due(s)) for s in self.due(now)), now, free
        )
        for entry in ordered:
            self._start(self.slots[entry.key], probe=probe)
        return len(ordered)

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
        await self._fetcher.meter.refresh()  # another instance may have paused every call
        now = self._clock()
        free, probe = self._room(now)
        if free <= 0:
            return 0
        schedule = self.config.schedule
        bound = ready_bound(now, schedule.fetch_after, self.config.budget.zone)
        taken = await self.claims.take(
            self._by_id, self._inflight.keys(), now=now, due_before=bound, limit=free
        )
        for slot in taken:
            self._start(slot, probe=probe)
        return len(taken)

    def _room(self, now: datetime) -> tuple[int, bool]:
        """How many cycles may start now, and whether the one that may is the account probe."""
        free = self.sizer.limit() - len(self._inflight)
        if self._store_fault is not None or self._fetcher.hold.waiting:
            return 0, False  # ``_store_ready`` probes the database first
        meter = self._fetcher.meter
        if free <= 0 or meter.day_exhausted(now):
            return 0, False
        if meter.hard_pause(now) is None:
            return free, False
        if meter.state.pause_code not in ACCOUNT_CODES or self._inflight:
            return 0, False
        return (1, True) if meter.probe_due(now) else (0, False)

    def next_wake(self, now: datetime) -> float:
        """Seconds until ``tick`` may have something to start (inf: only when woken)."""
        if not self._accepting:
            return math.inf
        if self._store_fault is not None:
            return max(0.0, (self._store_fault.until - now).total_seconds())
        if self._fetcher.hold.waiting:
            return 0.0  # answers held (an earlier run's spill file): probe at once
        held = self._budget_hold(now)
        if held is not None:
            return held
        if len(self._inflight) >= self.sizer.limit():
            return math.inf
        # shared: due times live in the database (others move them), so look again soon
        return _SHARED_POLL if self.claims is not None else self._until_due(now)

    def _budget_hold(self, now: datetime) -> float | None:
        """Seconds the budget holds every call back (the day's cap, a pause), else None."""
        meter = self._fetcher.meter
        if meter.day_exhausted(now):
            return (next_midnight(now, self.config.budget.zone) - now).total_seconds()
        state = meter.state
        if meter.hard_pause(now) is None:
            return None
        if state.paused_until is None or (state.pause_code in ACCOUNT_CODES and self._inflight):
            return math.inf
        return (state.paused_until - now).total_seconds()

    def _until_due(self, now: datetime) -> float:
        waiting = (self.effective_due(s) for s in self.slots.values() if self._idle(s))
        earliest = min(waiting, default=None)
        return math.inf if earliest is None else (earliest - now).total_seconds()

    async def nap(self, sleep: Sleep, longest: float) -> None:
        """Sleep until the next due time, a finished cycle or a stop, at most ``longest`` s."""
        seconds = min(longest, max(_SHORTEST_NAP, self.next_wake(self._clock())))
        waits = [asyncio.ensure_future(sleep(seconds)), asyncio.ensure_future(self._wake.wait())]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waits:
                task.cancel()
            await asyncio.gather(*waits, return_exceptions=True)

    def _idle(self, slot: Slot) -> bool:
        return not slot.broken and slot.key not in self._inflight

    def _start(self, slot: Slot, *, probe: bool) -> None:
        task = asyncio.get_running_loop().create_task(
            self._run(slot, probe=probe), name=f"fetch {slot.key}"
        )
        self._inflight[slot.key] = task

        def forget(_task: asyncio.Task[None], key: str = slot.key) -> None:
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
            verdict = await self._fetcher.run(slot, probe=probe, reschedule=True)
        except BudgetError as exc:
            log.debug("%s waits: %s", slot.key, exc)
            return
        except MonitorError as exc:  # the store refused: keep the slot due, back off
            self._store_refused(slot, exc)
            return
        except Exception:  # a bug must not kill the daemon silently: log it, keep the slot due
            log.exception("fetch of %s crashed", slot.creator.user_id)
            return
        now = self._clock()
        # DONE: the fetcher moved the slot on in the transaction that recorded the fetch
        if verdict is Verdict.BROKEN:
            slot.broken = True
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
        hold's ``flush``) and resume dispatch if it takes the write. Cycles still ending need
        no wait: an answer that comes back during the probe joins the hold, after it in order.
        """
        hold = self._fetcher.hold
        if self._store_fault is None and not hold.waiting:
            return True
        now = self._clock()
        if self._store_fault is not None and now < self._store_fault.until:
            return False
        try:
            stored = await hold.flush(self._store, self._fetcher.meter.persist)
        except MonitorError as exc:
            self._store_refused(None, exc, probe=True)
            return False
        log.info(
            "the database takes writes again (%d held answers stored); dispatch resumed",
            len(stored),
        )
        self._store_fault = None
        await self._evaluate_stored(stored)
        return True

    async def _evaluate_stored(self, records: list[FetchRecord]) -> None:
        """The rules of the creators whose held answers were just stored."""
        seen: set[int] = set()
        for record in records:
            slot = self._by_id.get((record.creator_id, record.variant))
            if slot is None or slot.creator_id in seen:
                continue
            seen.add(slot.creator_id)
            try:
                await self._fetcher.evaluate(slot)
            except MonitorError as exc:
                log.error("rules of %s not evaluated: %s", slot.creator.user_id, exc)
                return

    def _store_refused(self, slot: Slot | None, exc: MonitorError, *, probe: bool = False) -> None:
        """Pause dispatch with a doubling backoff; log when it starts, not on every try. Only
        a failed probe doubles the pause: cycles ending under the same fault leave it be."""
        now = self._clock()
        first, cap = _STORE_BACKOFF
        fault = self._store_fault
        quiet = isinstance(exc, AnswerHeld | WritesRefused)
        if fault is not None and quiet and not probe:
            return
        pause = first if fault is None else min(cap, fault.pause * 2)
        if fault is None:
            log.error(
                "the database refuses writes, dispatch paused (no call is sent; a write is "
                "tried again, backing off to %.0f s): %s",
                cap,
                exc,
            )
        self._store_fault = StoreFault(until=now + timedelta(seconds=pause), pause=pause)
        if slot is None or quiet:
            return  # held: the slot moved on with its answer; refused: no call was made
        # the call never went (the ledger refused it): it goes to the back of the queue
        slot.due_at = max(slot.due_at, now) + timedelta(seconds=cap)

    def reconfigure(self, config: Config, slots: dict[str, Slot]) -> None:
        """A reloaded config: new limits and the new set of slots (in-flight ones finish)."""
        self.config = config
        self._fetcher.config = config
        self.sizer.retune(config)
        self.slots = slots
        if self.claims is not None:
            self._by_id = _by_id(slots)
            self.claims.lease = config.schedule.lease
        self._wake.set()

    def stop_accepting(self) -> None:
        self._accepting = False
        self._wake.set()

    async def wait_idle(self, grace: float) -> int:
        """Let calls on the wire finish (and be recorded) within ``grace`` seconds; cycles still
        waiting for the budget or a retry are cancelled at once (their slots stay due).
        Returns how many calls were abandoned after the grace period."""
        sending = self._fetcher.sending
        waiting = [t for key, t in self._inflight.items() if key not in sending]
        for task in waiting:
            task.cancel()
        if waiting:
            await asyncio.wait(waiting, timeout=5)
        tasks = list(self._inflight.values())
        if not tasks:
            return 0
        _done, pending = await asyncio.wait(tasks, timeout=grace)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=5)
        return len(pending)


def _by_id(slots: dict[str, Slot]) -> dict[tuple[int, Variant], Slot]:
    return {(s.creator_id, s.variant): s for s in slots.values()}


def _broken_reason(slot: Slot) -> str:
    return f"invalid parameters (400) for {slot.variant.label}"
