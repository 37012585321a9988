"""Drill 2, short form: the real daemon against a simulator mixing every code and wire fault,
plus the simulator's ``trickle`` fault and what the client makes of a trickling body."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import timedelta
from itertools import pairwise
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from drills.chaos import PROFILE, chaos_drill, summary
from monitor.errors import TransportError
from monitor.model import Variant
from monitor.upstream.client import CORE_DATA_PATH, JustOneClient
from monitor.upstream.simulator import FAULT_KINDS, SimKnobs, Simulator

USER = "5c3bf7f7000000000602fd63"


async def test_trickle_streams_a_valid_body_a_few_bytes_at_a_time() -> None:
    knobs = SimKnobs(trickle_bytes=400, trickle_pause_s=0.05)
    async with Simulator(knobs) as sim, httpx.AsyncClient(base_url=sim.base_url) as http:
        sim.force_code(USER, "trickle", times=1)
        started = time.monotonic()
        arrivals: list[float] = []
        chunks: list[bytes] = []
        params = {"token": "t", "userId": USER}
        async with http.stream("GET", CORE_DATA_PATH, params=params) as response:
            async for chunk in response.aiter_raw():
                arrivals.append(time.monotonic() - started)
                chunks.append(chunk)
        body = b"".join(chunks)
        record = sim.counters().log[0]

    writes = -(-len(body) // 400)
    assert response.status_code == 200
    assert json.loads(body)["code"] == 0  # the whole body is a valid success, only slow
    assert (record.fault, record.code, record.billed) == ("trickle", 0, True)
    assert len(chunks) >= writes // 2  # it really arrives in pieces, not at once
    assert arrivals[-1] >= (writes - 1) * 0.05 * 0.8
    assert max(b - a for a, b in pairwise(arrivals)) < 0.5


def test_trickle_is_a_fault_kind_the_profile_uses() -> None:
    assert FAULT_KINDS[-1] == "trickle"
    assert set(PROFILE) == set(FAULT_KINDS)
    with pytest.raises(ValueError):
        SimKnobs(faults={"trickle": 1.5})


async def test_a_trickling_body_is_cut_at_the_timeout() -> None:
    knobs = SimKnobs(trickle_bytes=128, trickle_pause_s=0.05)  # ~6 kB: about 2.5 s in all
    async with Simulator(knobs) as sim:
        sim.force_code(USER, "trickle")
        client = JustOneClient(
            base_url=sim.base_url, token=SecretStr("tok"), timeout=timedelta(seconds=0.5)
        )
        async with client:
            started = time.monotonic()
            with pytest.raises(TransportError):
                await asyncio.wait_for(client.core_data(USER, Variant()), timeout=30)
            assert time.monotonic() - started < 1.5


@pytest.mark.slow
@pytest.mark.drills
async def test_chaos_keeps_the_daemon_up_and_records_every_fault(
    tmp_path: Path, token: str
) -> None:
    tally, watch = await chaos_drill(tmp_path, token, seconds=10)
    assert tally.faults >= len(FAULT_KINDS), tally
    assert tally.rows_checked > 50
    assert (tally.lost, tally.duplicates, tally.budget_breaches, tally.leaks) == (0, 0, 0, 0), (
        tally.notes
    )
    assert tally.misalerts == 0, tally.notes
    assert max(watch.samples) < 250 * 1024, summary(watch)()
    allowed = ("601: ", "a traceback")
    assert [n for n in tally.notes if not n.startswith(allowed)] == []
    assert not any(n.startswith("a traceback") for n in tally.notes)
