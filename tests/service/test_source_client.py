"""The client's follower-history, note-list and balance calls over real HTTP against the
simulator: what goes on the wire, what comes back typed, and every failure as core_data's."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import date, timedelta
from decimal import Decimal

import pytest
from aiohttp import web
from pydantic import SecretStr
from support.sim import FakeClock, creator_id, plain_creator

from monitor.errors import (
    AccountBlocked,
    InvalidRequest,
    NoContent,
    RateLimited,
    Retryable,
    TransportError,
    UnknownCode,
    UnreadableAnswer,
    UpstreamError,
)
from monitor.model import DateType
from monitor.upstream import sim_sources
from monitor.upstream.balance import BALANCE_PATH
from monitor.upstream.client import JustOneClient
from monitor.upstream.fans import FANS_PATH
from monitor.upstream.notes import NOTES_PATH
from monitor.upstream.simulator import SimKnobs, Simulator

USER = plain_creator()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sim_knobs() -> SimKnobs:
    return SimKnobs(hang_s=10.0, huge_bytes=3_000_000, balance=Decimal("10"), call_price="0.25")


@pytest.fixture
async def client(sim: Simulator, token: str, clock: FakeClock) -> AsyncIterator[JustOneClient]:
    async with JustOneClient(
        base_url=sim.base_url, token=SecretStr(token), timeout=timedelta(seconds=5), clock=clock
    ) as c:
        yield c


# --------------------------------------------------------------------------- success


async def test_follower_history_is_the_simulated_one(sim: Simulator, client: JustOneClient) -> None:
    answer = await client.fans_history(USER)

    points = answer.data.points
    assert len(points) == 30
    assert points[-1].date_key == date(2025, 12, 10)  # T-1 in Shanghai
    assert [p.fans for p in points] == [
        sim_sources.follower_count(USER, p.date_key) for p in points
    ]
    assert (answer.code, answer.http_status, answer.billed) == (0, 200, True)
    assert answer.data.record_time is not None
    record = sim.counters().log[-1]
    assert (record.endpoint, record.user_id, record.variant) == ("fans", USER, "DAY_30/FANS_TOTAL")


async def test_follower_history_over_90_days(sim: Simulator, client: JustOneClient) -> None:
    answer = await client.fans_history(USER, DateType.DAY_90)

    assert len(answer.data.points) == 90
    assert sim.counters().log[-1].variant == "DAY_90/FANS_TOTAL"


async def test_note_pages_newest_first(sim: Simulator, client: JustOneClient) -> None:
    first = await client.notes_page(USER)
    second = await client.notes_page(USER, 2)

    assert (first.data.page, second.data.page) == (1, 2)
    assert len(first.data.notes) == len(second.data.notes) == 8
    assert first.data.total == second.data.total
    assert first.data.total is not None
    assert first.data.total > 16
    listed = [n.note for n in first.data.notes + second.data.notes]
    assert len({n.note_id for n in listed}) == 16
    days = [n.published for n in listed]
    assert days == sorted(days, reverse=True)
    assert all(n.stats.reads is not None for n in first.data.notes)
    assert [r.variant for r in sim.counters().log] == [
        "LATEST/ALL/ALL/NO/page=1",
        "LATEST/ALL/ALL/NO/page=2",
    ]


async def test_a_creator_without_data_is_empty_not_an_error(client: JustOneClient) -> None:
    empty = "eeeeee" + creator_id(5)[6:]

    assert (await client.fans_history(empty)).data.points == ()
    page = (await client.notes_page(empty)).data
    assert (page.notes, page.total) == ((), 0)


async def test_balance_falls_by_the_price_of_every_billed_call(
    sim: Simulator, client: JustOneClient
) -> None:
    before = (await client.balance()).data
    await client.core_data(USER)
    await client.fans_history(USER)
    await client.notes_page(USER)
    after = (await client.balance()).data

    assert before.amount == Decimal("10.0000")
    assert before.currency == "CNY"
    assert before.amount - after.amount == Decimal("0.75")
    assert sim.counters().by_endpoint == {"balance": 2, "core": 1, "fans": 1, "notes": 1}


async def test_balance_at_zero_the_sources_get_601_but_the_balance_still_answers(
    sim: Simulator, client: JustOneClient
) -> None:
    sim.set_balance("0.5")
    await client.fans_history(USER)
    await client.notes_page(USER)

    for call in (client.fans_history(USER), client.notes_page(USER), client.core_data(USER)):
        with pytest.raises(AccountBlocked) as info:
            await call
        assert (info.value.code, info.value.billed) == (601, False)
    assert (await client.balance()).data.amount == Decimal(0)
    sim.set_balance(3)  # topped up: a reading shows the money again
    assert (await client.balance()).data.amount == Decimal(3)
    assert (await client.fans_history(USER)).data.points


# --------------------------------------------------------------------------- failures


async def test_an_unreadable_paid_answer_keeps_body_source_and_query(
    sim: Simulator, client: JustOneClient, token: str
) -> None:
    sim.force_code(USER, "wrong_type", times=1, endpoint="notes")

    with pytest.raises(UnreadableAnswer) as info:
        await client.notes_page(USER, 2)

    exc = info.value
    assert (exc.source, exc.code, exc.billed, exc.http_status) == ("notes", 0, True, 200)
    assert exc.params["pageNumber"] == "2"
    assert exc.params["userId"] == USER
    assert "token" not in exc.params
    assert exc.raw_body is not None
    assert json.loads(exc.raw_body)["data"]["list"][0]["readNum"] == "abc"
    assert token not in exc.raw_body
    assert sim.counters().log[-1].billed  # the simulator charged it, as the vendor would


@pytest.mark.parametrize("source", ["fans", "balance"])
async def test_unreadable_follower_history_and_balance(
    sim: Simulator, client: JustOneClient, source: str
) -> None:
    if source == "balance":
        sim.force_balance("wrong_type", times=1)
    else:
        sim.force_code(USER, "wrong_type", times=1, endpoint=source)

    with pytest.raises(UnreadableAnswer) as info:
        await (client.balance() if source == "balance" else client.fans_history(USER))

    assert info.value.source == source
    assert info.value.params == (
        {}
        if source == "balance"
        else {
            "userId": USER,
            "dateType": "DAY_30",
            "increaseType": "FANS_TOTAL",
        }
    )


@pytest.mark.parametrize(
    ("outcome", "family", "code"),
    [
        (301, Retryable, 301),
        (500, Retryable, 500),
        (201, NoContent, 201),
        (400, InvalidRequest, 400),
        (602, AccountBlocked, 602),
        (503, UnknownCode, 503),
        ("html_502", Retryable, None),
        ("gateway_400", Retryable, None),
        ("truncated", Retryable, None),
        ("empty", Retryable, None),
        ("reset", TransportError, None),
    ],
)
async def test_faults_reach_the_sources_as_they_reach_core_data(
    sim: Simulator,
    client: JustOneClient,
    outcome: int | str,
    family: type[UpstreamError],
    code: int | None,
) -> None:
    sim.force_code(USER, outcome)
    for call in (client.fans_history(USER), client.notes_page(USER)):
        with pytest.raises(UpstreamError) as info:
            await call
        assert type(info.value) is family
        assert info.value.code == code
    sim.clear_forced(USER)
    sim.force_balance(outcome, times=1)
    with pytest.raises(UpstreamError) as info:
        await client.balance()
    assert type(info.value) is family


async def test_rate_limit_reaches_every_endpoint(sim: Simulator, client: JustOneClient) -> None:
    sim.set_knobs(calls_per_minute=2)
    await client.fans_history(USER)
    await client.balance()

    for call in (client.notes_page(USER), client.balance()):
        with pytest.raises(RateLimited) as info:
            await call
        assert info.value.retry_after is not None


async def test_a_missing_balance_endpoint_is_a_gateway_404(
    sim: Simulator, client: JustOneClient
) -> None:
    sim.set_knobs(balance_endpoint=False)

    with pytest.raises(Retryable) as info:
        await client.balance()

    assert info.value.http_status == 404
    assert "Not Found" in info.value.message
    assert info.value.code is None


async def test_the_token_goes_on_the_wire_only(
    sim: Simulator, token: str, clock: FakeClock
) -> None:
    sim.set_knobs(tokens=frozenset({token}))
    async with JustOneClient(
        base_url=sim.base_url, token=SecretStr("wrong"), timeout=timedelta(seconds=5)
    ) as wrong:
        with pytest.raises(AccountBlocked) as info:
            await wrong.balance()
        assert info.value.code == 100
        wrong.use_token(SecretStr(token))
        assert (await wrong.balance()).data.amount == Decimal("10.0000")
        assert (await wrong.fans_history(USER)).data.points


@pytest.fixture
async def echo_url() -> AsyncIterator[str]:
    """An upstream whose every endpoint answers code 0 with an unreadable ``data`` that
    reflects the query string (with the token), or an error message that does."""

    async def echo(request: web.Request) -> web.Response:
        query = request.query_string
        if request.query.get("userId") == "fail":
            return web.json_response({"code": 500, "data": None, "message": f"bad {query}"})
        return web.json_response({"code": 0, "data": {"echo": query}, "message": None})

    app = web.Application()
    for path in (FANS_PATH, NOTES_PATH, BALANCE_PATH):
        app.router.add_get(path, echo)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def test_an_echoed_token_is_masked_in_the_kept_body(echo_url: str, token: str) -> None:
    kept: list[UpstreamError] = []
    async with JustOneClient(base_url=echo_url, token=SecretStr(token)) as c:
        for call in (
            c.fans_history(USER),
            c.notes_page(USER),
            c.balance(),
            c.fans_history("fail"),
            c.notes_page("fail"),
        ):
            with pytest.raises(UpstreamError) as info:
                await call
            kept.append(info.value)

    assert [type(e) for e in kept] == [UnreadableAnswer] * 3 + [Retryable] * 2
    for exc in kept:
        texts = [str(exc), repr(exc), exc.message, exc.raw_body or ""]
        texts += [json.dumps(exc.params)] if isinstance(exc, UnreadableAnswer) else []
        assert not [text for text in texts if token in text]
        assert "token=***" in (exc.raw_body or "")
