"""Support for the alerting, digest, backtest and end-to-end alert tests: stores seeded through
the store's own API, a creator whose scripted fall reads exactly -40.0 %, and ``Loop``: the real
``fetch.Fetcher`` + ``alerting.Alerting`` + ``notify.Notifier`` on a settable clock, against the
simulator over HTTP and a ``json://`` receiver. No assertions live here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from pydantic import SecretStr
from sqlalchemy import select

from monitor.config import Config, parse_config
from monitor.errors import BudgetError
from monitor.model import CoreData, Creator, DailyPoint, Variant
from monitor.notify.ports import DrainReport
from monitor.notify.sender import Notifier
from monitor.policy.budget import BudgetPolicy
from monitor.policy.delivery import DeliveryPolicy
from monitor.policy.rules import AccountSubject
from monitor.service.alerting.evaluation import Alerting
from monitor.service.fetching.fetch import Fetcher
from monitor.service.fetching.gate import BudgetGate
from monitor.service.fetching.slot import Slot, SlotFate
from monitor.service.fetching.slot_loading import load_slots
from monitor.store import FetchRecord, Store, migrate
from monitor.store.schema import alerts, notifications
from monitor.upstream import series as sim_series
from monitor.upstream.client import JustOneClient
from support.sim import FakeClock, creator_id

LILYY = "5c3bf7f7000000000602fd63"
BO = "5a0b1c2d3e4f5a6b7c8d9e0f"
MIA = "5a1b2c3d4e5f60718293a4b5"


async def open_store(url: str, clock: FakeClock) -> Store:
    await migrate.upgrade(url)
    return Store.open(url, clock=clock)


def points(start: date, reads: Sequence[int]) -> CoreData:
    """A response whose ``read`` follows ``reads`` day by day (imp = 10×, engage = read // 10)."""
    daily = tuple(
        DailyPoint(
            date_key=start + timedelta(days=i),
            imp=10 * r,
            read=r,
            engage=r // 10,
            cpm=12.5,
        )
        for i, r in enumerate(reads)
    )
    return CoreData(summary=daily[-1], daily=daily)


async def seed(
    store: Store, creators: Sequence[Creator], series: dict[str, CoreData], at: datetime
) -> dict[str, int]:
    """Track ``creators`` and store one successful fetch per entry of ``series``."""
    ids = await store.sync_creators(creators)
    for user_id, core in series.items():
        await store.record_fetches(
            [
                FetchRecord(
                    ids[user_id],
                    Variant(),
                    started_at=at,
                    due_at=None,
                    latency_ms=5,
                    http_status=200,
                    code=0,
                    billed=True,
                    error=None,
                    data=core,
                    raw_body=None,
                )
            ]
        )
    return ids


async def table(store: Store, name: str) -> list[dict[str, Any]]:
    """Every row of ``alerts`` or ``notifications``, oldest first."""
    t = {"alerts": alerts, "notifications": notifications}[name]
    async with store._read() as conn:
        result = await conn.execute(select(t).order_by(t.c.id))
        return [dict(r) for r in result.mappings()]


def falling_creator(today: date) -> tuple[str, int, int]:
    """(user_id, old, new): a simulated creator with a price and no gaps whose reads, scaled by
    0.6 from yesterday on, read exactly -40.0 % against the day before (its own drift is nil)."""
    variant = Variant()
    newest, before = today - timedelta(days=1), today - timedelta(days=2)
    fall = [sim_series.Script("read", 0.6, newest)]
    for n in range(20_000):
        user_id = creator_id(n)
        if not sim_series.has_price(user_id) or sim_series.has_gaps(user_id):
            continue
        old = sim_series.point(user_id, variant, before)["read"]
        new = sim_series.point(user_id, variant, newest, fall)["read"]
        if old >= 1000 and round((new - old) / old * 100, 1) == -40.0:
            return user_id, old, new
    raise AssertionError("no creator falls by exactly 40.0 %")


@dataclass
class Loop:
    """The real pieces of one daemon, driven step by step on a fake clock."""

    config: Config
    store: Store
    clock: FakeClock
    gate: BudgetGate
    fetcher: Fetcher
    alerting: Alerting
    notifier: Notifier
    slots: dict[str, Slot]

    async def fetch(self, user_id: str, *, probe: bool = False) -> SlotFate | None:
        """One due time for ``user_id`` through the full fetch; None when the budget refused."""
        slot = self.slots[user_id]
        try:
            run = await self.fetcher.run(slot, probe=probe)
        except BudgetError:
            return None
        assert run.stored, run.reason
        return run.verdict

    async def account(self) -> int:
        """The daemon's account job: account rules on the gate's current state."""
        reading = await self.gate.reading()
        subject = AccountSubject(
            now=self.clock(),
            used_today=reading.calls_today,
            daily_calls=reading.daily_calls,
            pause_code=reading.pause_code if reading.paused else None,
            pause_reason=reading.pause_reason,
        )
        return await self.alerting.evaluate_account(subject)

    async def drain(self) -> DrainReport:
        return await self.notifier.drain(self.clock())


@asynccontextmanager
async def running(config: Config, clock: FakeClock, token: str) -> AsyncIterator[Loop]:
    """``Loop`` on ``config`` (storage, API base URL and channels already set); closes all."""
    store = await open_store(config.storage.url, clock)

    async def sleep(seconds: float) -> None:
        clock.advance(seconds=seconds)

    client = JustOneClient(base_url=config.api.base_url, token=SecretStr(token))
    try:
        gate = await BudgetGate.open(
            BudgetPolicy.from_config(config), store, clock=clock, sleep=sleep
        )
        alerting = Alerting(config, store, clock=clock)
        fetcher = Fetcher(config, client, store, gate, alerting, clock=clock, sleep=sleep)
        slots = await load_slots(config, store, clock())
        by_user = {s.creator.user_id: s for s in slots.values()}
        notifier = Notifier.from_config(
            store,
            config,
            owner="e2e",
            environ={},
            policy=DeliveryPolicy.from_config(config),
            jitter=0.0,
            send_timeout=timedelta(seconds=2),
        )
        async with notifier:
            yield Loop(config, store, clock, gate, fetcher, alerting, notifier, by_user)
    finally:
        await client.aclose()
        await store.close()


def loop_config(
    db_url: str, base_url: str, hook: str, creators: Sequence[str], rules: list[dict[str, Any]]
) -> Config:
    """A config for ``Loop``: generous budget, no retries, one channel."""
    return parse_config(
        {
            "api": {"base_url": base_url, "timeout": "5s"},
            "budget": {"calls_per_minute": 600, "burst": 50, "daily_calls": 10_000},
            "storage": {"url": db_url},
            "schedule": {"retry_attempts": 0, "probe_every": "30m"},
            "creators": [{"user_id": u, "name": f"Creator {i}"} for i, u in enumerate(creators)],
            "channels": [{"name": "team", "url": hook}],
            "rules": rules,
        }
    )
