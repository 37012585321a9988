"""The client over real HTTP against the simulator, and the pure body parser on real samples."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from pydantic import SecretStr
from support.sim import FakeClock, plain_creator

from monitor.app import fetch_parts
from monitor.config import TOKEN_ENV, parse_config
from monitor.errors import (
    AccountBlocked,
    ConfigError,
    InvalidRequest,
    NoContent,
    ParseError,
    QuotaExceeded,
    RateLimited,
    Retryable,
    TransportError,
    UnknownCode,
    Unreached,
    UnreadableAnswer,
    UpstreamError,
)
from monitor.model import Advertise, Business, DateType, NoteType, Variant
from monitor.upstream import series as sim_series
from monitor.upstream.client import JustOneClient, parse_core_data
from monitor.upstream.simulator import HTML_502, MESSAGES, SimKnobs, Simulator

# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sim_knobs() -> SimKnobs:
    return SimKnobs(hang_s=10.0, huge_bytes=3_000_000)


@pytest.fixture
async def client(sim: Simulator, token: str) -> AsyncIterator[JustOneClient]:
    async with JustOneClient(
        base_url=sim.base_url, token=SecretStr(token), timeout=timedelta(seconds=5)
    ) as c:
        yield c


USER = plain_creator()


async def _fail(client: JustOneClient, user_id: str = USER) -> UpstreamError:
    with pytest.raises(UpstreamError) as info:
        await client.core_data(user_id)
    return info.value


def _assert_facts(
    exc: UpstreamError, *, code: int | None, http_status: int | None, billed: bool
) -> None:
    assert exc.code == code
    assert exc.http_status == http_status
    assert exc.billed is billed
    assert isinstance(exc.latency_ms, int)
    assert exc.latency_ms >= 0


# --------------------------------------------------------------------------- over HTTP


async def test_success_returns_the_simulated_series(
    sim: Simulator, client: JustOneClient, clock: FakeClock
) -> None:
    result = await client.core_data(USER)

    expected = sim_series.daily_points(USER, Variant(), date(2025, 12, 11))
    assert [p.date_key.isoformat() for p in result.data.daily] == [e["dateKey"] for e in expected]
    assert result.data.daily[0].date_key == date(2025, 11, 11)
    assert result.data.daily[-1].date_key == date(2025, 12, 10)
    for point, raw in zip(result.data.daily, expected, strict=True):
        assert (point.imp, point.read, point.engage) == (raw["imp"], raw["read"], raw["engage"])
        assert point.cpm == pytest.approx(raw["cpm"])
        assert point.cpuv is None
        assert point.third_user_num == 0
    assert result.data.summary == result.data.daily[-1]
    assert result.data.record_time == clock.now
    assert (result.code, result.http_status, result.billed) == (0, 200, True)
    assert isinstance(result.latency_ms, int)
    assert result.latency_ms >= 0
    assert json.loads(result.raw_body)["code"] == 0


async def test_variant_goes_on_the_wire(sim: Simulator, client: JustOneClient) -> None:
    variant = Variant(Business.COOPERATE_NOTE, NoteType.VIDEO, DateType.DAY_90, Advertise.ALL)

    result = await client.core_data(USER, variant)

    assert len(result.data.daily) == 90
    assert sim.counters().log[-1].variant == "COOPERATE_NOTE/VIDEO/DAY_90/ALL"
    assert sim.counters().log[-1].user_id == USER


FAMILIES = [
    (100, AccountBlocked, False),
    (600, AccountBlocked, False),
    (601, AccountBlocked, False),
    (602, AccountBlocked, False),
    (303, QuotaExceeded, False),
    (302, RateLimited, False),
    (301, Retryable, False),
    (500, Retryable, False),
    (400, InvalidRequest, False),
    (201, NoContent, True),
    (101, UnknownCode, False),
    (202, UnknownCode, False),
    (300, UnknownCode, False),
    (404, UnknownCode, False),
    (503, UnknownCode, False),
]


@pytest.mark.parametrize(("code", "family", "billed"), FAMILIES)
async def test_every_code_maps_to_its_family(
    sim: Simulator, client: JustOneClient, code: int, family: type[UpstreamError], billed: bool
) -> None:
    sim.force_code(USER, code, times=1)

    exc = await _fail(client)

    assert type(exc) is family
    _assert_facts(exc, code=code, http_status=200, billed=billed)
    expected = MESSAGES.get(code, "UNKNOWN ERROR")
    assert exc.message == (f"undocumented code: {expected}" if family is UnknownCode else expected)
    assert exc.raw_body is not None
    assert json.loads(exc.raw_body)["code"] == code


async def test_rate_limited_carries_retry_after(
    sim: Simulator, client: JustOneClient, clock: FakeClock
) -> None:
    sim.set_knobs(calls_per_minute=2)
    await client.core_data(USER)
    clock.advance(seconds=15)
    await client.core_data(USER)

    exc = await _fail(client)

    assert type(exc) is RateLimited
    assert exc.retry_after == 45.0
    _assert_facts(exc, code=302, http_status=200, billed=False)


async def test_gateway_body_without_code_is_retryable(
    sim: Simulator, client: JustOneClient
) -> None:
    sim.force_code(USER, "gateway_400", times=1)

    exc = await _fail(client)

    assert type(exc) is Retryable
    assert exc.message == "gateway error without envelope: 400 Bad Request"
    _assert_facts(exc, code=None, http_status=400, billed=False)
    assert exc.raw_body is not None
    assert json.loads(exc.raw_body)["status"] == 400


@pytest.mark.parametrize(
    ("fault", "status", "message"),
    [
        ("html_502", 502, f"response is not JSON (HTML page, {len(HTML_502)} chars)"),
        ("empty", 200, "response is not JSON (empty body)"),
    ],
)
async def test_non_json_bodies_are_retryable(
    sim: Simulator, client: JustOneClient, fault: str, status: int, message: str
) -> None:
    sim.force_code(USER, fault, times=1)

    exc = await _fail(client)

    assert type(exc) is Retryable
    assert exc.message == message
    _assert_facts(exc, code=None, http_status=status, billed=False)


async def test_truncated_json_is_retryable(sim: Simulator, client: JustOneClient) -> None:
    sim.force_code(USER, "truncated", times=1)

    exc = await _fail(client)

    assert type(exc) is Retryable
    assert exc.message.startswith("response is not JSON (truncated or malformed JSON, ")
    _assert_facts(exc, code=None, http_status=200, billed=False)


async def test_wrong_type_is_a_billed_parse_error_with_raw_body(
    sim: Simulator, client: JustOneClient
) -> None:
    sim.force_code(USER, "wrong_type", times=1)

    exc = await _fail(client)

    assert type(exc) is UnreadableAnswer
    assert exc.source == "core"
    assert exc.message == "unreadable data: dailyData[29].read is 'abc', expected a number"
    _assert_facts(exc, code=0, http_status=200, billed=True)
    assert exc.raw_body is not None
    assert json.loads(exc.raw_body)["data"]["sumData"]["read"] == "abc"


async def test_huge_chunked_body_is_refused_while_streaming(
    sim: Simulator, client: JustOneClient
) -> None:
    sim.force_code(USER, "huge", times=1)

    exc = await _fail(client)

    assert type(exc) is TransportError
    assert exc.message == "response larger than 2000000 bytes, refused"
    _assert_facts(exc, code=None, http_status=200, billed=False)


async def test_declared_length_over_the_limit_is_refused_before_reading(
    sim: Simulator, token: str
) -> None:
    async with JustOneClient(
        base_url=sim.base_url, token=SecretStr(token), max_response_bytes=1000
    ) as small:
        exc = await _fail(small)

    assert type(exc) is TransportError
    assert exc.message == "response larger than 1000 bytes, refused"
    _assert_facts(exc, code=None, http_status=200, billed=False)


async def test_big_but_allowed_body_parses(sim: Simulator, token: str) -> None:
    sim.set_knobs(huge_bytes=300_000)
    sim.force_code(USER, "huge", times=1)
    async with JustOneClient(base_url=sim.base_url, token=SecretStr(token)) as c:
        result = await c.core_data(USER)

    assert len(result.data.daily) == 30


async def test_timeout_is_a_transport_error_not_billed(sim: Simulator, token: str) -> None:
    sim.force_code(USER, "hang", times=1)
    async with JustOneClient(
        base_url=sim.base_url, token=SecretStr(token), timeout=timedelta(seconds=0.2)
    ) as c:
        exc = await _fail(c)

    assert type(exc) is TransportError
    assert exc.message in {
        f"no answer from {sim.base_url.split('//')[1]} within 0.2 s (timed out): "
        "api.timeout sets the limit",
        f"no complete answer from {sim.base_url.split('//')[1]} within 0.2 s: "
        "the upstream is slow (api.timeout sets the limit)",
    }
    _assert_facts(exc, code=None, http_status=None, billed=False)
    assert exc.latency_ms is not None
    assert exc.latency_ms >= 200
    # the simulator did answer (and bill) after the hang: the vendor may charge a timeout
    assert sim.counters().log[-1].billed is True


async def test_connection_reset_is_a_transport_error(sim: Simulator, client: JustOneClient) -> None:
    sim.force_code(USER, "reset", times=1)

    exc = await _fail(client)

    assert type(exc) is TransportError
    where = sim.base_url.split("//")[1]
    assert exc.message == (
        f"connection to {where} broke (server disconnected without sending a response); "
        "the call is retried later"
    )
    _assert_facts(exc, code=None, http_status=None, billed=False)


async def test_refused_port_is_a_transport_error(token: str, refused_port: int) -> None:
    port = refused_port
    async with JustOneClient(
        base_url=f"http://127.0.0.1:{port}", token=SecretStr(token), connect_retries=1
    ) as c:
        exc = await _fail(c)

    # never reached a server: a TransportError that is not counted against daily_calls
    assert type(exc) is Unreached
    assert isinstance(exc, TransportError)
    assert exc.message == (
        f"cannot reach 127.0.0.1:{port} (connection refused): check api.base_url and proxy settings"
    )
    _assert_facts(exc, code=None, http_status=None, billed=False)


async def test_token_reaches_the_upstream_only_on_the_wire(sim: Simulator, token: str) -> None:
    sim.set_knobs(tokens=frozenset({token}))
    async with JustOneClient(base_url=sim.base_url, token=SecretStr(token)) as good:
        result = await good.core_data(USER)
    async with JustOneClient(base_url=sim.base_url, token=SecretStr("other")) as bad:
        exc = await _fail(bad)

    assert result.billed is True
    assert type(exc) is AccountBlocked
    assert exc.code == 100


async def test_the_client_the_app_builds_follows_the_api_section(
    sim: Simulator, token: str, clock: FakeClock, tmp_path: Path
) -> None:
    config = parse_config(
        {
            "api": {"base_url": sim.base_url, "timeout": "3s", "max_response_bytes": 10_000},
            "storage": {"url": f"sqlite+aiosqlite:///{tmp_path}/history.db"},
        }
    )
    environ = {TOKEN_ENV: token}
    async with fetch_parts(config, clock=clock, environ=environ, create_schema=True) as parts:
        small = await parts.client.core_data(USER)  # 30 points fit in 10 kB, 90 do not
        with pytest.raises(TransportError) as info:
            await parts.client.core_data(USER, Variant(date_type=DateType.DAY_90))

    assert len(small.data.daily) == 30
    assert info.value.message == "response larger than 10000 bytes, refused"


@pytest.fixture
async def echo_url() -> AsyncIterator[str]:
    """An upstream that reflects the query string back in its message and its data."""

    async def echo(request: web.Request) -> web.Response:
        query = request.query_string
        if request.query.get("userId") == "fail":
            return web.json_response({"code": 500, "data": None, "message": f"bad {query}"})
        body = json.loads((Path(__file__).parent.parent / "data" / "error_301.json").read_text())
        body["echo"] = query
        return web.json_response(body)

    app = web.Application()
    app.router.add_get("/api/xiaohongshu-pgy/api/pgy/kol/data/core_data/v1", echo)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def test_an_upstream_echoing_the_token_is_masked(echo_url: str, token: str) -> None:
    async with JustOneClient(base_url=echo_url, token=SecretStr(token)) as c:
        with pytest.raises(Retryable) as failed:
            await c.core_data("fail")
        with pytest.raises(Retryable) as echoed:
            await c.core_data(USER)

    assert token not in str(failed.value)
    assert "token=***" in failed.value.message
    assert echoed.value.raw_body is not None
    assert token not in echoed.value.raw_body
    assert "token=***" in echoed.value.raw_body


# --------------------------------------------------------------------------- the parser


def test_parses_the_30_day_sample_exactly(data_dir: Path) -> None:
    body = (data_dir / "core_data_success_30d.json").read_text()

    result = parse_core_data(body, http_status=200, latency_ms=812)

    daily = result.data.daily
    assert len(daily) == 30
    assert daily[0].date_key == date(2025, 11, 11)
    assert daily[-1].date_key == date(2025, 12, 10)
    last = daily[-1]
    assert (last.imp, last.read, last.engage, last.third_user_num) == (118751, 7100, 478, 0)
    assert last.cpm == 253.89259879916804
    assert last.cpe == 63.07531380753138
    assert last.cpv == 8.008871365204534
    assert last.cpuv is None
    first = daily[0]
    assert (first.imp, first.read, first.engage) == (35041, 3892, 409)
    assert first.cpm == 860.4206500956024
    assert result.data.summary == last
    assert result.data.record_time == datetime(2025, 12, 11, 2, 17, 58, 460419, tzinfo=UTC)
    assert (result.http_status, result.latency_ms, result.code, result.billed) == (
        200,
        812,
        0,
        True,
    )
    assert result.raw_body == body
    raw = json.loads(body)["data"]["dailyData"]
    assert [p.read for p in daily] == [r["read"] for r in raw]


def test_parses_the_no_price_sample_with_every_cost_none(data_dir: Path) -> None:
    result = parse_core_data((data_dir / "core_data_success_no_price.json").read_bytes())

    points = (*result.data.daily, result.data.summary)
    assert len(result.data.daily) == 30
    assert all(p.cpm is None and p.cpe is None and p.cpv is None and p.cpuv is None for p in points)
    assert result.data.summary.date_key == date(2025, 12, 7)
    assert (result.data.summary.imp, result.data.summary.read) == (17075, 1371)
    assert result.data.record_time == datetime(2025, 12, 8, 8, 12, 58, 652032, tzinfo=UTC)


@pytest.mark.parametrize(
    ("sample", "family", "code", "message"),
    [
        ("error_301.json", Retryable, 301, "FAILED, RETRY"),
        ("error_500.json", Retryable, 500, "SERVER ERROR"),
        ("gateway_400.json", Retryable, None, "gateway error without envelope: 400 Bad Request"),
    ],
)
def test_parses_the_error_samples(
    data_dir: Path, sample: str, family: type[UpstreamError], code: int | None, message: str
) -> None:
    body = (data_dir / sample).read_text()
    status = 400 if code is None else 200
    with pytest.raises(UpstreamError) as info:
        parse_core_data(body, http_status=status, latency_ms=7)

    assert type(info.value) is family
    assert (info.value.code, info.value.message, info.value.http_status) == (code, message, status)
    assert (info.value.latency_ms, info.value.billed, info.value.raw_body) == (7, False, body)


def _body(points: list[dict[str, Any]], **extra: Any) -> str:
    envelope = {
        "code": 0,
        "message": None,
        "recordTime": "2025-12-11T10:17:58.460419416",
        "data": {"sumData": points[-1] if points else None, "dailyData": points},
    }
    envelope.update(extra)
    return json.dumps(envelope)


def _point(day: str = "2025-12-10", **values: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "imp": 1000,
        "read": 100,
        "engage": 10,
        "cpm": 50.5,
        "cpe": 5.05,
        "cpv": 0.5,
        "cpuv": 0,
        "thirdUserNum": 0,
        "dateKey": day,
    }
    return base | values


def test_numbers_as_strings_and_whole_floats_are_accepted() -> None:
    body = _body([_point(imp="118751", read=7100.0, engage="478.0", cpm="253.5", cpe=60, cpv="0")])

    point = parse_core_data(body).data.daily[0]

    assert (point.imp, point.read, point.engage) == (118751, 7100, 478)
    assert isinstance(point.read, int)
    assert point.cpm == 253.5
    assert point.cpe == 60.0
    assert isinstance(point.cpe, float)
    assert point.cpv is None


def test_sorts_ascending_and_keeps_the_last_of_a_duplicate_date() -> None:
    points = [
        _point("2025-12-10", read=3),
        _point("2025-12-08", read=1),
        _point("2025-12-10", read=4),
    ]

    daily = parse_core_data(_body(points)).data.daily

    assert [(p.date_key.isoformat(), p.read) for p in daily] == [
        ("2025-12-08", 1),
        ("2025-12-10", 4),
    ]


def test_missing_sum_data_falls_back_to_the_newest_point() -> None:
    envelope = json.loads(_body([_point("2025-12-09"), _point("2025-12-10", read=7)]))
    del envelope["data"]["sumData"]

    result = parse_core_data(json.dumps(envelope))

    assert result.data.summary.read == 7


@pytest.mark.parametrize(
    ("record_time", "expected"),
    [
        (None, None),
        ("2025-12-11T10:17:58", datetime(2025, 12, 11, 2, 17, 58, tzinfo=UTC)),
        ("2025-12-11 10:17:58.5", datetime(2025, 12, 11, 2, 17, 58, 500000, tzinfo=UTC)),
        (
            "2025-12-11T10:17:58.123456789+00:00",
            datetime(2025, 12, 11, 10, 17, 58, 123456, tzinfo=UTC),
        ),
    ],
)
def test_record_time_forms(record_time: str | None, expected: datetime | None) -> None:
    result = parse_core_data(_body([_point()], recordTime=record_time))

    assert result.data.record_time == expected


@pytest.mark.parametrize(
    ("point", "message"),
    [
        (_point(read="abc"), "dailyData[0].read is 'abc', expected a number"),
        (_point(read=True), "dailyData[0].read is a boolean"),
        (_point(imp=[1]), "dailyData[0].imp is list, expected a number"),
        (_point(cpm="nan"), "dailyData[0].cpm is not finite"),
        (_point(engage=-3), "dailyData[0].engage is negative (-3)"),
        (_point(dateKey="2025/12/10"), "dailyData[0].dateKey is '2025/12/10', expected YYYY-MM-DD"),
        (_point(dateKey="2025-02-30"), "dailyData[0].dateKey '2025-02-30' is not a date"),
        (_point(dateKey=None), "dailyData[0].dateKey is None, expected YYYY-MM-DD"),
    ],
)
def test_unreadable_values_are_billed_parse_errors_with_raw_body(
    point: dict[str, Any], message: str
) -> None:
    body = _body([point])
    with pytest.raises(ParseError) as info:
        parse_core_data(body, latency_ms=3)

    assert type(info.value) is UnreadableAnswer
    assert info.value.message == f"unreadable data: {message}"
    assert (info.value.code, info.value.billed, info.value.raw_body) == (0, True, body)
    assert (info.value.http_status, info.value.latency_ms) == (200, 3)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (None, "data is NoneType, expected an object"),
        ({"dailyData": {}}, "dailyData is not a list"),
        ({"dailyData": []}, "neither sumData nor dailyData present"),
        ({"dailyData": [1]}, "dailyData[0] is int, expected an object"),
    ],
)
def test_code_zero_with_unreadable_data(data: Any, message: str) -> None:
    with pytest.raises(ParseError) as info:
        parse_core_data(json.dumps({"code": 0, "data": data}))

    assert info.value.message == f"unreadable data: {message}"
    assert info.value.billed is True


def test_unreadable_record_time_is_a_parse_error() -> None:
    with pytest.raises(ParseError) as info:
        parse_core_data(_body([_point()], recordTime=5))

    assert info.value.message == "unreadable data: recordTime is 5, expected local ISO time"


def test_nan_literal_is_not_json() -> None:
    with pytest.raises(Retryable) as info:
        parse_core_data('{"code": 0, "data": {"sumData": {"imp": NaN}}}')

    assert type(info.value) is Retryable


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('{"code": "0", "data": null}', "envelope code is not an integer: '0'"),
        ('{"code": true}', "envelope code is not an integer: True"),
        ("[1, 2]", "gateway error without envelope: JSON list without code"),
        ('{"status": 502}', "gateway error without envelope: 502"),
    ],
)
def test_odd_envelopes_are_retryable(body: str, message: str) -> None:
    with pytest.raises(Retryable) as info:
        parse_core_data(body, http_status=502)

    assert type(info.value) is Retryable
    assert (info.value.message, info.value.http_status, info.value.billed) == (message, 502, False)


def test_unknown_code_keeps_the_upstream_message() -> None:
    with pytest.raises(UnknownCode) as info:
        parse_core_data('{"code": 404, "data": null, "message": "NOT FOUND", "recordTime": null}')

    assert info.value.message == "undocumented code: NOT FOUND"
    assert info.value.code == 404


def test_new_envelope_keys_are_ignored(data_dir: Path) -> None:
    envelope = json.loads((data_dir / "core_data_success_30d.json").read_text())
    envelope["requestId"] = "abc-123"

    result = parse_core_data(json.dumps(envelope))

    assert result.data.summary.read == 7100


# --------------------------------------------------------------------------- data dates


SAMPLE_LAST = date(2025, 12, 10)  # the newest point of core_data_success_30d.json


def _sample_with(data_dir: Path, where: str, day: date) -> str:
    envelope = json.loads((data_dir / "core_data_success_30d.json").read_text())
    if where == "sumData":
        envelope["data"]["sumData"]["dateKey"] = day.isoformat()
    else:
        envelope["data"]["dailyData"][int(where)]["dateKey"] = day.isoformat()
    return json.dumps(envelope)


@pytest.mark.parametrize(
    ("today", "fine"),
    [
        (SAMPLE_LAST + timedelta(days=1), True),  # the usual: data up to yesterday
        (SAMPLE_LAST - timedelta(days=2), True),  # the upstream's day is ahead of ours
        (SAMPLE_LAST - timedelta(days=3), False),  # three days ahead: a broken clock
        (date(2025, 11, 11) + timedelta(days=400), True),  # the oldest point 400 days back
        (date(2025, 11, 11) + timedelta(days=401), False),
    ],
)
def test_the_real_sample_is_bounded_by_the_day_it_came(
    data_dir: Path, today: date, *, fine: bool
) -> None:
    body = (data_dir / "core_data_success_30d.json").read_text()
    if fine:
        assert parse_core_data(body, today=today).data.summary.date_key == SAMPLE_LAST
        return
    with pytest.raises(ParseError) as info:
        parse_core_data(body, today=today)
    assert "dateKey" in info.value.message
    assert "is outside" in info.value.message
    assert (info.value.billed, info.value.raw_body) == (True, body)


@pytest.mark.parametrize(
    ("where", "day", "message"),
    [
        (
            "sumData",
            date(2031, 1, 1),
            "sumData.dateKey 2031-01-01 is outside 2024-11-06..2025-12-13",
        ),
        ("29", date(2099, 12, 31), "dailyData[29].dateKey 2099-12-31 is outside"),
        ("29", date(2025, 12, 14), "dailyData[29].dateKey 2025-12-14 is outside"),
        ("0", date(2014, 12, 31), "dailyData[0].dateKey 2014-12-31 is outside"),
        ("3", date(1970, 1, 1), "dailyData[3].dateKey 1970-01-01 is outside"),
    ],
)
def test_a_far_date_never_becomes_the_newest_point(
    data_dir: Path, where: str, day: date, message: str
) -> None:
    """One point dated years ahead would stay the series' newest until that day: the whole
    answer is refused instead (billed, its body kept for audit)."""
    body = _sample_with(data_dir, where, day)
    with pytest.raises(ParseError) as info:
        parse_core_data(body, today=SAMPLE_LAST + timedelta(days=1))

    assert info.value.message.startswith(f"unreadable data: {message}")
    assert (info.value.code, info.value.billed, info.value.raw_body) == (0, True, body)


def test_without_a_day_only_the_oldest_date_bounds(data_dir: Path) -> None:
    """Re-parsing a stored body has no 'today': only OLDEST_DATE applies."""
    assert parse_core_data(_sample_with(data_dir, "29", date(2031, 1, 1))).data.daily
    with pytest.raises(ParseError, match=r"dailyData\[0\].dateKey 2014-12-31 is outside"):
        parse_core_data(_sample_with(data_dir, "0", date(2014, 12, 31)))


async def test_the_client_dates_answers_by_the_clock_it_is_given(
    sim: Simulator, clock: FakeClock, token: str
) -> None:
    """The simulator serves data up to its (fake) yesterday; a client whose clock says two
    years later refuses it, one on the same clock takes it."""
    later = FakeClock(clock.now + timedelta(days=730))
    async with (
        JustOneClient(base_url=sim.base_url, token=SecretStr(token), clock=clock) as same,
        JustOneClient(base_url=sim.base_url, token=SecretStr(token), clock=later) as skewed,
    ):
        result = await same.core_data(USER)
        with pytest.raises(ParseError) as info:
            await skewed.core_data(USER)

    assert result.data.summary.date_key == sim.today() - timedelta(days=1)
    assert "is outside" in info.value.message
    assert info.value.raw_body is not None
    assert '"dateKey"' in info.value.raw_body


async def test_a_base_url_with_a_password_is_refused_without_echoing_it(token: str) -> None:
    with pytest.raises(ConfigError) as info:
        JustOneClient(base_url="https://user:hunter2pass@api.example", token=SecretStr(token))

    assert str(info.value).startswith("api.base_url: must not hold a user name or password")
    assert "hunter2pass" not in str(info.value)
    assert "hunter2pass" not in repr(info.value)
