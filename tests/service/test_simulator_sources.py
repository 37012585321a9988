"""The simulated follower-history, note-list and balance endpoints over real HTTP: trends and
noise, notes that appear and saturate, a balance that each billed call lowers, and the same
limits, faults and determinism as core_data."""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator
from datetime import date, timedelta
from decimal import Decimal
from itertools import pairwise
from typing import Any

import httpx
import pytest
from support.sim import FakeClock, creator_id, find_creator, plain_creator
from support.tls import tls_context

from monitor.upstream import sim_sources
from monitor.upstream.simulator import (
    BALANCE_PATH,
    CORE_DATA_PATH,
    FANS_PATH,
    NOTES_PATH,
    SimKnobs,
    Simulator,
)

USER = plain_creator()
LOSING = find_creator(
    lambda u: sim_sources.fans_trend(u) < -0.001 and sim_sources.fans_base(u) > 100_000
)
GAINING = find_creator(
    lambda u: sim_sources.fans_trend(u) > 0.001 and sim_sources.fans_base(u) > 100_000
)


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


async def get(
    http: httpx.AsyncClient, path: str, user_id: str | None = USER, **params: str
) -> dict[str, Any]:
    query = {"token": "t0k", **({"userId": user_id} if user_id else {}), **params}
    response = await http.get(path, params=query)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def fans(http: httpx.AsyncClient, user_id: str = USER, **params: str) -> list[int]:
    body = await get(http, FANS_PATH, user_id, **params)
    assert body["code"] == 0, body
    return [p["num"] for p in body["data"]["list"]]


async def notes(
    http: httpx.AsyncClient, user_id: str = USER, page: int = 1, **params: str
) -> dict[str, Any]:
    body = await get(http, NOTES_PATH, user_id, pageNumber=str(page), **params)
    assert body["code"] == 0, body
    data: dict[str, Any] = body["data"]
    return data


async def balance(http: httpx.AsyncClient) -> str:
    body = await get(http, BALANCE_PATH, None)
    assert body["code"] == 0, body
    assert body["data"]["currency"] == "CNY"
    amount: str = body["data"]["balance"]
    return amount


# --------------------------------------------------------------------------- followers


async def test_follower_history_like_the_real_one(http: httpx.AsyncClient) -> None:
    body = await get(http, FANS_PATH)

    assert set(body) == {"code", "data", "message", "recordTime"}
    data = body["data"]
    assert set(data) == {"fansNumInc", "fansNumIncRate", "list"}
    days = [p["dateKey"] for p in data["list"]]
    assert len(days) == 30
    assert days[-1] == "2025-12-10"  # T-1 in Shanghai
    assert days == sorted(days)
    counts = [p["num"] for p in data["list"]]
    assert data["fansNumInc"] == counts[-1] - counts[0]
    assert data["fansNumIncRate"] == round((counts[-1] - counts[0]) / counts[0], 4)
    assert len(await fans(http, dateType="DAY_90")) == 90


async def test_followers_trend_up_or_down_with_noise(http: httpx.AsyncClient) -> None:
    losing, gaining = await fans(http, LOSING), await fans(http, GAINING)

    assert losing[-1] < losing[0]
    assert gaining[-1] > gaining[0]
    for series in (losing, gaining):
        steps = [b - a for a, b in pairwise(series)]
        assert len(set(steps)) > 10  # noise and drift, not a straight line
        assert max(abs(s) for s in steps) < 0.01 * series[0]  # no day jumps by 1 %


def test_a_quarter_of_creators_lose_followers() -> None:
    today = date(2025, 12, 11)
    ask = sim_sources.read_fans_query({})
    incs = [sim_sources.fans_data(creator_id(n), ask, today)["fansNumInc"] for n in range(400)]

    losing = sum(inc < 0 for inc in incs) / len(incs)
    assert 0.15 < losing < 0.35


