"""The rules on followers and notes behind the real pipeline: the fetcher reads each source from
the simulator over HTTP through the one gate, stores it, and runs the rules, which queue their
messages in the outbox. The creator's first note visit is its baseline; a note it publishes
later is told once, with its link; the same note becoming a hit is told once more, by the hit
rule; followers falling 3 % fire the follower rule."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

import pytest
from support.alerting import table
from support.pipeline import Pipeline, pipeline
from support.sim import plain_creator
from support.store import FakeClock

from monitor.store import Store
from monitor.upstream.simulator import SimKnobs, Simulator

USER = plain_creator()
RULES = [
    {"name": "new-notes", "kind": "new_note"},
    {"name": "hit", "kind": "note", "metric": "reads", "op": ">=", "value": 10_000, "within": "3d"},
    {"name": "followers-down", "kind": "change", "metric": "fans", "pct": -1},
]


@pytest.fixture
def sim_knobs() -> SimKnobs:
    return SimKnobs(balance=Decimal("1000"))


@dataclass
class Daemon:
    pipeline: Pipeline

    async def visit(self, source: str) -> None:
        await self.pipeline.visit(
            next(k for k in self.pipeline.slots if k.split("/")[1].startswith(source))
        )


@pytest.fixture
async def daemon(
    sim: Simulator, store: Store, clock: FakeClock, token: str
) -> AsyncIterator[Daemon]:
    document = {
        "defaults": {"sources": ["core", "fans", "notes"]},
        "creators": [{"user_id": USER, "name": "Lily"}],
        "channels": [{"name": "team", "url": "json://127.0.0.1:9/t"}],
        "rules": RULES,
    }
    async with pipeline(
        document, sim=sim, store=store, clock=clock, token=token, rules=True
    ) as made:
        yield Daemon(made)


async def test_new_notes_hits_and_falling_followers_from_the_simulator(
    daemon: Daemon, sim: Simulator, store: Store, clock: FakeClock
) -> None:
    await daemon.visit("notes")  # the baseline
    await daemon.visit("fans")
    assert await table(store, "notifications") == []

    clock.advance(timedelta(hours=1))
    note_id = sim.publish_note(
        USER, title="冬季护肤三步走", video=True, ad=True, brand="花西子", reads=50_000
    )
    await daemon.visit("notes")
    [told] = await table(store, "notifications")
    assert told["title"].startswith("[NEW NOTE] Lily: “冬季护肤三步走” (video, published ")
    assert told["title"].endswith(", ad: 花西子)")
    assert f"- Link: https://www.xiaohongshu.com/explore/{note_id}" in told["body"]

    clock.advance(timedelta(hours=36))  # the note's reads climbed past 10,000
    await daemon.visit("notes")
    await daemon.visit("notes")
    titles = [m["title"] for m in await table(store, "notifications")]
    assert len(titles) == 2  # the note is not new again; the hit is told once
    assert titles[1].startswith("[NOTE] Lily: reads ")
    assert "within 3d of publishing · “冬季护肤三步走”" in titles[1]

    sim.script_change(USER, "fans", 0.97)
    await daemon.visit("fans")
    last = (await table(store, "notifications"))[-1]
    assert last["title"].startswith("[FIRING] Lily: followers ")
    assert last["title"].endswith(" %) · followers-down")
    fall = next(a for a in await table(store, "alerts") if a["rule"] == "followers-down")
    assert fall["variant"] == "fans/DAY_30"
    assert fall["details"]["change_pct"] == pytest.approx(
        -3.0, abs=0.3
    )  # 3 %, with the day's drift


async def test_an_unreadable_paid_answer_alerts_once_and_resolves_when_answers_read(
    daemon: Daemon, sim: Simulator, store: Store, clock: FakeClock
) -> None:
    """The built-in ``answer-unreadable`` rule (api_error, code 0 on a failed call) tells the
    operator that a paid answer is kept for ``reparse``, on that series, and resolves at the
    next answer that reads."""
    sim.force_code(USER, "wrong_type", times=2, endpoint="fans")
    await daemon.visit("fans")
    clock.advance(timedelta(hours=1))
    await daemon.visit("fans")
    unread = [a for a in await table(store, "alerts") if a["rule"] == "answer-unreadable"]
    assert [(a["variant"], a["state"]) for a in unread] == [("fans/DAY_30", "firing")]
    assert "kept whole for `creator-monitor reparse`" in unread[0]["summary"]
    clock.advance(timedelta(hours=1))
    await daemon.visit("fans")
    unread = [a for a in await table(store, "alerts") if a["rule"] == "answer-unreadable"]
    assert [a["state"] for a in unread] == ["resolved"]
    messages = [n for n in await table(store, "notifications") if "unreadable" in n["title"]]
    assert [n["event"] for n in messages] == ["firing", "resolved"]
