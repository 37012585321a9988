"""Owed rules in the spill file (service.fetching.spill, spill_line): a series whose answer was
stored but whose rules the database refused is a line of its own, read by the next start's
replay and removed once those rules ran; files of answers only read as before, a torn last
line is set aside as before, and a spill file that cannot be written keeps them in memory."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from support.sim import creator_id

from monitor.errors import StoreError
from monitor.model import Creator, Variant
from monitor.service.fetching.spill import Spill
from monitor.service.fetching.spill_line import (
    OwedSeries,
    decode,
    decode_owed,
    encode,
    encode_owed,
    is_owed,
)
from monitor.store import FetchRecord, Store, migrate

T0 = datetime(2025, 12, 11, 2, 0, tzinfo=UTC)
FANS = Variant.for_source("fans")


def _answer(creator: int, n: int) -> FetchRecord:
    return FetchRecord(
        creator,
        Variant(),
        T0 + timedelta(minutes=n),
        http_status=200,
        code=0,
        billed=False,
        error="x",
        attempt_id=f"{n:032x}",
    )


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def test_an_owed_series_survives_its_line_and_is_told_from_an_answer() -> None:
    for variant in (Variant(), FANS, Variant.for_source("notes")):
        owed = OwedSeries(7, variant, "00ff")
        line = encode_owed(owed)
        assert decode_owed(line) == owed
        assert is_owed(line)
        assert is_owed(line.encode() + b"\n")
    answer = encode(_answer(7, 0))
    assert not is_owed(answer)
    assert decode(answer) == _answer(7, 0)
    with pytest.raises(ValueError, match="not an owed-rules line"):
        decode_owed(answer)
    with pytest.raises(KeyError):  # an owed line is no answer
        decode(encode_owed(OwedSeries(7, FANS, "00ff")))


async def test_owed_rules_outlive_the_process_and_leave_once_they_ran(
    db_url: str, tmp_path: Path
) -> None:
    await migrate.upgrade(db_url)
    path = tmp_path / "pending.jsonl"
    first = Spill(path)
    first.owe(1, Variant())
    first.owe(2, FANS)
    # owed rules stop no call: only held answers and a failed write do
    assert (first.waiting, first.held, first.owes) == (False, 0, True)
    assert [decode_owed(line).creator_id for line in _lines(path)] == [1, 2]

    # a SIGKILL: the next process reads them at its start's replay, stores nothing for them
    second = Spill(path)
    assert (second.waiting, second.owes) == (False, True)
    async with Store.open(db_url, clock=lambda: T0) as store:
        assert await second.replay(store) == []
    owed = second.take_owed()
    assert [(o.creator_id, o.variant) for o in owed] == [(1, Variant()), (2, FANS)]
    assert second.take_owed() == []  # handed out once
    assert len(_lines(path)) == 2  # on file until the rules ran
    second.rules_ran()
    assert not path.exists()
    assert not second.owes


async def test_a_replay_stores_the_answers_and_keeps_only_the_owed_rules(
    db_url: str, tmp_path: Path
) -> None:
    await migrate.upgrade(db_url)
    path = tmp_path / "pending.jsonl"
    async with Store.open(db_url, clock=lambda: T0) as store:
        ids = await store.sync_creators([Creator(creator_id(1)), Creator(creator_id(2))])
        one, two = ids[creator_id(1)], ids[creator_id(2)]
        spill = Spill(path)
        spill.keep(_answer(one, 0), StoreError("database x: database is locked"))
        spill.owe(two, Variant())
        spill.keep(_answer(one, 1))
        assert spill.held == 2
        stored = await Spill(path).replay(store)  # the next start
        assert [r.attempt_id for r in stored] == [f"{0:032x}", f"{1:032x}"]
        (line,) = _lines(path)
        assert decode_owed(line).creator_id == two
        again = Spill(path)
        assert (again.waiting, again.owes) == (False, True)
        assert await again.replay(store) == []  # nothing stored twice
    assert [o.creator_id for o in again.take_owed()] == [two]


async def test_a_file_of_answers_only_reads_as_before_and_a_torn_line_is_set_aside(
    db_url: str, tmp_path: Path
) -> None:
    await migrate.upgrade(db_url)
    path = tmp_path / "pending.jsonl"
    async with Store.open(db_url, clock=lambda: T0) as store:
        ids = await store.sync_creators([Creator(creator_id(1))])
        one = ids[creator_id(1)]
        # an earlier version's file: answer lines only
        path.write_text(encode(_answer(one, 0)) + "\n", encoding="utf-8")
        old = Spill(path)
        assert (old.waiting, old.held, old.owes) == (True, 1, False)
        assert len(await old.replay(store)) == 1
        assert old.take_owed() == []
        assert not path.exists()
        # power lost half-way through the last owed line: the whole ones are read
        whole = encode_owed(OwedSeries(one, Variant(), "aa"))
        torn = encode_owed(OwedSeries(one, FANS, "bb"))[:25]
        path.write_text(whole + "\n" + torn, encoding="utf-8")
        spill = Spill(path)
        assert await spill.replay(store) == []
        assert [o.owed_id for o in spill.take_owed()] == ["aa"]
    assert (tmp_path / "pending.jsonl.rejected").read_text(encoding="utf-8") == torn + "\n"
    assert _lines(path) == [whole]
    spill.rules_ran()
    assert not path.exists()


async def test_another_process_owed_line_stays_when_this_one_rules_ran(
    db_url: str, tmp_path: Path
) -> None:
    await migrate.upgrade(db_url)
    path = tmp_path / "pending.jsonl"
    mine = Spill(path)
    mine.owe(1, Variant())
    Spill(path).owe(2, Variant())  # another process, after
    mine.rules_ran()
    (line,) = _lines(path)
    assert decode_owed(line).creator_id == 2


def test_owed_rules_the_file_refuses_stay_in_memory_and_the_log_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("", encoding="utf-8")
    spill = Spill(blocker / "pending.jsonl")  # its folder cannot be made
    with caplog.at_level(logging.WARNING, logger="monitor.service.fetching.spill"):
        spill.owe(1, Variant())
        spill.owe(2, Variant())
    said = [r.getMessage() for r in caplog.records if "owed rules" in r.getMessage()]
    assert len(said) == 1  # once per fault
    assert "memory only" in said[0]
    assert spill.owed_where().startswith("memory only")
    assert not spill.owes
    spill.rules_ran()  # they ran: nothing is left to keep
    assert spill.owed_where() == str(blocker / "pending.jsonl")
    assert Spill(None).owed_where() == "memory only (no spill file)"
