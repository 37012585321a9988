"""Several instances as one monitor: who this instance is, its heartbeat, the shared budget spent
in one locked transaction, the due-time bound for claims, and the one-instance lock on SQLite.

Decides nothing about what a budget allows (``budget`` does) or what to fetch (``scheduler``).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from monitor import __version__
from monitor.budget import ACCOUNT_CODES, QUOTA_EXCEEDED, Budget, BudgetState, Outcome, day_of
from monitor.errors import MonitorError, StoreError
from monitor.model import Variant
from monitor.store import BudgetStateRow, Store

if TYPE_CHECKING:  # cycle imports the meter, which imports this module
    from monitor.cycle import Slot

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Identity:
    """This process as the ``instances`` table and lease owners name it."""

    id: str
    host: str
    pid: int
    version: str
    started_at: datetime

    @classmethod
    def new(cls, now: datetime) -> Identity:
        host, pid = socket.gethostname(), os.getpid()
        # the random tail tells two runs with one recycled pid apart; 64 chars fit the column
        suffix = f":{pid}:{uuid.uuid4().hex[:6]}"
        return cls(f"{host[: 64 - len(suffix)]}{suffix}", host, pid, __version__, now)


def ready_bound(now: datetime, fetch_after: time | None, zone: ZoneInfo) -> datetime:
    """The latest stored due time whose slot may run at ``now`` under ``schedule.fetch_after``.

    ``cadence.apply_window`` never moves a slot earlier and keeps order, so the slots ready now
    are exactly those stored at or before this bound: a claim query can filter on it.
    """
    if fetch_after is None:
        return now
    local = now.astimezone(zone)
    if local.time().replace(tzinfo=None) >= fetch_after:
        return now
    # before today's window opens: today's slots wait for it; earlier days' slots have opened
    midnight = datetime.combine(local.date(), time(0), tzinfo=zone).astimezone(UTC)
    return min(now, midnight - timedelta(microseconds=1))


class Claims:
    """This instance's side of sharing the schedule: it takes due slots from the database
    (whatever instance moved them last) under a lease, and hands them back when done."""

    def __init__(self, store: Store, owner: str, lease: timedelta) -> None:
        self._store = store
        self.owner = owner
        self.lease = lease

    async def take(
        self,
        slots: Mapping[tuple[int, Variant], Slot],
        busy: Collection[str],
        *,
        now: datetime,
        due_before: datetime,
        limit: int,
    ) -> list[Slot]:
        """Lease up to ``limit`` due slots, most overdue first, refreshed with what the database
        holds (due time, last success, failures). A claimed slot this instance cannot run (not
        in its config, or already running here) is given back at once."""
        claims = await self._store.claim_due(
            owner=self.owner, now=now, until=now + self.lease, due_before=due_before, limit=limit
        )
        taken = []
        for claim in claims:
            slot = slots.get((claim.creator_id, claim.variant))
            if slot is None or slot.key in busy:
                await self._store.finish_lease(claim.creator_id, claim.variant, owner=self.owner)
                continue
            slot.due_at = claim.next_due_at
            slot.last_success_at = claim.last_success_at
            slot.consecutive_failures = claim.consecutive_failures
            slot.last_code = claim.last_code
            taken.append(slot)
        return taken

    async def give_back(
        self, slot: Slot, *, broken_at: datetime | None = None, reason: str | None = None
    ) -> bool:
        """End the lease (the slot keeps the due time the fetch stored, or is marked broken);
        False when the lease had run out and another instance may hold the slot now."""
        return await self._store.finish_lease(
            slot.creator_id,
            slot.variant,
            owner=self.owner,
            broken_at=broken_at,
            broken_reason=reason,
        )


def hard_pause(budget: Budget, state: BudgetState, now: datetime) -> str | None:
    """Why ordinary calls may not go at ``now`` (quota or account pause), else None."""
    settled = budget.settle(state, now)
    if settled.pause_code in ACCOUNT_CODES or (
        settled.pause_code == QUOTA_EXCEEDED and settled.is_paused(now)
    ):
        return settled.pause_reason or f"paused (code {settled.pause_code})"
    return None


def _row(state: BudgetState) -> BudgetStateRow:
    return BudgetStateRow(**state.to_row())  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class Spend:
    """The answer of one ``try_spend``: the call was counted, must wait, or may not go."""

    before: BudgetState
    after: BudgetState
    delay: float = 0.0  # > 0: nothing counted, ask again after this many seconds
    refused: str | None = None  # why it may not go now: a hard pause or the daily cap
    day_full: bool = False

    @property
    def granted(self) -> bool:
        return self.delay <= 0 and self.refused is None


async def try_spend(store: Store, budget: Budget, now: datetime, *, probe: bool = False) -> Spend:
    """One attempt to count a call against the shared budget, in one locked transaction:
    granted (ledger reserved, bucket spent and saved), a delay (the bucket or the 60 s cap
    holds it back), or refused (the daily cap, or a hard pause this call is not the probe for).
    """
    day = day_of(now, budget.zone)
    full = f"daily_calls ({budget.daily_calls}) used up for {day}"
    async with store.budget_txn(day, _row(budget.initial(now)), now=now) as txn:
        state = BudgetState.from_row(txn.row)
        waits = budget.waits(state, now, txn.calls)
        if waits["daily"] > timedelta(0):
            return Spend(state, state, refused=full, day_full=True)
        reason = hard_pause(budget, state, now)
        if reason is not None and not (probe and state.is_probe_due(now)):
            return Spend(state, state, refused=f"calls paused: {reason}")
        delay = max(waits.values()).total_seconds()
        if delay > 0:
            return Spend(state, state, delay=delay)
        calls_before = txn.calls
        if not await txn.reserve(budget.daily_calls):
            return Spend(state, state, refused=full, day_full=True)
        spent = budget.spend(state, now, calls_before)
        await txn.save(_row(spent), now=now)
        return Spend(state, spent)


async def apply_feedback(
    store: Store, budget: Budget, outcome: Outcome, now: datetime, *, billed: bool
) -> tuple[BudgetState, BudgetState]:
    """The upstream's answer applied to the shared state in one locked transaction; returns
    (before, after) so the caller can log a pause or a resume once."""
    day = day_of(now, budget.zone)
    async with store.budget_txn(day, _row(budget.initial(now)), now=now) as txn:
        if billed:
            await txn.record_billed()
        before = BudgetState.from_row(txn.row)
        after = budget.on_result(before, outcome, now)
        if after != before:
            await txn.save(_row(after), now=now)
        return before, after


async def touch(store: Store, budget: Budget, now: datetime) -> None:
    """Rewrite the stored budget row unchanged: proves the database takes writes."""
    async with store.budget_txn(
        day_of(now, budget.zone), _row(budget.initial(now)), now=now
    ) as txn:
        await txn.save(txn.row, now=now)


async def load_state(store: Store, budget: Budget, now: datetime) -> BudgetState:
    """The shared state as stored now (a fresh bucket before the first save)."""
    row = await store.load_budget_state()
    return budget.initial(now) if row is None else BudgetState.from_row(row)


async def keep_alive(
    store: Store,
    me: Identity,
    clock: Clock,
    *,
    every: timedelta,
    lease: timedelta,
    sleep: Sleep = asyncio.sleep,
) -> None:
    """Heartbeat and renew this instance's leases every ``every`` until cancelled.

    A database outage is logged when it starts and when it ends; leases not renewed within
    ``lease`` pass to other instances, which is the point.
    """
    failing = False
    while True:
        now = clock()
        try:
            await store.heartbeat(
                me.id,
                host=me.host,
                pid=me.pid,
                version=me.version,
                started_at=me.started_at,
                now=now,
            )
            await store.renew_leases(me.id, now=now, until=now + lease)
        except MonitorError as exc:
            if not failing:
                log.error("heartbeat failed, leases may pass to other instances: %s", exc)
            failing = True
        else:
            if failing:
                log.info("heartbeat restored")
            failing = False
        await sleep(every.total_seconds())


@contextlib.contextmanager
def sole_instance(database: Path | None) -> Iterator[None]:
    """Hold an exclusive lock on ``<database>.lock`` while the daemon runs on SQLite.

    SQLite serves one daemon: a second one on the same file is refused here, before it can
    spend the budget or fetch anything. The kernel drops the lock when the process dies, so a
    crash never leaves a stale lock behind. ``database`` None (PostgreSQL, memory): no lock.
    """
    if database is None:
        yield
        return
    path = database.with_name(database.name + ".lock")
    try:
        handle = path.open("a+", encoding="utf-8")
    except OSError as exc:
        raise StoreError(f"cannot open the lock file {path}: {exc.strerror}") from exc
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise StoreError(
                f"another creator-monitor (pid {holder}) is running on {database}; SQLite serves "
                "one instance: stop the other one, or share a PostgreSQL database between them"
            ) from exc
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
