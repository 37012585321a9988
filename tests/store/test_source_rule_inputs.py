"""A creator's rule inputs from the follower and note sources, on both backends: the follower
counts and the notes asked for come in the one read with the rest, as ``follower_series`` and
``latest_notes`` give them; nothing is read that was not asked for; of a note's alerts only the
open ones and those of the notes loaded come back; and ``note_history`` for ``rules test``."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from sqlalchemy import event
from support.store import CREATORS, T0

from monitor.model import (
    AlertState,
    FollowerPoint,
    ListedNote,
    Note,
    NoteStats,
    NotesWanted,
    Phase,
    Severity,
    Variant,
    note_variant,
)
from monitor.store import Store

FANS = Variant.for_source("fans")
DAY = timedelta(days=1)


def _statements(store: Store) -> list[str]:
    seen: list[str] = []

    @event.listens_for(store._engine.sync_engine, "before_cursor_execute")
    def _on(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().upper().startswith(("SELECT", "WITH")):
            seen.append(statement)

    return seen


def _listed(n: int, published: date) -> ListedNote:
    return ListedNote(Note(f"{n:024x}", f"n{n}", published, False, False), NoteStats(reads=n))


def _told(scope: str, creator_id: int, n: int, state: Phase) -> AlertState:
    return AlertState(
        rule="new",
        scope=scope,
        severity=Severity.INFO,
        state=state,
        creator_id=creator_id,
        variant=note_variant(f"{n:024x}"),
        fired_at=T0,
        resolved_at=T0 if state is Phase.RESOLVED else None,
        firing_sent=True,
    )


async def test_followers_and_notes_come_in_the_one_read_when_asked(store: Store) -> None:
    ids = await store.sync_creators(CREATORS)
    cid, scope = ids[CREATORS[0].user_id], CREATORS[0].user_id
    start = date(2025, 11, 1)
    await store.store_followers(cid, [FollowerPoint(start + i * DAY, 1000 + i) for i in range(40)])
    await store.store_notes(cid, [_listed(1, date(2025, 10, 1))], T0 - 30 * DAY)  # the baseline
    await store.store_notes(cid, [_listed(2, date(2025, 11, 20))], T0 - 20 * DAY)
    await store.store_notes(
        cid, [_listed(3, date(2025, 12, 10)), _listed(2, date(2025, 11, 20))], T0
    )
    for n, state in ((1, Phase.RESOLVED), (2, Phase.RESOLVED), (3, Phase.FIRING)):
        assert await store.commit_transition(_told(scope, cid, n, state), [], now=T0, expect=None)

    statements = _statements(store)
    since = date(2025, 11, 20)
    wanted = NotesWanted(seen_since=T0 - DAY, published_since=date(2025, 11, 15))
    inputs = await store.rule_inputs(cid, scope, [FANS], since, ["new"], notes_wanted=wanted)
    # followers, notes, their observations, alerts: no core_data points were asked for
    assert len(statements) == 4
    assert inputs.series == {FANS: tuple(await store.follower_series(cid, since=since))}
    assert [r.note.note_id for r in inputs.notes] == [f"{3:024x}", f"{2:024x}"]
    latest = {r.note.note_id: r for r in await store.latest_notes(cid)}
    assert list(inputs.notes) == [latest[r.note.note_id] for r in inputs.notes]
    assert inputs.notes_since == T0 - 30 * DAY
    # the alerts of the notes loaded (told or open), not those of older notes
    assert sorted(v for _, v in inputs.alerts) == [note_variant(f"{n:024x}") for n in (2, 3)]

    statements.clear()
    bare = await store.rule_inputs(cid, scope, [], since, ["new"])
    assert (bare.series, bare.notes, bare.notes_since) == ({}, (), None)
    assert len(statements) == 1  # the alerts alone
    # an open alert is always read, its note loaded or not
    assert list(bare.alerts) == [("new", note_variant(f"{3:024x}"))]


async def test_note_history_gives_every_note_and_the_observations_asked_for(
    store: Store,
) -> None:
    ids = await store.sync_creators(CREATORS)
    cid = ids[CREATORS[1].user_id]
    assert (await store.note_history(cid, None)).baseline_at is None
    await store.store_notes(cid, [_listed(1, date(2025, 12, 1))], T0 - 2 * DAY)
    await store.store_notes(
        cid, [_listed(2, date(2025, 12, 10)), _listed(1, date(2025, 12, 1))], T0
    )
    history = await store.note_history(cid, T0 - DAY)
    assert history.baseline_at == T0 - 2 * DAY
    assert set(history.notes) == {f"{1:024x}", f"{2:024x}"}
    assert history.notes[f"{2:024x}"][1] == T0
    assert [(n, o.seen_at) for n, o in history.observations] == [
        (f"{1:024x}", T0),
        (f"{2:024x}", T0),
    ]