async def test_the_follower_window_slides_and_repeats(
    http: httpx.AsyncClient, clock: FakeClock
) -> None:
    today, again = await fans(http), await fans(http)
    clock.advance(days=1)
    tomorrow = await fans(http)

    assert today == again
    assert tomorrow[:-1] == today[1:]


async def test_a_script_makes_followers_fall(http: httpx.AsyncClient, sim: Simulator) -> None:
    before = await fans(http)
    sim.script_change(USER, metric="fans", factor=0.97)
    after = await fans(http)

    assert after[:-1] == before[:-1]
    assert after[-1] == pytest.approx(before[-1] * 0.97, abs=1)
    core = await get(http, CORE_DATA_PATH)
    assert core["code"] == 0  # a follower script leaves core_data alone


# --------------------------------------------------------------------------- notes


async def test_note_list_like_the_real_one(http: httpx.AsyncClient) -> None:
    body = await get(http, NOTES_PATH)

    data = body["data"]
    assert set(data) == {"total", "list"}
    assert len(data["list"]) == 8
    keys = {
        "noteId", "title", "date", "readNum", "likeNum", "collectNum",
        "isAdvertise", "isVideo", "brandName", "imgUrl", "thirdReadUserNum",
    }  # fmt: skip
    for note in data["list"]:
        assert set(note) == keys
        assert len(note["noteId"]) == 24
        int(note["noteId"], 16)
    days = [n["date"] for n in data["list"]]
    assert days == sorted(days, reverse=True)
    assert days[0] <= "2025-12-11"


async def test_pages_follow_each_other_to_the_end(http: httpx.AsyncClient) -> None:
    first = await notes(http)
    total = first["total"]
    last_page = math.ceil(total / 8)
    ids = [n["noteId"] for n in first["list"]]
    for page in range(2, last_page + 2):
        ids += [n["noteId"] for n in (await notes(http, page=page))["list"]]

    assert len(ids) == len(set(ids)) == total


async def test_new_notes_appear_over_time(http: httpx.AsyncClient, clock: FakeClock) -> None:
    before = await notes(http)
    clock.advance(days=14)
    after = await notes(http)

    old_ids = [n["noteId"] for n in before["list"]]
    new = [n for n in after["list"] if n["noteId"] not in old_ids]
    assert new, "a creator posting at least weekly posted in two weeks"
    assert after["total"] - before["total"] >= len(new)
    assert all(n["date"] > before["list"][0]["date"] for n in new)
    # a note seen again has grown (or stayed, once saturated), never shrunk
    seen = {n["noteId"]: n for n in before["list"]}
    for note in after["list"]:
        if note["noteId"] in seen:
            assert note["readNum"] >= seen[note["noteId"]]["readNum"]


async def test_reads_grow_along_a_saturating_curve(
    http: httpx.AsyncClient, sim: Simulator, clock: FakeClock
) -> None:
    note_id = sim.publish_note(USER, reads=10_000, tau_hours=24, title="爆款")
    published, ages = clock.now, (0, 6, 24, 72, 240, 480)
    seen: list[tuple[int, int, int]] = []
    for hours in ages:
        clock.now = published + timedelta(hours=hours)
        note = await _find(http, note_id)
        seen.append((note["readNum"], note["likeNum"], note["collectNum"]))

    reads = [r for r, _, _ in seen]
    assert reads[0] == 0
    assert reads == sorted(reads)
    assert reads[2] == pytest.approx(10_000 * (1 - math.exp(-1)), abs=2)
    assert reads[-1] == pytest.approx(10_000, abs=1)
    per_hour = [
        (b - a) / (h2 - h1)
        for (a, b), (h1, h2) in zip(pairwise(reads), pairwise(ages), strict=True)
    ]
    assert per_hour == sorted(per_hour, reverse=True)  # it slows down
    likes = [likes for _, likes, _ in seen]
    assert likes == sorted(likes)
    assert likes[-1] == pytest.approx(500, abs=1)


