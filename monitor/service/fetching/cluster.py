"""Several instances as one monitor: who this instance is, its heartbeat, the due-time bound for
claims, and the one-instance lock on SQLite. The shared budget is the gate's.

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
from collections.abc import Awaitable, Callable, Collection, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from monitor import __version__
from monitor.errors import MonitorError, StoreError
from monitor.model import Variant
from monitor.ops.wallclock import Clock
from monitor.service.fetching.slot import Slot
from monitor.store import Store

log = logging.getLogger(__name__)

#: an instance silent this long (or ten leases, if longer) is dropped from ``instances``
FORGET_AFTER = timedelta(days=1)

Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Instance:
    """This process as the ``instances`` table and lease owners name it."""

    id: str
    host: str
    pid: int
    version: str
    started_at: datetime

    @classmethod
    def new(cls, now: datetime) -> Instance:
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
        find: Callable[[int, Variant], Slot | None],
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
            slot = find(claim.creator_id, claim.variant)
            if slot is None or slot.key in busy:
                await self._store.finish_lease(claim.creator_id, claim.variant, owner=self.owner)
                continue
            slot.take_stored(
                claim.next_due_at,
                claim.last_success_at,
                claim.consecutive_failures,
                claim.last_code,
            )
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


async def keep_alive(
    store: Store,
    me: Instance,
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
            # instances that stopped without retiring (killed, host lost) are forgotten once
            # their leases are long gone, so ``instances`` does not grow forever
            await store.prune_instances(now - max(lease * 10, FORGET_AFTER))
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
    # the file itself, however it is reached (a symlink, a relative path, ..): two daemons
    # on one database must meet on one lock
    database = Path(os.path.realpath(database))
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
