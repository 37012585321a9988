"""Drill 4 at the daemon level, short form: the running daemon's database fills up, turns
read-only or is locked by another writer; nothing committed is lost, the outbox survives and
drains once, and fetching resumes when the fault clears. Each fault runs once per session."""

from __future__ import annotations

import pytest

from drills.daemon_storage import FAULTS, DrillOutcome, daemon_storage_drill
from drills.storage import can_make_read_only
from drills.tally import Tally

pytestmark = pytest.mark.drills


_RUNS: dict[str, tuple[Tally, DrillOutcome]] = {}


async def _run(
    kind: str, factory: pytest.TempPathFactory, token: str
) -> tuple[Tally, DrillOutcome]:
    if kind == "read_only" and not can_make_read_only():
        pytest.skip("root without chattr cannot make a file read-only")
    if kind not in _RUNS:
        _RUNS[kind] = await daemon_storage_drill(factory.mktemp(kind), token, kind)
    return _RUNS[kind]


@pytest.mark.parametrize("kind", FAULTS)
async def test_the_daemon_loses_nothing_and_recovers(
    kind: str, tmp_path_factory: pytest.TempPathFactory, token: str
) -> None:
    tally, outcome = await _run(kind, tmp_path_factory, token)
    assert tally.faults == 1
    assert tally.rows_checked > 100
    assert (tally.lost, tally.duplicates, tally.budget_breaches, tally.leaks) == (0, 0, 0, 0), (
        tally.notes
    )
    # the refusal is said in plain words, one line each, naming the database
    assert outcome.errors
    assert all("\n" not in e and "database" in e for e in outcome.errors)
    assert [n for n in tally.notes if "upstream calls" not in n] == []


@pytest.mark.parametrize("kind", ["read_only", "locked"])
async def test_a_store_that_refuses_the_ledger_sends_no_call(
    kind: str, tmp_path_factory: pytest.TempPathFactory, token: str
) -> None:
    # the gate reserves the call in the ledger before it goes: no ledger, no call
    _tally, outcome = await _run(kind, tmp_path_factory, token)
    assert outcome.calls_during == []


async def test_a_full_disk_does_not_refetch_a_series_it_cannot_store(
    tmp_path_factory: pytest.TempPathFactory, token: str
) -> None:
    _tally, outcome = await _run("disk_full", tmp_path_factory, token)
    # calls may go while the ledger's small writes still fit; but once an answer is refused
    # (maybe one already on the wire when the disk filled, so none goes during the fault) it
    # is held and no call goes. Either way the refusal was said, and no series was bought
    # twice while its answer could not be stored
    assert outcome.errors
    assert outcome.most_calls_per_series() <= 1


async def test_a_read_only_store_is_logged_once_not_per_tick(
    tmp_path_factory: pytest.TempPathFactory, token: str
) -> None:
    _tally, outcome = await _run("read_only", tmp_path_factory, token)
    assert 1 <= len(outcome.errors) <= 5