async def _find(http: httpx.AsyncClient, note_id: str) -> dict[str, Any]:
    """The note, on whichever page newer notes have pushed it to."""
    for page in range(1, 20):
        for note in (await notes(http, page=page))["list"]:
            if note["noteId"] == note_id:
                return note
    raise AssertionError(f"note {note_id} not listed")


async def test_a_scripted_note_leads_the_list(http: httpx.AsyncClient, sim: Simulator) -> None:
    total = (await notes(http))["total"]
    note_id = sim.publish_note(USER, title="新品试用", video=True, ad=True, brand="花西子")

    page = await notes(http)
    assert page["total"] == total + 1
    first = page["list"][0]
    assert first["noteId"] == note_id
    assert (first["title"], first["isVideo"], first["isAdvertise"], first["brandName"]) == (
        "新品试用",
        True,
        True,
        "花西子",
    )
    assert first["date"] == "2025-12-11"


async def test_filters_and_orders(http: httpx.AsyncClient) -> None:
    videos = await notes(http, noteType="VIDEO")
    by_reads = await notes(http, orderType="MOST_READ")
    organic = await notes(http, advertiseSwitch="ORGANIC_ONLY")

    assert all(n["isVideo"] for n in videos["list"])
    reads = [n["readNum"] for n in by_reads["list"]]
    assert reads == sorted(reads, reverse=True)
    assert not any(n["isAdvertise"] for n in organic["list"])
    assert organic["total"] <= (await notes(http))["total"]


async def test_a_creator_not_on_pugongying_has_empty_lists(http: httpx.AsyncClient) -> None:
    empty = "eeeeee" + creator_id(3)[6:]

    assert await notes(http, empty) == {"total": 0, "list": []}
    assert await fans(http, empty) == []


@pytest.mark.parametrize(
    ("path", "params"),
    [
        (NOTES_PATH, {"orderType": "NEWEST"}),
        (NOTES_PATH, {"pageNumber": "0"}),
        (NOTES_PATH, {"pageNumber": "two"}),
        (NOTES_PATH, {"isThirdPlatform": "MAYBE"}),
        (FANS_PATH, {"dateType": "DAY_7"}),
        (FANS_PATH, {"increaseType": "FANS_LOST"}),
    ],
)
async def test_invalid_parameters_are_code_400(
    http: httpx.AsyncClient, sim: Simulator, path: str, params: dict[str, str]
) -> None:
    body = await get(http, path, **params)

    assert body["code"] == 400
    assert sim.counters().billed == 0


async def test_missing_token_or_creator_is_a_gateway_400(http: httpx.AsyncClient) -> None:
    for path, query in (
        (FANS_PATH, {"token": "t0k"}),
        (NOTES_PATH, {"userId": USER}),
        (BALANCE_PATH, {}),
    ):
        response = await http.get(path, params=query)
        assert response.status_code == 400
        assert "code" not in response.json()
        assert response.json()["path"] == path


# --------------------------------------------------------------------------- balance


async def test_balance_falls_by_the_price_of_every_billed_call(
    http: httpx.AsyncClient, sim: Simulator
) -> None:
    sim.set_knobs(call_price="0.05", balance="1")
    assert await balance(http) == "1.0000"

    sim.force_code(USER, 301, times=1)  # not billed: costs nothing
    codes = [(await get(http, path))["code"] for path in (FANS_PATH, NOTES_PATH, CORE_DATA_PATH)]
    assert codes == [301, 0, 0]
    assert await balance(http) == "0.9000"  # reading it is free
    sim.force_code(USER, 201, times=1)  # no content: billed
    await get(http, FANS_PATH)
    assert await balance(http) == "0.8500"
    assert sim.counters().balance == Decimal("0.85")


