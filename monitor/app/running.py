"""The daemon's parts beside the fetch path: its identity, the notifier, the heartbeat, the
dispatcher over the loaded schedule (with the new series' rows written after READY), the
balance job, the telemetry's gauges, and a reloaded config handed to the running parts.

Each part registers its own end where it is built: on ``stack`` what releases it, on
``stopping`` what ends its work when the daemon is asked to stop (the daemon unwinds
``stopping`` first, then ``stack``). Both run newest first: a part built before another is
stopped after it, so what the later one still needs (the heartbeat's leases, the notifier's
flush) outlives it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AsyncExitStack
from datetime import datetime, timedelta

from pydantic import SecretStr

from monitor.app.fetching import FetchParts, fetch_parts
from monitor.config import Config
from monitor.errors import MonitorError
from monitor.notify.sender import Notifier
from monitor.ops.telemetry import Telemetry
from monitor.ops.wallclock import Clock, Monotonic
from monitor.policy.budget import BudgetPolicy, daily_left
from monitor.policy.concurrency import InFlightSizer, pool_size
from monitor.policy.delivery import DeliveryPolicy
from monitor.service.alerting.evaluation import Alerting
from monitor.service.fetching import cluster
from monitor.service.fetching.balance import BalanceReader, OnReading
from monitor.service.fetching.dispatch import Dispatcher, finish_or_cancel
from monitor.service.fetching.fetch import Observe
from monitor.service.fetching.gate import ACCOUNT_HYSTERESIS, BudgetGate
from monitor.service.fetching.reach import Reach, upstream_host
from monitor.service.fetching.slot_loading import load_slots, write_new_slots
from monitor.service.fetching.spill import Spill
from monitor.store import Store
from monitor.upstream.client import JustOneClient

__all__ = [
    "ACCOUNT_HYSTERESIS",
    "Alerting",
    "BalanceReader",
    "BudgetGate",
    "Dispatcher",
    "Dispatching",
    "Heartbeat",
    "Identity",
    "JustOneClient",
    "Notifier",
    "Reach",
    "Spill",
    "Store",
    "balance_reader",
    "daemon_fetch_parts",
    "daemon_notifier",
    "finish_or_cancel",
    "new_identity",
    "new_reach",
    "reconfigure",
    "refresh_telemetry",
    "start_dispatching",
]

#: the daemon's lines keep the one logger name they are known by
log = logging.getLogger("monitor.daemon")

Sleep = Callable[[float], Awaitable[None]]
Identity = cluster.Instance


def new_identity(clock: Clock) -> Identity:
    """This process as the ``instances`` table and the leases know it."""
    return cluster.Instance.new(clock())


async def daemon_fetch_parts(
    config: Config,
    stack: AsyncExitStack,
    *,
    clock: Clock,
    sleep: Sleep,
    monotonic: Monotonic | None,
    environ: Mapping[str, str] | None,
    observe: Observe,
) -> tuple[FetchParts, InFlightSizer]:
    """The fetch path as the daemon runs it (``fetching.fetch_parts``), released with
    ``stack``: the one-instance lock on SQLite, the rules, one connection per possible fetch,
    and the in-flight sizer each call's latency feeds (the dispatcher sizes by it)."""
    sizer = InFlightSizer.from_config(config)
    parts = await stack.enter_async_context(
        fetch_parts(
            config,
            clock=clock,
            sleep=sleep,
            monotonic=monotonic,
            environ=environ,
            sole_instance=True,
            alerting=True,
            observe=observe,
            on_latency=sizer.observe,
            max_connections=pool_size(config),
        )
    )
    return parts, sizer


def balance_reader(
    config: Config,
    parts: FetchParts,
    *,
    clock: Clock,
    observe: Observe,
    on_reading: OnReading,
    every: timedelta | None = None,
) -> BalanceReader:
    """The balance job on the fetch path's client, store and gate: it reads through the one
    gate, and ``on_reading`` (the account rules) runs after each reading; ``every`` overrides
    ``[account] balance_every`` (the demo)."""
    return BalanceReader(
        config,
        parts.client,
        parts.store,
        parts.gate,
        clock=clock,
        spill=parts.spill,
        observe=observe,
        on_reading=on_reading,
        every=every,
    )


def new_reach(config: Config) -> Reach:
    """Whether the upstream answers, as the calls find it (``/healthz`` and the log say so)."""
    return Reach(upstream_host(config.api.base_url))


def daemon_notifier(
    config: Config, store: Store, *, owner: str, environ: Mapping[str, str] | None
) -> Notifier:
    """The daemon's notifier; a dead channel must not silence the others: it runs, says so
    once, and dead-letters that channel's messages."""
    notifier = Notifier.from_config(
        store, config, owner=owner, environ=environ, policy=DeliveryPolicy.from_config(config)
    )
    for name, problem in notifier.problems.items():
        log.error(
            "channel %r: %s; its messages are dead-lettered until the config is fixed",
            name,
            problem,
        )
    return notifier


