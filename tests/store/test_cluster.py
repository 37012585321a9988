"""The store-level pieces several instances share: heartbeats, slot claims with leases, the
budget spent in one locked transaction, and the one-instance lock on SQLite. Every test runs on
a SQLite file and on the real PostgreSQL (several Store objects = several instances)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import pytest_asyncio
from support.store import (
    T0,
    FakeClock,
    schedule_rows,
)

from monitor import __version__
from monitor.errors import StoreError
from monitor.model import Creator, DateType, Variant
from monitor.policy.budget import BudgetPolicy
from monitor.service.fetching import cluster
from monitor.service.fetching.slot import Slot
from monitor.store import FetchRecord, Store

V = Variant()
SHANGHAI = ZoneInfo("Asia/Shanghai")


@pytest_asyncio.fixture
async def others(db_url: str, store: Store, clock: FakeClock) -> AsyncIterator[list[Store]]:
    """Two more stores on the same (migrated) database: instances B and C."""
    opened = [Store.open(db_url, clock=clock) for _ in range(2)]
    try:
        yield opened
    finally:
        for s in opened:
            await s.close()


async def _seed(store: Store, count: int, due: datetime) -> dict[str, int]:
    creators = [Creator(f"5c3bf7f7{n:016x}", f"c{n}") for n in range(count)]
    ids = await store.sync_creators(creators)
    # one second apart, so "most overdue first" has a definite order
    await store.schedule_new(
        (ids[c.user_id], V, due + timedelta(seconds=n)) for n, c in enumerate(creators)
    )
    return ids


def _budget(per_minute: int = 10, burst: int = 5, daily: int = 1000) -> BudgetPolicy:
    return BudgetPolicy(calls_per_minute=per_minute, burst=burst, daily_calls=daily, zone=SHANGHAI)


# --- instances


async def test_heartbeat_lists_instances_with_their_live_leases(store: Store) -> None:
    ids = await _seed(store, 3, T0)
    for name, beat in (("a", T0), ("b", T0 + timedelta(seconds=5))):
        await store.heartbeat(
            name, host=f"host-{name}", pid=10, version="0.1.0", started_at=T0, now=beat
        )
    await store.heartbeat("a", host="host-a", pid=10, version="0.1.0", started_at=T0, now=T0)
    await store.claim_due(
        owner="a",
        now=T0,
        until=T0 + timedelta(minutes=5),
        due_before=T0 + timedelta(hours=1),
        limit=2,
    )

    listed = await store.list_instances(T0 + timedelta(seconds=10))
    assert [(i.id, i.host, i.leases) for i in listed] == [("b", "host-b", 0), ("a", "host-a", 2)]
    assert listed[0].heartbeat_at == T0 + timedelta(seconds=5)
    assert listed[1].started_at == T0
    # past the lease's end it no longer counts as held
    expired = await store.list_instances(T0 + timedelta(minutes=6))
    assert [i.leases for i in expired] == [0, 0]

    assert await store.retire_instance("a") == 2
    assert [i.id for i in await store.list_instances(T0)] == ["b"]
    rows = {r.creator_id: r for r in await schedule_rows(store)}
    assert all(rows[i].lease_owner is None for i in ids.values())
    assert await store.prune_instances(T0 + timedelta(seconds=6)) == 1
    assert await store.list_instances(T0) == []


# --- claiming due slots


async def test_claims_take_most_overdue_first_and_skip_leased_broken_inactive(
    store: Store,
) -> None:
    ids = list((await _seed(store, 6, T0)).values())
    until = T0 + timedelta(minutes=5)
    now = T0 + timedelta(seconds=10)
    await store.mark_broken(ids[0], V, at=T0, reason="400")
    await store.sync_creators([Creator(f"5c3bf7f7{n:016x}", f"c{n}") for n in range(5)])  # 5 out

    # only the broken one is due by T0
    assert await store.claim_due(owner="c", now=now, until=until, due_before=T0, limit=5) == []
    first = await store.claim_due(owner="a", now=now, until=until, due_before=now, limit=2)
    assert [c.creator_id for c in first] == ids[1:3]
    assert [c.next_due_at for c in first] == [T0 + timedelta(seconds=1), T0 + timedelta(seconds=2)]
    assert all(c.lease_until == until and c.variant == V for c in first)

    second = await store.claim_due(owner="b", now=now, until=until, due_before=now, limit=5)
    assert [c.creator_id for c in second] == ids[3:5]  # leased, broken and inactive skipped
    # a lease that ran out is free for anyone
    late = until + timedelta(seconds=1)
    again = await store.claim_due(
        owner="c", now=late, until=late + timedelta(minutes=5), due_before=late, limit=5
    )
    assert [c.creator_id for c in again] == ids[1:5]


async def test_concurrent_claims_by_three_instances_are_disjoint(
    store: Store, others: list[Store]
) -> None:
    await _seed(store, 60, T0)
    now = T0 + timedelta(minutes=2)
    until = now + timedelta(minutes=5)

    async def claim_all(s: Store, owner: str) -> list[int]:
        got: list[int] = []
        while batch := await s.claim_due(
            owner=owner, now=now, until=until, due_before=now, limit=7
        ):
            got += [c.creator_id for c in batch]
        return got

    results = await asyncio.gather(
        *(claim_all(s, o) for s, o in zip([store, *others], "abc", strict=True))
    )
    every = [cid for r in results for cid in r]
    assert len(every) == 60 == len(set(every))
    owners = {r.creator_id: r.lease_owner for r in await schedule_rows(store)}
    for owner, got in zip("abc", results, strict=True):
        assert {owners[cid] for cid in got} <= {owner}


async def test_finish_and_renew_act_only_for_the_holder(store: Store) -> None:
    ids = list((await _seed(store, 2, T0)).values())
    until = T0 + timedelta(minutes=5)
    await store.claim_due(owner="a", now=T0, until=until, due_before=T0 + timedelta(1), limit=2)
    later = T0 + timedelta(hours=1)

    assert not await store.finish_lease(ids[0], V, owner="b")
    assert await store.renew_leases("a", now=T0, until=until + timedelta(minutes=1)) == 2
    # the fetch moves the slot on in its own transaction; the lease's end keeps that time
    await store.record_fetches([FetchRecord(ids[0], V, started_at=T0, code=0, next_due_at=later)])
    assert await store.finish_lease(ids[0], V, owner="a")
    assert await store.finish_lease(
        ids[1], V, owner="a", broken_at=T0, broken_reason="invalid parameters (400)"
    )
    rows = {r.creator_id: r for r in await schedule_rows(store)}
    assert (rows[ids[0]].next_due_at, rows[ids[0]].lease_owner) == (later, None)
    assert rows[ids[1]].next_due_at == T0 + timedelta(seconds=1)  # a broken slot keeps its time
    assert (rows[ids[1]].broken_reason, rows[ids[1]].lease_until) == (
        "invalid parameters (400)",
        None,
    )
    # a lease that ran out is not revived by a late renewal
    await store.claim_due(
        owner="a", now=later, until=later + timedelta(seconds=1), due_before=later, limit=1
    )
    assert await store.renew_leases("a", now=later + timedelta(seconds=2), until=later) == 0


# --- pure pieces and the SQLite lock


@pytest.mark.parametrize(
    ("local_now", "fetch_after", "bound"),
    [
        ("2025-12-11T10:00", None, "2025-12-11T10:00"),
        ("2025-12-11T10:00", time(9, 0), "2025-12-11T10:00"),
        ("2025-12-11T08:00", time(9, 0), "2025-12-10T23:59:59.999999"),
    ],
)
def test_ready_bound_matches_the_fetch_window(
    local_now: str, fetch_after: time | None, bound: str
) -> None:
    now = datetime.fromisoformat(local_now).replace(tzinfo=SHANGHAI)
    expected = datetime.fromisoformat(bound).replace(tzinfo=SHANGHAI)
    assert cluster.ready_bound(now.astimezone(UTC), fetch_after, SHANGHAI) == expected


def test_identity_fits_the_column() -> None:
    me = cluster.Instance.new(T0)
    assert len(me.id) <= 64
    assert me.id.startswith(f"{me.host[:40]}")
    assert (me.started_at, me.version) == (T0, __version__)


def test_a_second_instance_on_one_sqlite_file_is_refused(tmp_path: Path) -> None:
    database = tmp_path / "history.db"
    with cluster.sole_instance(database):
        with pytest.raises(StoreError) as refused, cluster.sole_instance(database):
            pass
        assert str(refused.value) == (
            f"another creator-monitor (pid {os.getpid()}) is running on "
            f"{database}; SQLite serves one instance: stop the other one, or share a "
            "PostgreSQL database between them"
        )
    with cluster.sole_instance(database):  # released on exit
        pass
    with cluster.sole_instance(None):
        pass


async def test_claims_refresh_slots_and_give_back_what_they_cannot_run(
    store: Store, others: list[Store]
) -> None:
    ids = await _seed(store, 4, T0)
    user_ids = sorted(ids)
    failed = FetchRecord(
        ids[user_ids[1]], V, started_at=T0, due_at=T0, code=500, error="upstream error (500)"
    )
    await store.record_fetches([failed])
    slots = {
        (ids[u], V): Slot(f"{u}/v", ids[u], Creator(u), V, timedelta(hours=1), T0 + timedelta(9))
        for u in user_ids[:3]  # this instance's config lacks the fourth creator
    }
    mine = cluster.Claims(others[0], "a", timedelta(minutes=5))
    now = T0 + timedelta(minutes=1)

    taken = await mine.take(
        lambda cid, v: slots.get((cid, v)), {f"{user_ids[0]}/v"}, now=now, due_before=now, limit=4
    )
    assert [s.creator_id for s in taken] == [ids[user_ids[1]], ids[user_ids[2]]]
    assert taken[0].due_at == T0 + timedelta(seconds=1)  # the database's due time, not ours
    assert (taken[0].consecutive_failures, taken[0].last_code) == (1, 500)
    owners = {r.creator_id: r.lease_owner for r in await schedule_rows(store)}
    assert owners == {
        ids[user_ids[0]]: None,  # running here already: given back
        ids[user_ids[1]]: "a",
        ids[user_ids[2]]: "a",
        ids[user_ids[3]]: None,  # not in this config: given back
    }
    assert await mine.give_back(taken[0])
    assert not await cluster.Claims(store, "b", mine.lease).give_back(taken[1])


async def test_a_creators_follower_and_note_series_are_claimed_apart_from_its_core(
    store: Store,
) -> None:
    """On a shared database each source's series is its own row: claimed, leased, moved on
    and released alone, named by its source."""
    cid = next(iter((await _seed(store, 1, T0)).values()))
    fans, notes = Variant.for_source("fans", DateType.DAY_90), Variant.for_source("notes")
    await store.schedule_new([(cid, fans, T0 + timedelta(seconds=5)), (cid, notes, T0)])
    now, until = T0 + timedelta(minutes=1), T0 + timedelta(minutes=5)

    taken = await store.claim_due(owner="a", now=now, until=until, due_before=now, limit=5)
    assert [c.variant for c in taken] == [V, notes, fans]  # most overdue first, then by key
    later = T0 + timedelta(hours=6)
    await store.record_fetches([FetchRecord(cid, notes, started_at=now, code=0, next_due_at=later)])
    assert await store.finish_lease(cid, notes, owner="a")
    assert not await store.finish_lease(cid, notes, owner="a")  # released once
    rows = {(r.variant.source if r.variant else ""): r for r in await store.status_rows()}
    assert rows["notes"].next_due_at == later
    assert rows["fans"].next_due_at == T0 + timedelta(seconds=5)  # untouched by the notes fetch
    assert rows["core"].last_success_at is None