async def test_601_once_the_balance_cannot_pay_for_a_call(
    http: httpx.AsyncClient, sim: Simulator
) -> None:
    sim.set_knobs(call_price="0.3", balance="1")
    codes = [(await get(http, path))["code"] for path in (FANS_PATH, NOTES_PATH, FANS_PATH)]
    assert codes == [0, 0, 0]
    assert await balance(http) == "0.1000"

    refused = [(await get(http, path))["code"] for path in (FANS_PATH, NOTES_PATH, CORE_DATA_PATH)]
    assert refused == [601, 601, 601]
    assert await balance(http) == "0.1000"  # the balance still answers
    sim.set_balance(0)
    assert await balance(http) == "0.0000"
    sim.set_balance("5")
    assert (await get(http, NOTES_PATH))["code"] == 0
    assert await balance(http) == "4.7000"


async def test_reading_the_balance_can_be_billed(http: httpx.AsyncClient, sim: Simulator) -> None:
    sim.set_knobs(call_price="0.5", balance="1", balance_billed=True)

    readings = [await balance(http) for _ in range(4)]

    assert readings == ["1.0000", "0.5000", "0.0000", "0.0000"]
    assert sim.counters().billed == 2  # an empty account reads its balance for free
    assert (await get(http, FANS_PATH))["code"] == 601


async def test_an_unlimited_balance_still_shows_the_spend(
    http: httpx.AsyncClient, sim: Simulator
) -> None:
    sim.set_knobs(call_price="0.02")
    start = Decimal(await balance(http))
    for _ in range(5):
        await get(http, FANS_PATH)

    assert start - Decimal(await balance(http)) == Decimal("0.10")
    assert sim.counters().balance is None


async def test_default_price_keeps_balance_as_calls_left(
    http: httpx.AsyncClient, sim: Simulator
) -> None:
    sim.set_balance(2)
    codes = [(await get(http, path))["code"] for path in (CORE_DATA_PATH, FANS_PATH, NOTES_PATH)]

    assert codes == [0, 0, 601]
    assert sim.counters().balance == 0
    assert type(sim.counters().balance) is int
    assert await balance(http) == "0.0000"


async def test_the_balance_endpoint_can_be_missing(http: httpx.AsyncClient, sim: Simulator) -> None:
    sim.set_knobs(balance_endpoint=False)

    response = await http.get(BALANCE_PATH, params={"token": "t0k"})

    assert response.status_code == 404
    assert response.json()["error"] == "Not Found"
    assert sim.counters().by_code == {"gateway_404": 1}


async def test_the_balance_obeys_the_token_and_the_rate_limit(
    http: httpx.AsyncClient, sim: Simulator
) -> None:
    sim.set_knobs(tokens=frozenset({"good"}), calls_per_minute=1)

    bad = (await http.get(BALANCE_PATH, params={"token": "bad"})).json()
    good = (await http.get(BALANCE_PATH, params={"token": "good"})).json()
    limited = await http.get(BALANCE_PATH, params={"token": "good"})

    assert (bad["code"], good["code"], limited.json()["code"]) == (100, 0, 302)
    assert "Retry-After" in limited.headers


# --------------------------------------------------------------------------- faults, seeds


@pytest.mark.parametrize("path", [FANS_PATH, NOTES_PATH])
async def test_wrong_type_spoils_one_value(
    http: httpx.AsyncClient, sim: Simulator, path: str
) -> None:
    sim.force_code(USER, "wrong_type", times=1)

    body = await get(http, path)

    assert body["code"] == 0
    first = body["data"]["list"][0 if path == NOTES_PATH else -1]
    assert "abc" in first.values()


async def test_a_forced_endpoint_leaves_the_others_alone(
    http: httpx.AsyncClient, sim: Simulator
) -> None:
    sim.force_code(USER, 500, endpoint="fans")

    codes = [(await get(http, path))["code"] for path in (FANS_PATH, NOTES_PATH, CORE_DATA_PATH)]

    assert codes == [500, 0, 0]
    with pytest.raises(ValueError):
        sim.force_code(USER, 500, endpoint="profile")