class Heartbeat:
    """The ``instances`` row and, on a shared database, the renewal of this instance's leases:
    every third of ``schedule.lease`` (at most every 30 s, for ``status``), from ``start``.
    Built (and its stop registered) before the dispatcher, whose claims need the leases, and
    started once the schedule is loaded; on a stop it ends after the dispatcher and gives the
    leases back now, not at their expiry."""

    def __init__(
        self,
        config: Config,
        store: Store,
        identity: Identity,
        stack: AsyncExitStack,
        stopping: AsyncExitStack,
        *,
        clock: Clock,
        sleep: Sleep,
    ) -> None:
        self._every = min(config.schedule.lease / 3, timedelta(seconds=30))
        self._lease = config.schedule.lease
        self._store = store
        self._identity = identity
        self._clock = clock
        self._sleep = sleep
        self._task: asyncio.Task[None] | None = None
        stack.push_async_callback(self._cancel)
        stopping.push_async_callback(self.stop)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(
            cluster.keep_alive(
                self._store,
                self._identity,
                self._clock,
                every=self._every,
                lease=self._lease,
                sleep=self._sleep,
            ),
            name="heartbeat",
        )

    async def _cancel(self) -> None:
        if self._task is not None:
            await _cancel(self._task)

    async def stop(self) -> None:
        if self._task is None:
            return
        await self._cancel()
        with contextlib.suppress(MonitorError):
            await self._store.retire_instance(self._identity.id)


class Dispatching:
    """The dispatcher over the loaded schedule, and the schedule rows of series new at this
    start, written after READY (``write_new_rows``)."""

    def __init__(self, config: Config, dispatcher: Dispatcher, store: Store) -> None:
        self.config = config
        self.dispatcher = dispatcher
        self._store = store
        self._writing: asyncio.Task[None] | None = None

    def write_new_rows(self) -> None:
        self._writing = asyncio.get_running_loop().create_task(
            self._write_new_rows(), name="new schedule rows"
        )

    async def _write_new_rows(self) -> None:
        """The schedule rows of series new at this start (``slot_loading.write_new_slots``)."""
        try:
            written = await write_new_slots(self.dispatcher.slots, self._store)
        except MonitorError as exc:
            log.warning(
                "the first due times of new series are not all stored (%s); each fetch "
                "stores its own, and the next start places the rest again",
                exc,
            )
            return
        except Exception:  # a bug must not surface only as a crash at the stop
            log.exception("storing the first due times of new series failed")
            return
        if written:
            log.info("stored the first due times of %d new series", written)

    async def stop(self) -> None:
        """Calls on the wire get ``schedule.grace``; then at most 5 s each for the new series'
        schedule rows (else the next start places them again) and the owed rules."""
        dispatcher = self.dispatcher
        dispatcher.stop_accepting()
        cancelled = await dispatcher.wait_idle(self.config.schedule.grace.total_seconds())
        if cancelled:
            log.warning("stopped with %d calls abandoned after the grace period", cancelled)
        if self._writing is not None:
            await finish_or_cancel([self._writing], 5)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                await dispatcher.evaluate_owed_now()
        owed = dispatcher.owed_creators()
        if owed:
            where = dispatcher.owed_where()
            then = "each one's next fetch" if where.startswith("memory") else "the next start"
            log.warning(
                "stopped with the rules of %d creators not run (the database refused them); "
                "kept in %s, they run at %s",
                owed,
                where,
                then,
            )


async def start_dispatching(
    config: Config,
    parts: FetchParts,
    stopping: AsyncExitStack,
    *,
    instance: str,
    sizer: InFlightSizer,
    clock: Clock,
) -> Dispatching:
    """Load the schedule and build the dispatcher on it; the answers an earlier run held have
    their rules run now. On a database of its own the new series' schedule rows are written
    after READY; other instances claim work from those rows: not then."""
    store = parts.store
    slots = await load_slots(config, store, clock(), write_new=store.shared)
    claims = cluster.Claims(store, instance, config.schedule.lease) if store.shared else None
    dispatcher = Dispatcher(
        config,
        parts.fetcher,
        store,
        slots,
        gate=parts.gate,
        spill=parts.spill,
        clock=clock,
        claims=claims,
        sizer=sizer,
    )
    await dispatcher.evaluate_stored(parts.replayed)
    dispatching = Dispatching(config, dispatcher, store)
    stopping.push_async_callback(dispatching.stop)
    return dispatching


async def reconfigure(
    config: Config,
    token: SecretStr,
    *,
    client: JustOneClient,
    gate: BudgetGate,
    alerting: Alerting,
    dispatching: Dispatching,
    balance: BalanceReader,
    store: Store,
    clock: Clock,
) -> int:
    """Hand a reloaded (and checked) config to the running parts; returns how many series the
    new schedule has."""
    client.use_token(token)
    gate.use_token(token.get_secret_value())
    if gate.token_changed():
        log.info("the API token changed since the account pause began: trying it now")
    gate.with_budget(BudgetPolicy.from_config(config))
    alerting.reconfigure(config)
    balance.reconfigure(config)
    slots = await load_slots(config, store, clock())
    dispatching.config = config
    dispatching.dispatcher.reconfigure(config, slots)
    return len(slots)


async def refresh_telemetry(
    telemetry: Telemetry, gate: BudgetGate, dispatcher: Dispatcher, store: Store, now: datetime
) -> None:
    """Before each scrape: the gauges of the running parts (counters are counted as calls
    end)."""
    reading = await gate.reading()
    telemetry.set_budget(
        tokens_left=reading.tokens,
        daily_calls_left=daily_left(reading.calls_today, reading.daily_calls),
    )
    telemetry.set_paused(reading.pause_code if reading.paused else None)
    funds = gate.funds
    telemetry.set_funds(
        balance=None if funds.balance is None else float(funds.balance),
        days_left=funds.days_left,
    )
    telemetry.set_inflight(gate.on_the_wire)
    telemetry.set_oldest_overdue(dispatcher.oldest_overdue(now))
    counts = await store.outbox_counts()
    telemetry.set_outbox(depth=counts["pending"], dead_letters=counts["dead"])


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
