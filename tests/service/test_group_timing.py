"""When a group goes, through the real notifier into a real HTTP receiver with a SQLite outbox:
a critical alert joining a group already notified goes at once (not after ``group_interval``),
a warning still waits, and the stop's flush sends groups still inside ``group_wait``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest_asyncio
from support.outbox import T0, rows
from support.receiver import Receiver

from monitor.config import NotifyConfig
from monitor.model import AlertState, Phase, Severity
from monitor.notify.sender import Notifier
from monitor.store import Store, migrate
from monitor.store.outbox import NewMessage

KEY = "firing|rule=reads-down"
CONFIG = NotifyConfig(group_wait=timedelta(seconds=30), group_interval=timedelta(minutes=5))


@pytest_asyncio.fixture
async def sdb(tmp_path: Path) -> AsyncIterator[Store]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'h.db'}"
    await migrate.upgrade(url)
    async with Store.open(url, clock=lambda: T0) as store:
        yield store


@pytest_asyncio.fixture
async def team() -> AsyncIterator[Receiver]:
    async with Receiver() as receiver:
        yield receiver


async def _queue(store: Store, n: int, severity: str, at: timedelta) -> None:
    """The firing of creator ``n``'s alert, joining the rule's group, queued at T0 + ``at``."""
    member = NewMessage(
        "team",
        "firing",
        severity,
        f"creator {n} {severity}",
        "b",
        group_key=KEY,
        grouping={"rank": n, "line": f"creator {n}", "title": "{n} down", "more": "{k}"},
    )
    alert = AlertState(
        rule="reads-down",
        scope=f"user-{n}",
        creator_id=None,
        severity=Severity(severity),
        state=Phase.FIRING,
        fired_at=T0 + at,
        summary=member.title,
    )
    assert await store.commit_transition(alert, [member], now=T0 + at, expect=None)


def _notifier(store: Store, receiver: Receiver) -> Notifier:
    return Notifier(store, {"team": receiver.url("/t")}, CONFIG, owner="t", jitter=0.0)


async def test_a_critical_joining_a_notified_group_goes_at_once(sdb: Store, team: Receiver) -> None:
    await _queue(sdb, 1, "warning", timedelta(0))
    async with _notifier(sdb, team) as notifier:
        assert (await notifier.drain(T0 + timedelta(seconds=31))).sent == 1  # the group began
        await _queue(sdb, 2, "warning", timedelta(minutes=1))
        held = await notifier.drain(T0 + timedelta(minutes=1, seconds=1))
        assert (held.sent, held.held) == (0, 1)  # a warning waits for group_interval
        await _queue(sdb, 3, "critical", timedelta(minutes=2))
        now = await notifier.drain(T0 + timedelta(minutes=2, seconds=1))
    assert now.sent == 2  # the critical at once, and the warning waiting beside it with it
    titles = [b["title"] for b in team.bodies("/t")]
    assert titles[0] == "creator 1 warning"
    assert len(titles) == 2
    assert all(r["status"] == "sent" for r in await rows(sdb))


async def test_a_critical_starting_a_group_still_waits_for_its_wave(
    sdb: Store, team: Receiver
) -> None:
    await _queue(sdb, 1, "critical", timedelta(0))
    async with _notifier(sdb, team) as notifier:
        assert (await notifier.drain(T0 + timedelta(seconds=1))).sent == 0
        assert (await notifier.drain(T0 + timedelta(seconds=31))).sent == 1


async def test_the_stops_flush_sends_a_group_inside_group_wait(sdb: Store, team: Receiver) -> None:
    await _queue(sdb, 1, "warning", timedelta(0))
    await _queue(sdb, 2, "warning", timedelta(seconds=1))
    async with _notifier(sdb, team) as notifier:
        assert (await notifier.drain(T0 + timedelta(seconds=2))).sent == 0  # held: group_wait
        flushed = await notifier.drain(T0 + timedelta(seconds=3), flush=True)
    assert flushed.sent == 2
    assert len(team.received) == 1  # one grouped message
    assert all(r["status"] == "sent" for r in await rows(sdb))
