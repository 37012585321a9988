"""The rules on the follower, note and balance sources through the real alerting glue, store
(SQLite file and PostgreSQL) and outbox: followers written with ``store_followers``, note pages
with ``store_notes``, evaluated by ``Alerting.evaluate_creator``/``evaluate_account`` as the
fetcher and the balance job call them. A new note is told once (across evaluations, restarts,
two instances and visits that show it again), a wave of them is one grouped message through the
real notifier, and the balance resolves when money is added.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest_asyncio
from support.alerting import BO, LILYY, open_store, table
from support.receiver import Receiver
from support.sim import FakeClock

from monitor.config import Config, parse_config
from monitor.model import (
    Creator,
    FollowerPoint,
    ListedNote,
    Note,
    NoteStats,
    Variant,
    note_variant,
)
from monitor.notify.sender import Notifier
from monitor.policy.lifecycle import EVENT_HOLD
from monitor.policy.rules import AccountSubject
from monitor.service.alerting.evaluation import Alerting, SeriesFacts
from monitor.store import Store

T0 = datetime(2026, 11, 10, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai
LILYY_C = Creator(LILYY, "Lilyy", ("fitness",))
BO_C = Creator(BO, "Bo", ("food",))
CORE = Variant()
FANS = Variant.for_source("fans")
NOTES = Variant.for_source("notes")
NEW_NOTES = {"name": "new-notes", "kind": "new_note"}


def config_of(*rules: dict[str, Any], group_wait: str = "30s") -> Config:
    return parse_config(
        {
            "defaults": {"sources": ["core", "fans", "notes"]},
            "creators": [
                {"user_id": c.user_id, "name": c.name, "tags": c.tags} for c in (LILYY_C, BO_C)
            ],
            "channels": [{"name": "team", "url": "json://127.0.0.1:9/t"}],
            "notify": {"group_wait": group_wait},
            "rules": list(rules),
        }
    )


@pytest_asyncio.fixture
async def clock() -> FakeClock:
    return FakeClock(T0)


@pytest_asyncio.fixture
async def store(db_url: str, clock: FakeClock) -> AsyncIterator[Store]:
    opened = await open_store(db_url, clock)
    try:
        yield opened
    finally:
        await opened.close()


def account(now: datetime, balance: str | None = None, days: float | None = None) -> AccountSubject:
    return AccountSubject(
        now=now,
        used_today=10,
        daily_calls=2000,
        balance=None if balance is None else Decimal(balance),
        balance_read_at=now,
        price_per_call=Decimal("0.05"),
        days_left=days,
    )


def facts(*, fans_code: int | None = 0, fans_failures: int = 0) -> list[SeriesFacts]:
    """The creator's three series, as the fetcher gathers them."""
    since = T0 - timedelta(days=30)
    return [
        SeriesFacts(CORE, T0, 0, 0, since),
        SeriesFacts(FANS, T0, fans_failures, fans_code, since),
        SeriesFacts(NOTES, T0, 0, 0, since),
    ]


