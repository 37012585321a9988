"""The fetch path's parts: the store, the client, the gate and the fetcher for ``run``,
``fetch``, ``fetch --all``, ``resume`` and ``demo`` alike, on an exit stack.

Decides nothing itself; every paid call from any command passes the one ``BudgetGate`` built here.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

from monitor.app.stores import fetch_store, upgrade_schema
from monitor.config import Config, resolve_token
from monitor.errors import MonitorError, SchemaOutOfDate
from monitor.ops.wallclock import Clock, Monotonic
from monitor.policy.budget import BudgetPolicy
from monitor.service.alerting.evaluation import Alerting
from monitor.service.fetching import cluster
from monitor.service.fetching.fetch import Fetcher, Observe
from monitor.service.fetching.gate import BudgetGate
from monitor.service.fetching.slot import Ending, Run, Slot, SlotFate
from monitor.service.fetching.spill import Spill, spill_path
from monitor.store import FetchRecord, Store
from monitor.upstream.client import JustOneClient

__all__ = [
    "BudgetGate",
    "Ending",
    "FetchParts",
    "Fetcher",
    "Run",
    "Slot",
    "SlotFate",
    "Spill",
    "fetch_parts",
    "held_answers",
]

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class FetchParts:
    """What a command that pays for calls works with; all built by ``fetch_parts``."""

    store: Store
    client: JustOneClient
    gate: BudgetGate
    fetcher: Fetcher
    alerting: Alerting | None
    spill: Spill
    #: answers an earlier run held, stored at open: their creators' rules have not run yet
    replayed: list[FetchRecord]


@asynccontextmanager
async def fetch_parts(
    config: Config,
    *,
    clock: Clock,
    sleep: Sleep = asyncio.sleep,
    monotonic: Monotonic | None = None,
    environ: Mapping[str, str] | None = None,
    sole_instance: bool = False,
    alerting: bool = False,
    observe: Observe | None = None,
    on_latency: Callable[[float], None] | None = None,
    max_connections: int = 10,
    create_schema: bool = False,
    strict_spill: bool = False,
    retries: bool = True,
) -> AsyncIterator[FetchParts]:
    """Open the parts; closed in reverse order when the block ends.

    ``sole_instance``: the daemon on SQLite holds the one-instance lock (checked before the
    token is read, a call is spent or anything fetched). ``max_connections``: one connection
    per possible fetch, so a call the gate let go never then queues in the HTTP pool and
    reaches the upstream later than the budget stamped it. ``create_schema``: an empty database
    is migrated first (``fetch`` on a fresh machine). Paid answers an earlier run could not
    store (the spill file) are stored before anything else; ``strict_spill`` (the commands):
    while the database still refuses them, refuse to start (no call is sent). ``retries``:
    off for commands, which make one call per series and report how it went.
    """
    async with AsyncExitStack() as stack:
        store = fetch_store(config, stack, clock)
        if sole_instance:
            stack.enter_context(cluster.sole_instance(store.sqlite_path))
        try:
            await store.check_schema()
        except SchemaOutOfDate as exc:
            # a command's first paid call needs the ledger: an empty database gets the schema
            # (the daemon and a database at another revision still ask for ``db upgrade``)
            if not create_schema or exc.current is not None:
                raise
            await upgrade_schema(config.storage.url)  # alembic: loaded only then
        spill, replayed = await _open_spill(
            config, store, environ, strict=strict_spill, rules=alerting
        )
        token = resolve_token(config, environ)
        api = config.api
        client = JustOneClient(
            base_url=api.base_url,
            token=token,
            timeout=api.timeout,
            max_response_bytes=api.max_response_bytes,
            connect_retries=api.connect_retries,
            max_connections=max_connections,
            clock=clock,  # dates the answers it checks with the fetcher's clock
        )
        stack.push_async_callback(client.aclose)
        gate = await BudgetGate.open(
            BudgetPolicy.from_config(config), store, clock=clock, sleep=sleep, monotonic=monotonic
        )
        gate.use_token(token.get_secret_value())
        rules = Alerting(config, store, clock=clock) if alerting else None
        fetcher = Fetcher(
            config,
            client,
            store,
            gate,
            rules,
            clock=clock,
            sleep=sleep,
            observe=observe,
            on_latency=on_latency,
            spill=spill,
        )
        fetcher.retries = retries
        yield FetchParts(store, client, gate, fetcher, rules, spill, replayed)


def held_answers(
    config: Config, environ: Mapping[str, str] | None = None
) -> tuple[int, str] | None:
    """Paid answers an earlier run left in the spill file for the database (how many, where);
    None when none wait. A read: ``status`` shows it as the store's hold."""
    env = os.environ if environ is None else environ
    spill = Spill(spill_path(config.storage.url, config.storage.spill_file, env))
    return (spill.held, spill.where()) if spill.held else None


async def _open_spill(
    config: Config,
    store: Store,
    environ: Mapping[str, str] | None,
    *,
    strict: bool,
    rules: bool = False,
) -> tuple[Spill, list[FetchRecord]]:
    """The spill of paid answers the database refuses; a spill file an earlier run left is
    stored first (and returned). The daemon starts paused on it when the database still
    refuses (its probe stores it later); a command refuses to send anything. With ``rules``
    (a process that runs them), the owed rules on file are read too (``Spill.take_owed``)."""
    env = os.environ if environ is None else environ
    spill = Spill(spill_path(config.storage.url, config.storage.spill_file, env))
    replayed: list[FetchRecord] = []
    if spill.waiting or (rules and spill.owes):
        try:
            replayed = await spill.replay(store)
        except MonitorError as exc:
            if strict:
                raise MonitorError(
                    f"{spill.held} paid answers held in {spill.where()} wait for the database, "
                    f"which still refuses writes ({exc}); no call sent"
                ) from exc
            log.error("held paid answers in %s not stored yet: %s", spill.where(), exc)
    return spill, replayed