async def test_faults_are_seeded_across_endpoints(clock: FakeClock) -> None:
    knobs = SimKnobs(seed=7, faults={"301": 0.2, "500": 0.1, "truncated": 0.1})

    async def run() -> list[bytes]:
        async with (
            Simulator(knobs, clock=clock) as sim,
            httpx.AsyncClient(base_url=sim.base_url, timeout=5, verify=tls_context()) as http,
        ):
            bodies = []
            for n in range(40):
                path = (CORE_DATA_PATH, FANS_PATH, NOTES_PATH, BALANCE_PATH)[n % 4]
                query = {"token": "t", "userId": creator_id(n % 5)}
                bodies.append((await http.get(path, params=query)).content)
            return bodies

    first, second = await run(), await run()

    assert first == second
    codes = [_code(body) for body in first]
    assert {301, 500, "cut"} <= set(codes)
    assert codes.count(0) >= 20


def _code(body: bytes) -> int | str:
    try:
        code: int = json.loads(body)["code"]
    except ValueError:
        return "cut"
    return code


async def test_counters_tell_endpoints_apart(http: httpx.AsyncClient, sim: Simulator) -> None:
    await get(http, CORE_DATA_PATH)
    await get(http, FANS_PATH)
    await get(http, NOTES_PATH, pageNumber="2")
    await balance(http)

    counters = sim.counters()
    assert counters.by_endpoint == {"core": 1, "fans": 1, "notes": 1, "balance": 1}
    assert counters.by_series == {(USER, "DAILY_NOTE/PHOTO_TEXT_AND_VIDEO/DAY_30/ALL"): 1}
    assert counters.billed == 3
    assert [r.endpoint for r in counters.log] == ["core", "fans", "notes", "balance"]
    assert counters.log[2].variant == "LATEST/ALL/ALL/NO/page=2"
    assert counters.log[3].user_id is None


async def test_admin_api_drives_the_sources(http: httpx.AsyncClient, sim: Simulator) -> None:
    knobs = await http.post("/_sim/knobs", json={"call_price": 0.1, "balance": "2.5"})
    assert knobs.status_code == 200
    assert (knobs.json()["call_price"], knobs.json()["balance"]) == ("0.1000", "2.5000")
    published = await http.post("/_sim/publish", json={"user_id": USER, "reads": 900})
    note_id = published.json()["note_id"]
    assert (await notes(http))["list"][0]["noteId"] == note_id
    forced = await http.post("/_sim/force", json={"user_id": USER, "code": 301, "endpoint": "fans"})
    assert forced.status_code == 200
    assert (await get(http, FANS_PATH))["code"] == 301
    assert (await http.post("/_sim/balance", json={"balance": "1.25"})).json() == {"ok": True}
    assert await balance(http) == "1.2500"
    bad = await http.post("/_sim/balance", json={"balance": "lots"})
    assert bad.status_code == 400

    counters = (await http.get("/_sim/counters")).json()
    assert counters["balance"] == "1.2500"
    assert counters["by_endpoint"] == {"notes": 1, "fans": 1, "balance": 1}
    assert [r["endpoint"] for r in counters["log"]] == ["notes", "fans", "balance"]


def test_knobs_validate_the_price() -> None:
    with pytest.raises(ValueError):
        SimKnobs(call_price="-1")
    with pytest.raises(ValueError):
        SimKnobs(balance="NaN")
    assert SimKnobs(balance=3).balance == 3
    assert SimKnobs(balance=0.1).balance == Decimal("0.1")


def test_follower_counts_do_not_depend_on_the_day_asked() -> None:
    day = date(2025, 12, 1)
    ask = sim_sources.read_fans_query({"dateType": "DAY_90"})
    one = sim_sources.fans_data(USER, ask, day + timedelta(days=10))["list"]
    two = sim_sources.fans_data(USER, ask, day + timedelta(days=40))["list"]

    common = {p["dateKey"]: p["num"] for p in one}
    assert all(common[p["dateKey"]] == p["num"] for p in two if p["dateKey"] in common)
