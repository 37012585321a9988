"""The simulated upstream over real HTTP: shapes, determinism, limits, faults, scripts, admin."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from itertools import pairwise
from statistics import median
from typing import Any

import httpx
import pytest
from support.ports import free_port
from support.sim import (
    FakeClock,
    creator_id,
    gappy_creator,
    no_price_creator,
    plain_creator,
)
from support.tls import tls_context

from monitor.model import DateType, Variant
from monitor.upstream import series as sim_series
from monitor.upstream.simulator import CORE_DATA_PATH, FAULT_KINDS, SimKnobs, Simulator

USER = plain_creator()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sim_knobs() -> SimKnobs:
    return SimKnobs(hang_s=10.0)


@pytest.fixture
async def http(sim: Simulator) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=sim.base_url, timeout=5, verify=tls_context()) as c:
        yield c


async def call(
    http: httpx.AsyncClient, user_id: str = USER, token: str = "t0k", **params: str
) -> httpx.Response:
    query = {"token": token, "userId": user_id, **params}
    return await http.get(CORE_DATA_PATH, params={k: v for k, v in query.items() if v})


async def body(http: httpx.AsyncClient, user_id: str = USER, **params: str) -> dict[str, Any]:
    response = await call(http, user_id, **params)
    assert response.status_code == 200
    result: dict[str, Any] = response.json()
    return result


# --------------------------------------------------------------------------- shape


async def test_success_envelope_like_the_real_one(http: httpx.AsyncClient) -> None:
    envelope = await body(http)

    assert set(envelope) == {"code", "data", "message", "recordTime"}
    assert (envelope["code"], envelope["message"]) == (0, None)
    # 2025-12-11 02:17:58.460419 UTC is 10:17:58.460419 in Shanghai, printed with 9 digits
    assert re.fullmatch(r"2025-12-11T10:17:58\.460419\d{3}", envelope["recordTime"])
    daily = envelope["data"]["dailyData"]
    assert envelope["data"]["sumData"] == daily[-1]
    assert set(daily[0]) == {
        "imp",
        "read",
        "engage",
        "cpm",
        "cpe",
        "cpv",
        "cpuv",
        "thirdUserNum",
        "dateKey",
    }
    assert (daily[0]["cpuv"], daily[0]["thirdUserNum"]) == (0, 0)


async def test_keys_come_back_shuffled(http: httpx.AsyncClient) -> None:
    orders = set()
    for _ in range(6):
        response = await call(http)
        orders.add(tuple(json.loads(response.text)))

    assert len(orders) > 1


async def test_t_minus_one_dates_in_shanghai(http: httpx.AsyncClient, clock: FakeClock) -> None:
    # 17:00 UTC on Dec 10 is already 01:00 on Dec 11 in Shanghai: the newest point is Dec 10
    clock.now = datetime(2025, 12, 10, 17, 0, tzinfo=UTC)

    daily = (await body(http))["data"]["dailyData"]

    dates = [date.fromisoformat(p["dateKey"]) for p in daily]
    assert len(dates) == 30
    assert dates[-1] == date(2025, 12, 10)
    assert dates == [date(2025, 11, 11) + timedelta(days=n) for n in range(30)]


async def test_day_90_has_90_points(http: httpx.AsyncClient) -> None:
    daily = (await body(http, dateType="DAY_90"))["data"]["dailyData"]

    assert len(daily) == 90
    assert daily[0]["dateKey"] == "2025-09-12"
    assert daily[-1]["dateKey"] == "2025-12-10"


async def test_gappy_creator_misses_days_but_keeps_yesterday(http: httpx.AsyncClient) -> None:
    daily = (await body(http, gappy_creator()))["data"]["dailyData"]

    dates = [p["dateKey"] for p in daily]
    assert 12 <= len(dates) < 30
    assert dates == sorted(set(dates))
    assert dates[0] >= "2025-11-11"
    assert dates[-1] == "2025-12-10"


async def test_no_price_creator_has_every_cost_zero(http: httpx.AsyncClient) -> None:
    envelope = await body(http, no_price_creator())

    points = [*envelope["data"]["dailyData"], envelope["data"]["sumData"]]
    assert all(p[c] == 0 for p in points for c in ("cpm", "cpe", "cpv", "cpuv"))
    assert all(p["imp"] > 0 and p["read"] > 0 for p in points)


async def test_costs_follow_the_price(http: httpx.AsyncClient) -> None:
    price = sim_series.price(USER)

    for point in (await body(http))["data"]["dailyData"]:
        assert point["cpm"] == pytest.approx(price * 1000 / point["imp"], abs=0.5)
        assert point["cpe"] == pytest.approx(price / point["engage"], abs=0.5)


def test_about_a_fifth_of_creators_have_no_price_or_gaps() -> None:
    ids = [creator_id(n) for n in range(1000)]

    assert 150 <= sum(not sim_series.has_price(u) for u in ids) <= 250
    assert 150 <= sum(sim_series.has_gaps(u) for u in ids) <= 250


def test_some_costs_are_whole_numbers() -> None:
    today = date(2025, 12, 11)
    points = [
        p
        for n in range(40)
        for p in sim_series.daily_points(creator_id(n), Variant(), today)
        if sim_series.has_price(creator_id(n))
    ]

    whole = [p for p in points if isinstance(p["cpe"], int) and p["cpe"]]
    assert 0 < len(whole) < len(points) * 0.1
    assert '"cpe": ' + str(whole[0]["cpe"]) + "," in json.dumps(whole[0])


def test_series_move_like_rolling_medians() -> None:
    today = date(2025, 12, 11)
    for n in range(20):
        points = sim_series.daily_points(creator_id(n), Variant(date_type=DateType.DAY_90), today)
        imps = [p["imp"] for p in points if p["imp"]]
        steps = [abs(b / a - 1) for a, b in pairwise(imps)]
        assert median(steps) < 0.05, "mostly slow drift, not white noise"
        assert max(imps) / min(imps) > 1.05, "but it does move"


# --------------------------------------------------------------------------- determinism


async def test_same_day_same_numbers(http: httpx.AsyncClient, clock: FakeClock) -> None:
    first = (await body(http))["data"]
    clock.advance(hours=3)
    second = (await body(http))["data"]

    assert first == second


async def test_next_day_slides_the_window(http: httpx.AsyncClient, clock: FakeClock) -> None:
    today = (await body(http))["data"]["dailyData"]
    clock.advance(days=1)
    tomorrow = (await body(http))["data"]["dailyData"]

    assert tomorrow[-1]["dateKey"] == "2025-12-11"
    assert tomorrow[:-1] == today[1:]


@pytest.mark.slow
def test_values_do_not_depend_on_the_process_hash_seed() -> None:
    code = (
        "from datetime import date; from monitor.upstream import series as sim_series;"
        "from monitor.model import Variant;"
        "print(sim_series.point('5c3bf7f70000000000000007', Variant(), date(2025, 12, 1)))"
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in ("1", "2")
    }
    assert len(outputs) == 1
    here = sim_series.point("5c3bf7f70000000000000007", Variant(), date(2025, 12, 1))
    assert outputs.pop().strip() == str(here)


async def test_variants_differ(http: httpx.AsyncClient) -> None:
    default = (await body(http))["data"]["sumData"]
    video = (await body(http, noteType="VIDEO"))["data"]["sumData"]

    assert default["dateKey"] == video["dateKey"]
    assert default["imp"] != video["imp"]


# --------------------------------------------------------------------------- errors and rules


async def test_missing_user_id_or_token_is_a_gateway_400(http: httpx.AsyncClient) -> None:
    for response in (await call(http, user_id=""), await call(http, token="")):
        assert response.status_code == 400
        gateway = response.json()
        assert "code" not in gateway
        assert (gateway["status"], gateway["error"], gateway["path"]) == (
            400,
            "Bad Request",
            CORE_DATA_PATH,
        )
        assert gateway["timestamp"] == "2025-12-11T10:17:58.460+08:00"


async def test_invalid_enum_is_code_400(http: httpx.AsyncClient, sim: Simulator) -> None:
    envelope = await body(http, dateType="DAY_7")

    assert envelope == {
        "code": 400,
        "data": None,
        "message": "INVALID PARAMETER",
        "recordTime": None,
    }
    assert sim.counters().billed == 0


async def test_documented_id_prefixes(http: httpx.AsyncClient, sim: Simulator) -> None:
    invalid = await body(http, "000000" + "a" * 18)
    empty = await body(http, "ffffff" + "a" * 18)

    assert (invalid["code"], invalid["message"]) == (400, "INVALID PARAMETER")
    assert (empty["code"], empty["message"], empty["data"]) == (201, "NO CONTENT", None)
    assert sim.counters().billed == 1  # 201 is billed


async def test_force_code_then_recover(http: httpx.AsyncClient, sim: Simulator) -> None:
    sim.force_code(USER, 301, times=2)

    codes = [(await body(http))["code"] for _ in range(3)]

    assert codes == [301, 301, 0]
    other = await body(http, creator_id(12345))
    assert other["code"] == 0


async def test_force_code_forever_until_cleared(http: httpx.AsyncClient, sim: Simulator) -> None:
    sim.force_code(USER, 500)
    codes = [(await body(http))["code"] for _ in range(3)]
    sim.clear_forced(USER)

    assert codes == [500, 500, 500]
    assert (await body(http))["code"] == 0


def test_force_code_rejects_unknown_outcomes() -> None:
    sim = Simulator()
    with pytest.raises(ValueError):
        sim.force_code(USER, "meltdown")
    with pytest.raises(ValueError):
        sim.force_code(USER, 301, times=0)


async def test_per_minute_limit_returns_302(
    http: httpx.AsyncClient, sim: Simulator, clock: FakeClock
) -> None:
    sim.set_knobs(calls_per_minute=3)
    codes = []
    for _ in range(3):
        codes.append((await body(http))["code"])
        clock.advance(seconds=10)
    limited = await call(http)
    clock.advance(seconds=31)  # the first call has left the window
    again = await body(http)

    assert codes == [0, 0, 0]
    assert limited.json()["code"] == 302
    assert limited.json()["message"] == "RATE LIMIT EXCEEDED"
    assert limited.headers["Retry-After"] == "30"
    assert again["code"] == 0
    assert sim.counters().billed == 4


async def test_daily_quota_returns_303_until_the_shanghai_day_turns(
    http: httpx.AsyncClient, sim: Simulator, clock: FakeClock
) -> None:
    sim.set_knobs(daily_quota=2)
    codes = [(await body(http))["code"] for _ in range(3)]
    clock.now = datetime(2025, 12, 11, 15, 59, tzinfo=UTC)  # 23:59 in Shanghai
    still = (await body(http))["code"]
    clock.now = datetime(2025, 12, 11, 16, 0, tzinfo=UTC)  # midnight in Shanghai
    turned = (await body(http))["code"]

    assert codes == [0, 0, 303]
    assert (still, turned) == (303, 0)


async def test_balance_runs_out_with_601(http: httpx.AsyncClient, sim: Simulator) -> None:
    sim.set_balance(2)
    sim.force_code(USER, 301, times=1)  # not billed, costs nothing
    codes = [(await body(http))["code"] for _ in range(4)]

    assert codes == [301, 0, 0, 601]
    assert sim.counters().balance == 0
    sim.set_balance(1)
    assert (await body(http))["code"] == 0
    assert (await body(http))["message"] == "INSUFFICIENT ACCOUNT BALANCE"


async def test_unaccepted_token_returns_100(http: httpx.AsyncClient, sim: Simulator) -> None:
    sim.set_knobs(tokens=frozenset({"good"}))

    bad = await call(http, token="bad")
    good = await call(http, token="good")

    assert (bad.json()["code"], bad.json()["message"]) == (100, "TOKEN INVALID OR INACTIVE")
    assert good.json()["code"] == 0
    assert sim.counters().billed == 1


async def test_token_cap_returns_602(http: httpx.AsyncClient, sim: Simulator) -> None:
    sim.set_knobs(token_cap=2)
    codes = [(await call(http, token="a")).json()["code"] for _ in range(3)]
    other = (await call(http, token="b")).json()["code"]

    assert codes == [0, 0, 602]
    assert other == 0


# --------------------------------------------------------------------------- faults


async def test_fault_rates_are_seeded_and_roughly_right(clock: FakeClock) -> None:
    async def run() -> list[int | None]:
        async with (
            Simulator(SimKnobs(seed=7, faults={"301": 0.3, "500": 0.2}), clock=clock) as sim,
            httpx.AsyncClient(base_url=sim.base_url, verify=tls_context()) as http,
        ):
            for _ in range(200):
                await call(http)
            return [r.code for r in sim.counters().log]

    first, second = await run(), await run()

    assert first == second
    assert 40 <= first.count(301) <= 80
    assert 25 <= first.count(500) <= 60
    assert first.count(0) == 200 - first.count(301) - first.count(500)


def test_knobs_validate() -> None:
    with pytest.raises(ValueError):
        SimKnobs(faults={"meteor": 0.1})
    with pytest.raises(ValueError):
        SimKnobs(faults={"301": 0.7, "500": 0.5})
    with pytest.raises(ValueError):
        SimKnobs(latency_p50_ms=10)
    assert "secret" not in repr(SimKnobs(tokens=frozenset({"secret"})))


async def test_every_fault_kind_answers_as_documented(
    http: httpx.AsyncClient, sim: Simulator
) -> None:
    sim.set_knobs(huge_bytes=200_000, hang_s=0.05)
    seen: dict[str, tuple[int | None, str]] = {}
    for kind in FAULT_KINDS:
        sim.force_code(USER, kind, times=1)
        try:
            response = await call(http)
            seen[kind] = (response.status_code, response.text)
        except httpx.RemoteProtocolError:
            seen[kind] = (None, "")

    assert seen["301"][0] == 200
    assert json.loads(seen["301"][1])["message"] == "FAILED, RETRY"
    assert json.loads(seen["500"][1])["message"] == "SERVER ERROR"
    assert seen["gateway_400"][0] == 400
    assert seen["html_502"][0] == 502
    assert "<h1>502 Bad Gateway</h1>" in seen["html_502"][1]
    assert seen["empty"] == (200, "")
    assert seen["reset"] == (None, "")
    with pytest.raises(json.JSONDecodeError):
        json.loads(seen["truncated"][1])
    assert json.loads(seen["wrong_type"][1])["data"]["sumData"]["read"] == "abc"
    assert len(seen["huge"][1]) > 200_000
    assert json.loads(seen["huge"][1])["data"]["sumData"]["dateKey"] == "2025-12-10"
    assert json.loads(seen["hang"][1])["code"] == 0
    log = sim.counters().log
    assert [r.fault for r in log] == [None, None, *FAULT_KINDS[2:]]
    billed = {r.fault or str(r.code): r.billed for r in log}
    assert billed == {
        "301": False,
        "500": False,
        "gateway_400": False,
        "html_502": False,
        "truncated": True,
        "hang": True,
        "empty": False,
        "wrong_type": True,
        "huge": True,
        "reset": False,
        "trickle": True,
    }


async def test_fixed_latency(http: httpx.AsyncClient, sim: Simulator) -> None:
    sim.set_knobs(latency_ms=80)
    started = time.monotonic()
    await call(http)

    assert time.monotonic() - started >= 0.08


async def test_lognormal_latency_is_seeded(http: httpx.AsyncClient, sim: Simulator) -> None:
    sim.set_knobs(latency_p50_ms=20, latency_p99_ms=60)
    durations = []
    for _ in range(15):
        started = time.monotonic()
        await call(http)
        durations.append(time.monotonic() - started)

    assert 0.008 < median(durations) < 0.06


async def test_closing_wakes_a_hanging_call(clock: FakeClock) -> None:
    sim = Simulator(SimKnobs(hang_s=30), clock=clock)
    await sim.start()
    sim.force_code(USER, "hang")
    async with httpx.AsyncClient(base_url=sim.base_url, verify=tls_context()) as http:
        pending = asyncio.ensure_future(call(http))
        while not sim.counters().calls:
            await asyncio.sleep(0.01)
        started = time.monotonic()
        await sim.close()
        assert time.monotonic() - started < 3
        response = await pending
    assert response.json()["code"] == 0


# --------------------------------------------------------------------------- counters and scripts


async def test_counters(http: httpx.AsyncClient, sim: Simulator, clock: FakeClock) -> None:
    other = creator_id(77)
    sim.force_code(other, 301, times=1)
    for user_id in (USER, USER, other, other):
        await call(http, user_id)
        clock.advance(seconds=40)
    await call(http, dateType="DAY_90")
    await call(http, user_id="")

    counters = sim.counters()

    label = "DAILY_NOTE/PHOTO_TEXT_AND_VIDEO/DAY_30/ALL"
    assert counters.calls == 6
    assert counters.billed == 4
    assert counters.by_code == {"0": 4, "301": 1, "gateway_400": 1}
    assert counters.by_series == {
        (USER, label): 2,
        (other, label): 2,
        (USER, "DAILY_NOTE/PHOTO_TEXT_AND_VIDEO/DAY_90/ALL"): 1,
    }
    assert counters.max_per_minute == 6  # all within a second of wall time
    assert counters.max_in_window(timedelta(minutes=1), by_clock=True) == 3
    first = counters.log[0]
    assert (first.user_id, first.variant, first.code, first.http_status, first.billed) == (
        USER,
        label,
        0,
        200,
        True,
    )
    assert first.at == datetime(2025, 12, 11, 2, 17, 58, 460419, tzinfo=UTC)
    sim.reset_counters()
    assert sim.counters().calls == 0


async def test_script_reads_fall_40_percent_then_recover(
    http: httpx.AsyncClient, sim: Simulator, clock: FakeClock
) -> None:
    before = (await body(http))["data"]["dailyData"]
    sim.script_change(USER, metric="read", factor=0.6)
    after = (await body(http))["data"]["dailyData"]

    assert after[:-1] == before[:-1]
    assert after[-1]["read"] == pytest.approx(before[-1]["read"] * 0.6, abs=1)
    assert after[-1]["imp"] == before[-1]["imp"]
    clock.advance(days=1)
    tomorrow = (await body(http))["data"]["dailyData"]
    unscripted = sim_series.point(USER, Variant(), date(2025, 12, 11))
    assert tomorrow[-1]["read"] == pytest.approx(unscripted["read"] * 0.6, abs=1)
    assert tomorrow[-2]["read"] == after[-1]["read"]
    other = await body(http, creator_id(4242))
    assert other["data"]["sumData"] == sim_series.point(
        creator_id(4242), Variant(), date(2025, 12, 11)
    )

    sim.clear_script(USER)
    recovered = (await body(http))["data"]["dailyData"]
    assert recovered[-1]["read"] == unscripted["read"]


def test_script_rejects_unknown_metrics() -> None:
    with pytest.raises(ValueError):
        Simulator().script_change(USER, metric="cpm", factor=2)


# --------------------------------------------------------------------------- admin API


async def test_admin_api_drives_the_simulator(http: httpx.AsyncClient, sim: Simulator) -> None:
    async def post(path: str, payload: dict[str, Any]) -> httpx.Response:
        return await http.post(f"/_sim/{path}", json=payload)

    knobs = await post("knobs", {"calls_per_minute": 100, "tokens": ["t0k"], "faults": {"500": 0}})
    assert knobs.status_code == 200
    assert knobs.json()["calls_per_minute"] == 100
    assert knobs.json()["accepted_tokens"] == 1
    assert "t0k" not in (await http.get("/_sim/knobs")).text

    assert (await post("balance", {"balance": 1})).json() == {"ok": True}
    assert (await post("force", {"user_id": USER, "code": 303, "times": 1})).status_code == 200
    assert (await body(http))["code"] == 303
    assert (await body(http))["code"] == 0
    assert (await body(http))["code"] == 601
    await post("balance", {"balance": None})
    before = (await body(http))["data"]["sumData"]["read"]
    assert (
        await post("script", {"user_id": USER, "metric": "read", "factor": 0.5})
    ).status_code == 200
    assert (await body(http))["data"]["sumData"]["read"] == pytest.approx(before * 0.5, abs=1)
    await post("script/clear", {"user_id": USER})
    assert (await body(http))["data"]["sumData"]["read"] == before
    await post("force", {"user_id": USER, "code": "html_502"})
    assert (await call(http)).status_code == 502
    await post("force/clear", {"user_id": USER})

    counters = (await http.get("/_sim/counters")).json()
    assert counters["calls"] == 7
    assert counters["by_code"] == {"303": 1, "0": 4, "601": 1, "html_502": 1}
    assert counters["log"][0]["at"] == "2025-12-11T02:17:58.460419+00:00"
    assert "t0k" not in json.dumps(counters)
    assert (await post("reset", {})).json() == {"ok": True}
    assert (await http.get("/_sim/counters")).json()["calls"] == 0


async def test_admin_api_rejects_bad_requests(http: httpx.AsyncClient) -> None:
    bad_knob = await http.post("/_sim/knobs", json={"warp_speed": 9})
    bad_fault = await http.post("/_sim/knobs", json={"faults": {"meteor": 1}})
    not_json = await http.post("/_sim/balance", content=b"{{")
    missing = await http.post("/_sim/script/clear", json={})

    assert [r.status_code for r in (bad_knob, bad_fault, not_json, missing)] == [400] * 4
    assert "warp_speed" in bad_knob.json()["error"]


# --------------------------------------------------------------------------- standalone


@pytest.mark.slow
def test_run_simulator_serves_until_sigterm() -> None:
    port = free_port()
    code = (
        "from monitor.upstream.simulator import run_simulator;"
        f"run_simulator({port}, on_ready=lambda url: print(url, flush=True))"
    )
    with subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True) as proc:
        _serve_then_stop(proc, port)


def _serve_then_stop(proc: subprocess.Popen[str], port: int) -> None:
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == f"http://127.0.0.1:{port}"
        response = httpx.get(
            f"http://127.0.0.1:{port}{CORE_DATA_PATH}", params={"token": "x", "userId": USER}
        )
        assert response.json()["code"] == 0
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def test_a_busy_port_fails_cleanly() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        sim = Simulator(port=busy.getsockname()[1])
        with pytest.raises(OSError):
            await sim.start()
    await sim.close()  # idempotent after the failed start
