"""The real fetch pipeline for service tests: a ``Fetcher`` reading the simulator over HTTP
through the one gate, on the test's clock (its sleeps move the clock), with the slots the
config schedules."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from pydantic import SecretStr

from monitor.config import Config, parse_config
from monitor.policy.budget import BudgetPolicy
from monitor.service.alerting.evaluation import Alerting
from monitor.service.fetching.fetch import Fetcher
from monitor.service.fetching.gate import BudgetGate
from monitor.service.fetching.slot import Slot
from monitor.service.fetching.slot_loading import load_slots
from monitor.store import Store
from monitor.upstream.client import JustOneClient
from monitor.upstream.simulator import Simulator
from support.store import FakeClock


@dataclass
class Pipeline:
    config: Config
    store: Store
    fetcher: Fetcher
    #: the scheduled series by key (``creator/variant``)
    slots: dict[str, Slot]

    async def visit(self, key: str) -> None:
        """Fetch one series now, as the daemon does when it is due; it must be stored."""
        run = await self.fetcher.run(self.slots[key], reschedule=True)
        assert run.stored, run.reason


@asynccontextmanager
async def pipeline(
    document: Mapping[str, Any],
    *,
    sim: Simulator,
    store: Store,
    clock: FakeClock,
    token: str,
    rules: bool = False,
) -> AsyncIterator[Pipeline]:
    """The pipeline for ``document`` (a config's tables, over a generous budget and no
    retries); ``rules``: the fetcher runs the rules after each fetch."""
    config = parse_config(
        {
            "api": {"base_url": sim.base_url, "timeout": "5s"},
            "storage": {"url": "sqlite+aiosqlite:///unused.db"},
            "budget": {"calls_per_minute": 600, "burst": 50, "daily_calls": 10_000},
            "schedule": {"retry_attempts": 0},
            **document,
        }
    )

    async def sleep(seconds: float) -> None:
        clock.advance(timedelta(seconds=seconds))

    async with JustOneClient(
        base_url=sim.base_url, token=SecretStr(token), timeout=timedelta(seconds=5), clock=clock
    ) as client:
        gate = await BudgetGate.open(
            BudgetPolicy.from_config(config), store, clock=clock, sleep=sleep
        )
        alerting = Alerting(config, store, clock=clock) if rules else None
        fetcher = Fetcher(config, client, store, gate, alerting, clock=clock, sleep=sleep)
        slots = await load_slots(config, store, clock())
        yield Pipeline(config, store, fetcher, dict(slots))
