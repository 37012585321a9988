"""The balance job (``service.fetching.balance``) with real parts: the simulator over HTTP on a
settable clock, the one gate on SQLite and PostgreSQL. Readings are stored exactly; the price
per call and the days left follow the billed calls; a 601 pause ends at the first reading with
money, before the next probe, for every instance on the database; an endpoint that does not
answer is warned about once and not read again; a reading is a call like any other."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from pydantic import SecretStr
from support.sim import creator_id
from support.store import T0, FakeClock

from monitor.config import Config, parse_config
from monitor.errors import AccountBlocked, BudgetError
from monitor.model import Creator, Variant
from monitor.policy.budget import BudgetPolicy
from monitor.service.fetching.balance import PAUSED_EVERY, BalanceReader
from monitor.service.fetching.gate import BudgetGate
from monitor.store import FetchRecord, Store
from monitor.upstream.client import JustOneClient
from monitor.upstream.simulator import SimKnobs, Simulator

USERS = [creator_id(n) for n in range(10)]
PRICE = Decimal("0.05")


def _config(base_url: str, **account: Any) -> Config:
    """10 creators every hour: the plan bills 240 calls a day."""
    return parse_config(
        {
            "api": {"base_url": base_url, "timeout": "5s"},
            "budget": {"calls_per_minute": 600, "burst": 100, "daily_calls": 5000},
            "defaults": {"every": "1h"},
            "creators": [{"user_id": u} for u in USERS],
            "account": account,
        }
    )


@dataclass
class Parts:
    config: Config
    sim: Simulator
    client: JustOneClient
    gate: BudgetGate
    reader: BalanceReader
    store: Store
    clock: FakeClock
    readings_told: list[int]

    async def spend(self, calls: int) -> None:
        """``calls`` core_data calls through the gate, recorded, as a fetch makes them."""
        ids = await self.store.sync_creators([Creator(u) for u in USERS])
        for n in range(calls):
            ticket = await self.gate.acquire()
            error: Exception | None = None
            try:
                result = await self.client.core_data(USERS[n % len(USERS)])
            except AccountBlocked as exc:
                error = exc
            finally:
                self.gate.answered()
            billed = error is None and result.billed
            await self.gate.feedback(error, billed=billed, sent_at=ticket.sent_at)  # type: ignore[arg-type]
            record = FetchRecord(
                ids[USERS[n % len(USERS)]],
                Variant(),
                self.clock(),
                code=None if error else 0,
                billed=billed,
                error=None if error is None else "601",
            )
            await self.store.record_fetch(record)

    def balance_calls(self) -> int:
        return self.sim.counters().by_endpoint.get("balance", 0)


@asynccontextmanager
async def parts(
    store: Store, clock: FakeClock, token: str, knobs: SimKnobs, **account: Any
) -> AsyncIterator[Parts]:
    async with Simulator(knobs, clock=clock) as sim:
        config = _config(sim.base_url, **account)
        client = JustOneClient(base_url=sim.base_url, token=SecretStr(token), clock=clock)
        try:
            gate = await BudgetGate.open(BudgetPolicy.from_config(config), store, clock=clock)
            told: list[int] = []

            async def on_reading() -> None:
                told.append(1)

            reader = BalanceReader(config, client, store, gate, clock=clock, on_reading=on_reading)
            yield Parts(config, sim, client, gate, reader, store, clock, told)
        finally:
            await client.aclose()


async def test_each_reading_is_stored_exactly_and_the_price_and_days_left_follow(
    store: Store, clock: FakeClock, token: str
) -> None:
    knobs = SimKnobs(balance=Decimal(100), call_price=PRICE)
    async with parts(store, clock, token, knobs) as p:
        assert await p.reader.read()
        assert p.gate.funds.balance == Decimal("100.0000")
        assert p.gate.funds.price is None  # one reading: no price yet
        clock.advance(timedelta(minutes=20))
        await p.spend(40)
        clock.advance(timedelta(minutes=20))
        assert not await p.reader.tick()  # read 40 minutes ago: not due (every 1h)
        clock.advance(timedelta(minutes=20))
        assert await p.reader.tick()
        readings = await store.balance_readings()
        assert [(r.read_at, r.amount, r.currency) for r in readings] == [
            (T0, Decimal("100.0000"), "CNY"),
            (T0 + timedelta(hours=1), Decimal("98.0000"), "CNY"),
        ]
        funds = p.gate.funds
        assert funds.price == PRICE
        assert funds.calls_per_day == 240
        assert funds.days_left == pytest.approx(98 / (0.05 * 240))
        account = await p.gate.account()
        assert (account.balance, account.balance_read_at, account.price_per_call) == (
            Decimal("98.0000"),
            T0 + timedelta(hours=1),
            PRICE,
        )
        assert account.days_left == pytest.approx(8.1667, abs=1e-4)
        assert p.readings_told == [1, 1]  # the account rules ran after each reading
        # the readings went through the gate: counted as calls, not as billed
        assert (await p.gate.reading()).calls_today == 42
        assert (await p.gate.reading()).billed_today == 40
        assert p.balance_calls() == 2


async def test_a_top_up_between_readings_is_money_added_not_a_price(
    store: Store, clock: FakeClock, token: str
) -> None:
    knobs = SimKnobs(balance=Decimal(10), call_price=PRICE)
    async with parts(store, clock, token, knobs) as p:
        await p.reader.read()
        await p.spend(20)  # 10.00 → 9.00
        clock.advance(timedelta(hours=1))
        await p.reader.read()
        p.sim.set_balance(Decimal(500))
        await p.spend(20)  # 500.00 → 499.00, read as a rise from 9.00
        clock.advance(timedelta(hours=1))
        await p.reader.read()
        assert [r.amount for r in await store.balance_readings()] == [
            Decimal("10.0000"),
            Decimal("9.0000"),
            Decimal("499.0000"),
        ]
        assert p.gate.funds.price == PRICE
        assert p.gate.funds.days_left == pytest.approx(499 / 12)


async def test_a_601_pause_ends_at_the_first_reading_with_money_before_the_next_probe(
    db_url: str, store: Store, clock: FakeClock, token: str, caplog: pytest.LogCaptureFixture
) -> None:
    knobs = SimKnobs(balance=PRICE, call_price=PRICE)
    async with parts(store, clock, token, knobs) as p, Store.open(db_url, clock=clock) as other:
        elsewhere = await BudgetGate.open(p.gate.budget, other, clock=clock)  # a 2nd instance
        await p.spend(2)  # the first spends the last of the money, the second gets 601
        assert p.gate.state.pause_code == 601
        next_probe = p.gate.state.paused_until
        assert next_probe == T0 + timedelta(minutes=15)
        await elsewhere.refresh()
        assert elsewhere.state.pause_code == 601
        assert p.reader.every == PAUSED_EVERY  # read every minute while money is wanting

        assert await p.reader.read()  # it goes past the pause: 0.0000 shows no money
        assert p.gate.state.pause_code == 601
        assert p.gate.state.paused_until == next_probe  # the probe stays where it was
        clock.advance(timedelta(seconds=30))
        assert not await p.reader.tick()  # read 30 s ago

        p.sim.set_balance(Decimal(20))  # topped up
        clock.advance(timedelta(seconds=30))
        with caplog.at_level(logging.INFO, logger="monitor.service.fetching.gate"):
            assert await p.reader.tick()
            assert clock() < next_probe
            assert p.gate.state.pause_code is None  # ended by the reading, as by a probe
            await elsewhere.refresh()
        assert elsewhere.state.pause_code is None  # the pause lives in the database
        resumed = [r.getMessage() for r in caplog.records if "calls resumed" in r.getMessage()]
        assert resumed == ["calls resumed (was: insufficient account balance (code 601); "
                           "probing every 15m)"] * 2  # fmt: skip
        assert p.reader.every == timedelta(hours=1)
        # calls go again at once: no probe was needed
        await p.spend(1)
        assert [r.code for r in p.sim.counters().log] == [0, 601, 0, 0, 0]
        assert [r.endpoint for r in p.sim.counters().log] == [
            "core", "core", "balance", "balance", "core",
        ]  # fmt: skip


async def test_a_reading_without_money_for_one_call_does_not_end_the_pause(
    store: Store, clock: FakeClock, token: str
) -> None:
    knobs = SimKnobs(balance=Decimal("0.1"), call_price=PRICE)
    async with parts(store, clock, token, knobs) as p:
        await p.reader.read()  # 0.1000
        await p.spend(3)  # 0.05, 0.00, then 601
        clock.advance(timedelta(hours=1))
        await p.reader.read()  # 0.0000: the price is 0.05 from here
        assert p.gate.funds.price == PRICE
        p.sim.set_balance(Decimal("0.04"))  # some money, less than a call
        clock.advance(timedelta(minutes=1))
        assert await p.reader.tick()
        assert p.gate.state.pause_code == 601


@pytest.mark.parametrize(
    ("knobs", "forced", "said"),
    [
        (SimKnobs(balance_endpoint=False), None, "HTTP 404"),
        (SimKnobs(), "html_502", "HTTP 502"),
    ],
    ids=["404", "gateway-502"],
)
async def test_an_endpoint_that_does_not_answer_is_warned_about_once_and_not_read_again(
    store: Store,
    clock: FakeClock,
    token: str,
    caplog: pytest.LogCaptureFixture,
    knobs: SimKnobs,
    forced: str | None,
    said: str,
) -> None:
    async with parts(store, clock, token, knobs) as p:
        if forced is not None:
            p.sim.force_balance(forced)
        with caplog.at_level(logging.WARNING, logger="monitor.service.fetching.balance"):
            assert not await p.reader.read()
            for _ in range(3):
                clock.advance(timedelta(hours=2))
                assert not await p.reader.tick()
                await p.spend(1)  # fetching goes on
        [warning] = [r for r in caplog.records if r.name.endswith("fetching.balance")]
        assert warning.getMessage().startswith("the balance endpoint does not answer (")
        assert said in warning.getMessage()
        assert warning.getMessage().endswith(
            "the balance is not read again until the next start; fetching goes on"
        )
        assert p.balance_calls() == 1
        assert p.gate.state.pause_code is None
        assert p.reader.every is None
        assert await store.latest_balance() is None
        assert token not in caplog.text


async def test_other_failures_behave_like_any_call(
    store: Store, clock: FakeClock, token: str
) -> None:
    async with parts(store, clock, token, SimKnobs()) as p:
        p.sim.force_balance("500", times=1)  # an upstream error: tried again next interval
        assert not await p.reader.read()
        clock.advance(timedelta(hours=1))
        p.sim.force_balance("100", times=1)  # an account code pauses every call, as always
        assert not await p.reader.tick()
        assert p.gate.state.pause_code == 100
        assert p.reader.every == timedelta(hours=1)  # still read (not a 601: no faster pace)
        with pytest.raises(BudgetError):  # paused on 100: a reading does not go past that
            await p.gate.acquire(balance=True, wait=False)
        assert p.balance_calls() == 2


async def test_a_reading_is_a_call_against_the_daily_cap(
    store: Store, clock: FakeClock, token: str
) -> None:
    async with parts(store, clock, token, SimKnobs()) as p:
        p.gate.with_budget(
            BudgetPolicy(calls_per_minute=600, burst=100, daily_calls=3, zone=p.gate.budget.zone)
        )
        await p.spend(2)
        assert await p.reader.read()  # the third call of the day
        clock.advance(timedelta(hours=1))
        assert not await p.reader.tick()  # refused: the daily cap holds for readings too
        assert p.balance_calls() == 1
        assert (await p.gate.reading()).calls_today == 3


async def test_off_reads_nothing_and_another_instances_reading_serves(
    db_url: str, store: Store, clock: FakeClock, token: str
) -> None:
    async with parts(store, clock, token, SimKnobs(), balance_every="off") as p:
        assert p.reader.every is None
        assert not await p.reader.read()
        assert not await p.reader.tick()
        assert p.balance_calls() == 0
    async with (
        parts(store, clock, token, SimKnobs(balance=Decimal(70))) as first,
        Store.open(db_url, clock=clock) as other_store,
    ):
        config = first.config
        other_gate = await BudgetGate.open(first.gate.budget, other_store, clock=clock)
        second = BalanceReader(config, first.client, other_store, other_gate, clock=clock)
        assert await first.reader.tick()  # each reads once at its start
        clock.advance(timedelta(minutes=10))
        assert await second.tick()
        clock.advance(timedelta(minutes=50))
        assert not await first.reader.tick()  # an hour after its own, 50 min after the other's
        clock.advance(timedelta(minutes=10))
        first.sim.set_balance(Decimal(65))
        assert await first.reader.tick()
        clock.advance(timedelta(seconds=10))
        assert not await second.tick()  # due by its own count, but read 10 s ago elsewhere
        assert other_gate.funds.balance == Decimal("65.0000")  # that reading serves here
        assert other_gate.funds.read_at == clock() - timedelta(seconds=10)
        clock.advance(timedelta(minutes=50))
        assert not await second.tick()  # the next is due an hour after the other's reading
        clock.advance(timedelta(minutes=10))
        assert await second.tick()
        assert first.balance_calls() == 4


async def test_a_stop_drops_a_reading_still_waiting_for_the_gate(
    store: Store, clock: FakeClock, token: str
) -> None:
    async with parts(store, clock, token, SimKnobs()) as p:
        p.gate.with_budget(
            BudgetPolicy(calls_per_minute=1, burst=1, daily_calls=100, zone=p.gate.budget.zone)
        )
        await p.spend(1)  # the bucket is empty for a minute
        reading = asyncio.get_running_loop().create_task(p.reader.read())
        await asyncio.sleep(0.1)  # in its wait for the bucket (the test's clock stands still)
        assert not reading.done()
        p.reader.stop()
        assert await asyncio.wait_for(reading, 5) is False
        assert not await p.reader.tick()  # and none after the stop
        assert p.balance_calls() == 0
        assert (await p.gate.reading()).calls_today == 1  # nothing was counted for it
