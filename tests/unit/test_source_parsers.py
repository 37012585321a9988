"""The parsers of follower history, the note list and the balance, on every stored sample body
(live captures and vendor examples) and on the shapes they must refuse without losing a body."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from monitor.errors import (
    AccountBlocked,
    ParseError,
    Retryable,
    UnknownCode,
    UnreadableAnswer,
    UpstreamError,
)
from monitor.model import DateType
from monitor.upstream.balance import parse_balance
from monitor.upstream.fans import fans_params, parse_fans
from monitor.upstream.notes import notes_params, parse_notes
from monitor.upstream.parse import parse_core_data
from monitor.upstream.sim_state import ENDPOINTS
from monitor.upstream.sources import SOURCE_PATHS, body_parser

#: ``../shared/upstream-samples`` beside the main checkout (a worktree sits one level deeper)
_ROOT = Path(__file__).resolve().parents[2]
SHARED_SAMPLES = next(
    (
        folder
        for folder in (
            _ROOT.parent / "shared" / "upstream-samples",
            _ROOT.parent.parent / "shared" / "upstream-samples",
        )
        if folder.is_dir()
    ),
    _ROOT.parent / "shared" / "upstream-samples",
)

Parser = Callable[[str], object]
PARSERS: dict[str, Parser] = {
    "core": parse_core_data,
    "fans": parse_fans,
    "notes": parse_notes,
    "balance": parse_balance,
}
#: every sample body -> (the parser it belongs to, what it must become); "error" bodies must
#: raise the same error through every parser
SAMPLES: dict[str, str] = {
    "core_data_success_30d.json": "core",
    "core_data_success_no_price.json": "core",
    "fans_history_success_30d.json": "fans",
    "fans_history_vendor_example.json": "fans",
    "notes_detail_success_page1.json": "notes",
    "notes_detail_vendor_example.json": "notes",
    "balance_vendor_doc_example.json": "balance",
    # the follower summary is another endpoint: read as follower history, its paid answer is
    # kept whole, never mistaken for an empty history
    "fans_summary_success.json": "unreadable by fans",
    "error_301.json": "error",
    "error_500.json": "error",
    "gateway_400.json": "error",
}


def _text(data_dir: Path, name: str) -> str:
    return (data_dir / name).read_text(encoding="utf-8")


# --------------------------------------------------------------------------- every sample


def test_every_sample_has_an_expectation(data_dir: Path) -> None:
    assert sorted(p.name for p in data_dir.glob("*.json")) == sorted(SAMPLES)


@pytest.mark.skipif(not SHARED_SAMPLES.is_dir(), reason="the shared sample folder is not here")
def test_the_copies_are_the_shared_samples_byte_for_byte(data_dir: Path) -> None:
    shared = sorted(SHARED_SAMPLES.glob("*.json"))
    assert shared, "no shared sample"
    for sample in shared:
        assert (data_dir / sample.name).read_bytes() == sample.read_bytes(), sample.name


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_every_sample_body_parses_as_its_source(data_dir: Path, name: str) -> None:
    text, expected = _text(data_dir, name), SAMPLES[name]
    if expected in PARSERS:
        result: Any = PARSERS[expected](text)
        assert result.raw_body == text
        assert (result.code, result.billed) == (0, True)
        for source, parse in PARSERS.items():
            if source != expected and source != "core":
                # a body of one source is never read as another's data
                with pytest.raises(ParseError):
                    parse(text)
    elif expected == "unreadable by fans":
        with pytest.raises(UnreadableAnswer) as info:
            parse_fans(text, http_status=200, latency_ms=9)
        assert info.value.raw_body == text
        assert (info.value.source, info.value.code, info.value.billed) == ("fans", 0, True)
    else:
        status = 400 if name.startswith("gateway") else 200
        seen = set()
        for parse in PARSERS.values():
            with pytest.raises(Retryable) as info:
                parse(text) if status == 200 else _with_status(parse, text, status)
            assert not isinstance(info.value, ParseError)
            assert info.value.billed is False
            seen.add((type(info.value), info.value.code, info.value.message))
        assert len(seen) == 1  # one envelope mapping for every endpoint


def _with_status(parse: Parser, text: str, status: int) -> object:
    return parse(text, http_status=status)  # type: ignore[call-arg]


def test_live_follower_history(data_dir: Path) -> None:
    answer = parse_fans(
        _text(data_dir, "fans_history_success_30d.json"), http_status=200, latency_ms=40
    )
    points = answer.data.points

    assert len(points) == 30
    assert (points[0].date_key, points[0].fans) == (date(2025, 11, 11), 466467)
    assert (points[-1].date_key, points[-1].fans) == (date(2025, 12, 10), 468708)
    assert [p.date_key for p in points] == sorted(p.date_key for p in points)
    # the derivable totals agree with the counts we keep
    body = json.loads(answer.raw_body)["data"]
    assert points[-1].fans - points[0].fans == body["fansNumInc"]
    assert answer.data.record_time == datetime(2025, 12, 11, 2, 8, 48, 592165, tzinfo=UTC)
    assert (answer.http_status, answer.latency_ms) == (200, 40)


def test_vendor_follower_history_without_record_time(data_dir: Path) -> None:
    answer = parse_fans(_text(data_dir, "fans_history_vendor_example.json"))

    assert [p.fans for p in answer.data.points][:3] == [99743, 99786, 99823]
    assert answer.data.points[-1].date_key == date(2026, 3, 8)
    assert answer.data.record_time is None


def test_live_note_page(data_dir: Path) -> None:
    answer = parse_notes(_text(data_dir, "notes_detail_success_page1.json"), page=1)
    page = answer.data

    assert (page.page, page.total, len(page.notes)) == (1, 58, 8)
    first = page.notes[0]
    assert first.note.note_id == "692d91eb000000001e037005"
    assert first.note.title == "这时候三千多买二手iphone16还划算吗？"
    assert first.note.published == date(2025, 12, 1)
    assert (first.note.video, first.note.ad, first.note.brand) == (False, False, None)
    assert (first.stats.reads, first.stats.likes, first.stats.collects) == (50, 6, 4)
    assert first.note.url == "https://www.xiaohongshu.com/explore/692d91eb000000001e037005"
    # newest first, as the upstream sends them
    days = [n.note.published for n in page.notes]
    assert days == sorted(days, reverse=True)
    # a brand note that the platform does not mark as an ad is still a cooperation
    branded = page.notes[2].note
    assert (branded.brand, branded.ad, branded.cooperation) == (
        "Lina和Bill的眼镜丹阳店",
        False,
        True,
    )
    assert not first.note.cooperation
    assert page.record_time == datetime(2025, 12, 9, 8, 27, 10, 16877, tzinfo=UTC)


def test_vendor_note_page_of_videos(data_dir: Path) -> None:
    page = parse_notes(_text(data_dir, "notes_detail_vendor_example.json"), page=3).data

    assert (page.page, page.total, len(page.notes)) == (3, 72, 8)
    assert all(n.note.video for n in page.notes)
    assert page.notes[1].stats.reads == 131324


def test_vendor_balance(data_dir: Path) -> None:
    answer = parse_balance(_text(data_dir, "balance_vendor_doc_example.json"))

    assert answer.data.amount == Decimal("100.0000")
    assert isinstance(answer.data.amount, Decimal)
    assert answer.data.currency == "CNY"
    assert answer.data.record_time is None


# --------------------------------------------------------------------------- queries


def test_queries_name_the_documented_parameters() -> None:
    assert fans_params("5c3bf7f7000000000602fd63", DateType.DAY_90) == {
        "userId": "5c3bf7f7000000000602fd63",
        "dateType": "DAY_90",
        "increaseType": "FANS_TOTAL",
    }
    assert notes_params("5c3bf7f7000000000602fd63", 2) == {
        "userId": "5c3bf7f7000000000602fd63",
        "orderType": "LATEST",
        "noteType": "ALL",
        "advertiseSwitch": "ALL",
        "isThirdPlatform": "NO",
        "pageNumber": "2",
    }
    with pytest.raises(ValueError):
        notes_params("5c3bf7f7000000000602fd63", 0)


# --------------------------------------------------------------------------- tolerated shapes


def _envelope(data: object, **extra: object) -> str:
    return json.dumps({"code": 0, "data": data, "message": None, **extra})


def test_follower_history_tolerates_what_the_upstream_may_send() -> None:
    messy = [
        {"num": "468708", "dateKey": "2025-12-10"},  # a string holding a number
        {"num": 466467.0, "dateKey": "2025-11-11"},  # a whole float; out of order
        {"num": 466500, "dateKey": "2025-12-10"},  # a repeated day: the later one wins
    ]
    points = parse_fans(_envelope({"list": messy})).data.points

    assert [(p.date_key, p.fans) for p in points] == [
        (date(2025, 11, 11), 466467),
        (date(2025, 12, 10), 466500),
    ]
    assert parse_fans(_envelope({"list": None, "fansNumInc": 0})).data.points == ()
    assert parse_fans(_envelope({"list": []})).data.points == ()


def test_note_list_tolerates_what_the_upstream_may_send() -> None:
    note = {
        "noteId": "692D91EB000000001E037005",
        "title": "  two\nlines  ",
        "date": "2025-12-01",
        "readNum": "50",
        "likeNum": None,
        "isAdvertise": 1,
        "isVideo": "true",
        "brandName": "",
    }
    page = parse_notes(_envelope({"list": [note, note], "total": 1})).data

    assert len(page.notes) == 1  # a repeat is listed once
    listed = page.notes[0]
    assert listed.note.note_id == "692d91eb000000001e037005"
    assert listed.note.title == "two lines"
    assert (listed.note.ad, listed.note.video, listed.note.brand) == (True, True, None)
    assert (listed.stats.reads, listed.stats.likes, listed.stats.collects) == (50, None, None)
    empty = parse_notes(_envelope({"list": [], "total": 0})).data
    assert (empty.notes, empty.total) == ((), 0)
    # a note can be years old: only the future bounds a publishing day
    old = dict(note, date="2016-03-01")
    assert parse_notes(_envelope({"list": [old]}), today=date(2025, 12, 11)).data.notes


@pytest.mark.parametrize(
    ("value", "amount"),
    [("100.0000", "100.0000"), ("0.0000", "0"), (12.34, "12.34"), (7, "7"), ("-3.5", "-3.5")],
)
def test_balance_amounts_are_exact(value: object, amount: str) -> None:
    data = parse_balance(_envelope({"balance": value})).data

    assert data.amount == Decimal(amount)
    assert data.currency == "CNY"


# --------------------------------------------------------------------------- refused shapes


UNREADABLE: list[tuple[Callable[..., object], str, object]] = [
    (parse_fans, "fans", None),
    (parse_fans, "fans", {"fansNumInc": 3}),
    (parse_fans, "fans", {"list": {"num": 1}}),
    (parse_fans, "fans", {"list": [{"num": 1}]}),
    (parse_fans, "fans", {"list": [{"num": -1, "dateKey": "2025-12-10"}]}),
    (parse_fans, "fans", {"list": [{"num": 1.5, "dateKey": "2025-12-10"}]}),
    (parse_fans, "fans", {"list": [{"num": "many", "dateKey": "2025-12-10"}]}),
    (parse_fans, "fans", {"list": [{"dateKey": "2025-12-10"}]}),
    (parse_fans, "fans", {"list": [{"num": 1, "dateKey": "2031-01-01"}]}),
    (parse_notes, "notes", None),
    (parse_notes, "notes", {"total": 3}),
    (parse_notes, "notes", {"list": [{"noteId": "../../etc", "date": "2025-12-01"}]}),
    (parse_notes, "notes", {"list": [{"noteId": "692d91eb000000001e037005"}]}),
    (
        parse_notes,
        "notes",
        {"list": [{"noteId": "692d91eb000000001e037005", "date": "2025-12-01", "isVideo": 2}]},
    ),
    (
        parse_notes,
        "notes",
        {"list": [{"noteId": "692d91eb000000001e037005", "date": "2025-12-01", "readNum": "x"}]},
    ),
    (parse_notes, "notes", {"list": [], "total": -1}),
    (parse_balance, "balance", None),
    (parse_balance, "balance", {"balance": "lots"}),
    (parse_balance, "balance", {"balance": None}),
    (parse_balance, "balance", {"balance": True}),
    (parse_balance, "balance", {"balance": "NaN"}),
    (parse_balance, "balance", {"balance": "1e30"}),
    (parse_balance, "balance", {"balance": "1.00", "currency": "元元"}),
]


@pytest.mark.parametrize(("parse", "source", "data"), UNREADABLE)
def test_a_paid_answer_we_cannot_read_is_kept_whole(
    parse: Callable[..., object], source: str, data: object
) -> None:
    body = _envelope(data, recordTime="2025-12-11T10:08:48.592165968")
    kwargs: dict[str, Any] = {"http_status": 200, "latency_ms": 12}
    if parse is not parse_balance:
        kwargs["today"] = date(2025, 12, 11)

    with pytest.raises(UnreadableAnswer) as info:
        parse(body, **kwargs)

    exc = info.value
    assert isinstance(exc, ParseError)  # every ParseError handler keeps it and counts it billed
    assert exc.raw_body == body  # whole, not cut like an error body
    assert (exc.source, exc.code, exc.billed, exc.http_status, exc.latency_ms) == (
        source,
        0,
        True,
        200,
        12,
    )
    assert str(exc).startswith("unreadable ")
    assert "\n" not in str(exc)


def test_a_long_unreadable_body_is_not_cut() -> None:
    body = _envelope({"list": "x" * 50_000})
    with pytest.raises(UnreadableAnswer) as info:
        parse_notes(body)
    assert info.value.raw_body == body


@pytest.mark.parametrize("parse", [parse_fans, parse_notes, parse_balance])
@pytest.mark.parametrize(
    ("body", "family", "code"),
    [
        (
            '{"code": 601, "data": null, "message": "INSUFFICIENT", "recordTime": null}',
            AccountBlocked,
            601,
        ),
        (
            '{"code": 404, "data": null, "message": "NOT FOUND", "recordTime": null}',
            UnknownCode,
            404,
        ),
        ("<html>502</html>", Retryable, None),
        ("", Retryable, None),
        ('{"code": "0", "data": {}}', Retryable, None),
    ],
)
def test_the_envelope_is_core_datas(
    parse: Callable[..., object], body: str, family: type[UpstreamError], code: int | None
) -> None:
    with pytest.raises(UpstreamError) as info:
        parse(body)
    assert type(info.value) is family
    assert info.value.code == code
    with pytest.raises(UpstreamError) as core_info:
        parse_core_data(body)
    core = core_info.value
    assert (type(core), core.message, core.raw_body) == (
        type(info.value),
        info.value.message,
        info.value.raw_body,
    )


# --------------------------------------------------------------------------- reading kept bodies


@pytest.mark.parametrize(
    ("name", "source", "params"),
    [
        ("core_data_success_30d.json", "core", {}),
        ("fans_history_success_30d.json", "fans", {"dateType": "DAY_30"}),
        ("notes_detail_success_page1.json", "notes", {"pageNumber": "3"}),
        ("balance_vendor_doc_example.json", "balance", {}),
    ],
)
def test_a_kept_body_is_read_again_by_its_source_and_query(
    data_dir: Path, name: str, source: str, params: dict[str, str]
) -> None:
    text = _text(data_dir, name)

    answer: Any = body_parser(source, params)(text, http_status=200, latency_ms=5, today=None)

    assert answer.raw_body == text
    if source == "notes":
        assert answer.data.page == 3
    # the day it was fetched bounds the data dates, not the day it is read again
    if source in ("core", "fans"):
        with pytest.raises(ParseError):
            body_parser(source, params)(text, today=date(2027, 1, 1))
        body_parser(source, params)(text, today=date(2025, 12, 11))


def test_an_unknown_source_is_refused() -> None:
    assert set(SOURCE_PATHS) == {"core", "fans", "notes", "balance"}
    # the simulator keeps its own copy of the paths, so a typo in either shows here
    assert dict(SOURCE_PATHS) == ENDPOINTS
    with pytest.raises(ValueError, match="unknown source"):
        body_parser("profile")