def listed(
    n: int,
    *,
    published: date = date(2026, 11, 10),
    reads: int = 100,
    video: bool = False,
    brand: str | None = None,
) -> ListedNote:
    note = Note(f"{n:024x}", f"note {n}", published, video=video, ad=brand is not None, brand=brand)
    return ListedNote(note, NoteStats(reads=reads, likes=reads // 10, collects=reads // 50))


async def visit(store: Store, creator_id: int, notes: Sequence[ListedNote], at: datetime) -> None:
    """One note-list visit of the creator, stored as the fetcher stores it."""
    await store.store_notes(creator_id, notes, at)


async def tracked(store: Store) -> dict[str, int]:
    return await store.sync_creators([LILYY_C, BO_C])


async def test_followers_falling_one_percent_over_a_week_fire_on_the_fans_series(
    store: Store, clock: FakeClock
) -> None:
    ids = await tracked(store)
    counts = [10_000, 10_010, 10_020, 10_000, 9_990, 9_950, 9_930, 9_900]
    start = date(2026, 11, 2)
    points = [FollowerPoint(start + timedelta(days=i), n) for i, n in enumerate(counts)]
    await store.store_followers(ids[LILYY], points)
    fall = {"name": "followers-down", "kind": "change", "metric": "fans", "baseline": "7d"}
    reads = {"name": "reads-down", "kind": "change", "metric": "read", "pct": -1}
    alerting = Alerting(config_of({**fall, "pct": -1}, reads), store, clock=clock)
    assert await alerting.evaluate_creator(ids[LILYY], LILYY_C, facts(), account(T0)) == 1
    [alert] = await table(store, "alerts")
    assert (alert["rule"], alert["variant"], alert["state"]) == (
        "followers-down",
        "fans/DAY_30",
        "firing",
    )
    [message] = await table(store, "notifications")
    assert message["title"] == (
        "[FIRING] Lilyy: followers 10,000 → 9,900 (-1.0 %) · followers-down"
    )
    assert "rolling medians" not in message["body"]  # follower counts are daily totals
    assert "fans/DAY_30" not in message["body"]  # one follower series: it goes without saying
    # only the fans series' data changed: the core rule is left alone, the fans rule holds
    fresh = await alerting.evaluate_creator(
        ids[LILYY], LILYY_C, facts(), account(T0), fresh=("fans",)
    )
    assert fresh == 0


async def test_a_failing_fans_call_is_an_api_error_naming_its_series(
    store: Store, clock: FakeClock
) -> None:
    ids = await tracked(store)
    rule = {"name": "failing", "kind": "api_error", "consecutive": 3}
    alerting = Alerting(config_of(rule), store, clock=clock)
    failing = facts(fans_code=301, fans_failures=3)
    assert await alerting.evaluate_creator(ids[BO], BO_C, failing, account(T0)) == 1
    [alert] = await table(store, "alerts")
    assert (alert["scope"], alert["variant"]) == (BO, "fans/DAY_30")
    [message] = await table(store, "notifications")
    assert "fans/DAY_30" in message["body"]  # which of the creator's series fails


async def test_a_new_note_is_told_once_with_what_it_is_and_its_link(
    store: Store, clock: FakeClock
) -> None:
    ids = await tracked(store)
    config = config_of(NEW_NOTES)
    baseline = [listed(n, published=date(2026, 10, 20 + n)) for n in (1, 2, 3)]
    await visit(store, ids[LILYY], baseline, T0)
    alerting = Alerting(config, store, clock=clock)
    assert await alerting.evaluate_creator(ids[LILYY], LILYY_C, facts(), account(T0)) == 0

    clock.advance(hours=6)
    video = listed(4, video=True, brand="Lancôme")
    photo = listed(5)
    await visit(store, ids[LILYY], [video, photo, *baseline], clock())
    assert await alerting.evaluate_creator(ids[LILYY], LILYY_C, facts(), account(clock())) == 2
    alerts = {a["variant"]: a for a in await table(store, "alerts")}
    assert set(alerts) == {note_variant(video.note.note_id), note_variant(photo.note.note_id)}
    assert {a["state"] for a in alerts.values()} == {"firing"}
    messages = await table(store, "notifications")
    assert [m["group_key"] for m in messages] == ["firing|rule=new-notes"] * 2
    told = next(m for m in messages if video.note.note_id in m["body"])
    assert told["title"] == (
        "[NEW NOTE] Lilyy: “note 4” (video, published 2026-11-10, ad: Lancôme)"
    )
    for line in (
        "- Title: note 4",
        "- Published: 2026-11-10 (Asia/Shanghai)",
        "- Type: video",
        "- Ad, brand Lancôme",
        f"- Link: https://www.xiaohongshu.com/explore/{video.note.note_id}",
    ):
        assert line in told["body"]

    # again, after a restart, and when a later visit lists the same notes: never again
    assert await alerting.evaluate_creator(ids[LILYY], LILYY_C, facts(), account(clock())) == 0
    restarted = Alerting(config, store, clock=clock)
    assert await restarted.evaluate_creator(ids[LILYY], LILYY_C, facts(), account(clock())) == 0
    clock.advance(seconds=EVENT_HOLD.total_seconds())
    await visit(store, ids[LILYY], [video, photo, *baseline], clock())
    assert await restarted.evaluate_creator(ids[LILYY], LILYY_C, facts(), account(clock())) == 0
    # told: the alerts end quietly once held long enough, with no resolution message
    assert {a["state"] for a in await table(store, "alerts")} == {"resolved"}
    assert await restarted.evaluate_creator(ids[LILYY], LILYY_C, facts(), account(clock())) == 0
    assert [m["event"] for m in await table(store, "notifications")] == ["firing", "firing"]


async def test_a_rule_added_later_tells_only_the_notes_of_the_last_days(
    store: Store, clock: FakeClock
) -> None:
    ids = await tracked(store)
    await visit(store, ids[BO], [listed(1, published=date(2026, 9, 1))], T0 - timedelta(days=60))
    await visit(store, ids[BO], [listed(2, published=date(2026, 10, 1))], T0 - timedelta(days=40))
    await visit(store, ids[BO], [listed(3, published=date(2026, 11, 9))], T0 - timedelta(hours=20))
    alerting = Alerting(config_of(NEW_NOTES), store, clock=clock)
    assert await alerting.evaluate_creator(ids[BO], BO_C, facts(), account(T0)) == 1
    [alert] = await table(store, "alerts")
    assert alert["variant"] == note_variant(f"{3:024x}")


async def test_two_instances_tell_a_new_note_once(
    store: Store, db_url: str, clock: FakeClock
) -> None:
    ids = await tracked(store)
    await visit(store, ids[LILYY], [listed(1, published=date(2026, 11, 1))], T0)
    clock.advance(hours=1)
    await visit(store, ids[LILYY], [listed(2), listed(1, published=date(2026, 11, 1))], clock())
    other = Store.open(db_url, clock=clock)
    try:
        config = config_of(NEW_NOTES)
        a, b = Alerting(config, store, clock=clock), Alerting(config, other, clock=clock)
        queued = await asyncio.gather(
            a.evaluate_creator(ids[LILYY], LILYY_C, facts(), account(clock())),
            b.evaluate_creator(ids[LILYY], LILYY_C, facts(), account(clock())),
        )
    finally:
        await other.close()
    assert sorted(queued) == [0, 1]
    assert len(await table(store, "notifications")) == 1
    assert len(await table(store, "alerts")) == 1


async def test_a_wave_of_new_notes_is_one_message_listing_each_with_its_link(
    store: Store, clock: FakeClock
) -> None:
    ids = await tracked(store)
    for user in (LILYY, BO):
        await visit(
            store, ids[user], [listed(9 if user == BO else 8, published=date(2026, 11, 1))], T0
        )
    clock.advance(hours=3)
    wave = {LILYY: [listed(1), listed(2, video=True)], BO: [listed(3, brand="Dior")]}
    config = config_of(NEW_NOTES)
    alerting = Alerting(config, store, clock=clock)
    for user, creator in ((LILYY, LILYY_C), (BO, BO_C)):
        await visit(store, ids[user], wave[user], clock())
        await alerting.evaluate_creator(ids[user], creator, facts(), account(clock()))
    async with Receiver() as team:
        notifier = Notifier(store, {"team": team.url("/t")}, config.notify, owner="t", jitter=0.0)
        async with notifier:
            assert (await notifier.drain(clock())).sent == 0  # the wave waits group_wait
            assert (await notifier.drain(clock() + timedelta(seconds=31))).sent == 3
        [body] = team.bodies("/t")
    assert body["title"] == "[NEW NOTE] new-notes: 3 notes"
    lines = body["message"].strip().splitlines()
    assert len(lines) == 3
    assert f"- Bo: “note 3” (photo, published 2026-11-10, ad: Dior) {listed(3).note.url}" in lines


async def test_a_hit_and_a_flop_fire_once_per_note(store: Store, clock: FakeClock) -> None:
    ids = await tracked(store)
    hit = {"name": "hit", "kind": "note", "metric": "reads", "op": ">=", "value": 10_000}
    flop = {"name": "flop", "kind": "note", "metric": "reads", "op": "<", "value": 500}
    alerting = Alerting(
        config_of({**hit, "within": "3d"}, {**flop, "after": "3d"}), store, clock=clock
    )
    young = listed(1, published=date(2026, 11, 9), reads=2_000)
    old = listed(2, published=date(2026, 11, 6), reads=300)  # 3d 10h old at T0
    await visit(store, ids[LILYY], [young, old], T0)
    assert await alerting.evaluate_creator(ids[LILYY], LILYY_C, facts(), account(T0)) == 1
    clock.advance(hours=6)
    grown = listed(1, published=date(2026, 11, 9), reads=12_000)
    await visit(store, ids[LILYY], [grown, old], clock())
    assert await alerting.evaluate_creator(ids[LILYY], LILYY_C, facts(), account(clock())) == 1
    clock.advance(hours=6)
    await visit(
        store, ids[LILYY], [listed(1, reads=20_000, published=date(2026, 11, 9)), old], clock()
    )
    assert await alerting.evaluate_creator(ids[LILYY], LILYY_C, facts(), account(clock())) == 0
    titles = [m["title"] for m in await table(store, "notifications")]
    assert titles == [
        "[NOTE] Lilyy: reads 300 < 500 3d after publishing · “note 2” (photo, published "
        "2026-11-06)",
        "[NOTE] Lilyy: reads 12,000 >= 10,000 within 3d of publishing · “note 1” (photo, "
        "published 2026-11-09)",
    ]


async def test_the_balance_alert_goes_alone_and_resolves_when_money_is_added(
    store: Store, clock: FakeClock
) -> None:
    low = {"name": "low-balance", "kind": "balance", "below": 200, "days_left": 3}
    alerting = Alerting(config_of(low), store, clock=clock)
    assert await alerting.evaluate_account(account(T0)) == 0  # no reading yet
    assert await alerting.evaluate_account(account(T0, "150", 2.5)) == 1
    clock.advance(hours=1)
    assert await alerting.evaluate_account(account(clock(), "140", 2.3)) == 0
    clock.advance(hours=1)
    assert await alerting.evaluate_account(account(clock(), "1150", 40.0)) == 1
    messages = await table(store, "notifications")
    assert [(m["event"], m["group_key"]) for m in messages] == [
        ("firing", None),
        ("resolved", None),
    ]
    assert messages[0]["title"] == "[WARNING] balance 150.00 CNY < 200.00 CNY, 2.5 days left < 3"
    assert messages[1]["title"] == "[RESOLVED] balance back to 1,150.00 CNY: money was added"
    [alert] = await table(store, "alerts")
    assert (alert["scope"], alert["variant"], alert["state"]) == ("account", "", "resolved")


async def test_a_removed_note_rule_ends_its_open_events_quietly(
    store: Store, clock: FakeClock
) -> None:
    ids = await tracked(store)
    await visit(store, ids[LILYY], [listed(1, published=date(2026, 11, 1))], T0)
    clock.advance(minutes=30)
    await visit(store, ids[LILYY], [listed(2)], clock())
    alerting = Alerting(config_of(NEW_NOTES), store, clock=clock)
    assert await alerting.evaluate_creator(ids[LILYY], LILYY_C, facts(), account(clock())) == 1
    alerting.reconfigure(config_of())
    assert await alerting.evaluate_account(account(clock())) == 0  # no resolution is sent
    [alert] = await table(store, "alerts")
    assert alert["state"] == "resolved"
    assert [m["event"] for m in await table(store, "notifications")] == ["firing"]
