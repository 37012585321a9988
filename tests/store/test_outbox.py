"""The outbox store on SQLite and PostgreSQL: transitions with their messages in one
transaction, claims and leases, silences, dead letters."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import timedelta

import pytest
from support.outbox import (
    T0,
    USER_ID,
    NewMessage,
    OutboxDb,
    fire,
    firing_alert,
    message,
    rows,
)

from monitor.errors import StoreError
from monitor.model import Phase

#: fixtures db, db_url, sdb, sqlite_url

LEASE = timedelta(minutes=2)


async def test_transition_writes_alert_and_messages_together(db: OutboxDb) -> None:
    alert_id = await fire(db, "slack", "mail")
    stored = await db.load_alert("reads-down", USER_ID)
    assert stored is not None
    assert (stored.id, stored.state, stored.value, stored.fired_at) == (
        alert_id,
        "firing",
        4260.0,
        T0,
    )
    assert stored.details == {"change_pct": -40.0}
    outbox = await rows(db)
    assert [
        (r["alert_id"], r["channel"], r["event"], r["status"], r["attempts"]) for r in outbox
    ] == [
        (alert_id, "slack", "firing", "pending", 0),
        (alert_id, "mail", "firing", "pending", 0),
    ]
    assert outbox[0]["next_attempt_at"] == T0
    assert outbox[0]["created_at"] == T0


async def test_a_failing_message_rolls_back_the_state_change(db: OutboxDb) -> None:
    ids = await db.sync_creators([])
    assert ids == {}
    broken = NewMessage(channel="slack", event="firing", severity="warning", title=None, body="b")  # type: ignore[arg-type]
    with pytest.raises(StoreError):
        await db.commit_transition(firing_alert(None), [broken], now=T0, expect=None)
    assert await db.load_alert("reads-down", "account") is None
    assert await rows(db) == []


async def test_update_resolve_and_drop(db: OutboxDb) -> None:
    alert_id = await fire(db, "slack")
    current = await db.load_alert("reads-down", USER_ID)
    assert current is not None
    resolved = replace(current, state=Phase.RESOLVED, resolved_at=T0 + timedelta(days=1))
    assert await db.commit_transition(
        resolved, [message("slack", event="resolved")], now=T0, expect=current
    )
    # a resolved alert is still what load_alert returns when nothing is open
    again = await db.load_alert("reads-down", USER_ID)
    assert again is not None
    assert (again.id, again.state) == (alert_id, "resolved")
    assert await db.commit_transition(firing_alert(None, state="pending"), [], now=T0, expect=None)
    opened = await db.load_alert("reads-down", "account")
    assert opened is not None
    assert opened.id is not None
    pending = opened.id
    assert await db.commit_transition(None, [], now=T0, expect=opened, drop_id=pending)
    assert await db.load_alert("reads-down", "account") is None
    assert [r["event"] for r in await rows(db)] == ["firing", "resolved"]
    listed = await db.list_alerts()
    assert [(a.id, a.state, a.name) for a in listed] == [(alert_id, "resolved", "Lilyy")]
    assert await db.list_alerts(open_only=True) == []


async def test_claim_respects_due_times_and_leases(db: OutboxDb) -> None:
    await fire(db, "slack")
    later = NewMessage(
        "slack", "digest", "info", "digest", "body", not_before=T0 + timedelta(hours=1)
    )
    assert await db.enqueue_once([later], now=T0, since=T0, until=T0 + timedelta(days=1))
    first = await db.claim_next(T0, channel="slack", owner="a", lease=LEASE)
    assert first is not None
    assert (first.event, first.rule, first.scope, first.tags, first.alert_state) == (
        "firing",
        "reads-down",
        USER_ID,
        ("fitness",),
        "firing",
    )
    # claimed by "a": nobody else gets it while the lease lasts; the digest is not due yet
    assert await db.claim_next(T0, channel="slack", owner="b", lease=LEASE) is None
    assert await db.claim_next(T0, channel="mail", owner="b", lease=LEASE) is None
    retaken = await db.claim_next(T0 + LEASE, channel="slack", owner="b", lease=LEASE)
    assert retaken is not None
    assert retaken.id == first.id
    digest = await db.claim_next(
        T0 + timedelta(hours=1), channel="slack", owner="b", lease=LEASE, after_id=first.id
    )
    assert digest is not None
    assert (digest.rule, digest.alert_state) == (None, None)


async def test_concurrent_claims_hand_out_each_message_once(db: OutboxDb) -> None:
    await fire(db, *(["slack"] * 5))

    async def worker(owner: str) -> list[int]:
        got = []
        while (m := await db.claim_next(T0, channel="slack", owner=owner, lease=LEASE)) is not None:
            got.append(m.id)
        return got

    results = await asyncio.gather(*(worker(f"w{i}") for i in range(6)))
    claimed = sorted(i for r in results for i in r)
    assert claimed == [r["id"] for r in await rows(db)]
    assert {r["claimed_by"] for r in await rows(db)} <= {f"w{i}" for i in range(6)}


async def test_sent_failed_dead_retry_and_orphans(db: OutboxDb) -> None:
    await fire(db, "slack", "mail", "gone")
    slack, mail, _gone = (r["id"] for r in await rows(db))
    assert await db.mark_sent(slack, now=T0)
    assert not await db.mark_sent(slack, now=T0)  # a second mark changes nothing
    retry_at = T0 + timedelta(seconds=30)
    await db.mark_failed(mail, error="failure: HTTP 500", next_attempt_at=retry_at, dead=False)
    await db.mark_failed(mail, error="failure: HTTP 500", next_attempt_at=retry_at, dead=True)
    assert await db.bury_orphans(["slack", "mail"], reason="channel gone") == 1
    state = {r["channel"]: (r["status"], r["attempts"], r["last_error"]) for r in await rows(db)}
    assert state == {
        "slack": ("sent", 1, None),
        "mail": ("dead", 2, "failure: HTTP 500"),
        "gone": ("dead", 0, "channel gone"),
    }
    assert await db.outbox_counts() == {"pending": 0, "sent": 1, "dead": 2, "suppressed": 0}
    now = T0 + timedelta(days=2)
    assert await db.retry_dead(now, channel="mail") == 1
    replayed = next(r for r in await rows(db) if r["channel"] == "mail")
    assert (replayed["status"], replayed["attempts"], replayed["next_attempt_at"]) == (
        "pending",
        0,
        now,
    )
    assert replayed["not_before"] == now


async def test_silences(db: OutboxDb) -> None:
    one = await db.add_silence(
        now=T0, ends_at=T0 + timedelta(hours=2), user_id=USER_ID, reason="on holiday"
    )
    two = await db.add_silence(
        now=T0, starts_at=T0 + timedelta(hours=1), ends_at=T0 + timedelta(hours=3), tag="fitness"
    )
    assert [s.id for s in await db.active_silences(T0)] == [one]
    assert [s.id for s in await db.active_silences(T0 + timedelta(minutes=90))] == [one, two]
    listed = await db.list_silences(T0 + timedelta(hours=2))
    assert [(s.id, s.tag) for s in listed] == [(two, "fitness")]
    assert len(await db.list_silences(T0 + timedelta(hours=5), expired=True)) == 2
    assert await db.remove_silence(one)
    assert not await db.remove_silence(one)
    with pytest.raises(ValueError):
        await db.add_silence(now=T0, ends_at=T0)
