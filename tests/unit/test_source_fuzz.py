"""Bad input for the follower-history, note-list and balance parsers: hypothesis builds bodies
shaped like theirs with hostile values. Every outcome is a typed answer or a clean
``UpstreamError``; a code 0 body that cannot be read is an ``UnreadableAnswer`` holding it whole.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitor.errors import UnreadableAnswer, UpstreamError
from monitor.model import Answer, Balance, FollowerHistory, NotePage
from monitor.upstream.balance import parse_balance
from monitor.upstream.fans import parse_fans
from monitor.upstream.notes import parse_notes

pytestmark = pytest.mark.drills

EXAMPLES = int(os.environ.get("CM_FUZZ_EXAMPLES", "150"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=timedelta(milliseconds=750),
    suppress_health_check=[HealthCheck.too_slow],
)
TODAY = date(2025, 12, 11)

numbers = st.one_of(
    st.integers(min_value=-5, max_value=10**6),
    st.integers(min_value=2**62, max_value=2**66),
    st.floats(allow_nan=False, allow_infinity=False, min_value=-1.0, max_value=1e308),
    st.sampled_from(["", "12", "-3", "4.5", "1e400", "nan", "abc", " 7 ", "9" * 30]),
    st.none(),
    st.booleans(),
    st.lists(st.integers(), max_size=2),
)
days = st.one_of(
    st.dates(min_value=date(2010, 1, 1), max_value=date(2030, 12, 31)).map(date.isoformat),
    st.sampled_from(["2025-02-30", "20251201", "", "2025-12-1"]),
    st.none(),
    st.integers(),
)
note_ids = st.one_of(
    st.text(alphabet="0123456789abcdefABCDEF", min_size=24, max_size=24),
    st.text(max_size=30),
    st.none(),
    st.integers(),
)
flags = st.one_of(st.booleans(), st.none(), st.integers(-1, 2), st.sampled_from(["true", "no"]))
texts = st.one_of(st.text(max_size=40), st.none(), st.integers())


def _maybe(draw: st.DrawFn, mapping: dict[str, Any]) -> dict[str, Any]:
    """Some keys dropped, as a changed upstream might."""
    return {key: value for key, value in mapping.items() if draw(st.integers(0, 9))}


@st.composite
def fans_bodies(draw: st.DrawFn) -> str:
    items = draw(
        st.lists(
            st.fixed_dictionaries({"num": numbers, "dateKey": days}).map(
                lambda item: _maybe(draw, item)
            ),
            max_size=6,
        )
    )
    data = draw(st.sampled_from([{"list": items}, {"list": None}, {}, None, {"list": "x"}]))
    return json.dumps({"code": 0, "data": data, "message": None})


@st.composite
def notes_bodies(draw: st.DrawFn) -> str:
    note = st.fixed_dictionaries(
        {
            "noteId": note_ids,
            "title": texts,
            "date": days,
            "readNum": numbers,
            "likeNum": numbers,
            "collectNum": numbers,
            "isAdvertise": flags,
            "isVideo": flags,
            "brandName": texts,
        }
    ).map(lambda item: _maybe(draw, item))
    items = draw(st.lists(note, max_size=4))
    data = {"list": items, "total": draw(numbers)}
    return json.dumps({"code": 0, "data": _maybe(draw, data), "message": None})


@st.composite
def balance_bodies(draw: st.DrawFn) -> str:
    data = {
        "balance": draw(st.one_of(numbers, st.decimals(allow_nan=True).map(str))),
        "currency": draw(st.one_of(st.sampled_from(["CNY", "cny", "USD"]), texts)),
    }
    return json.dumps({"code": 0, "data": _maybe(draw, data), "message": None})


def _check(parse: Callable[[str], Answer[Any]], body: str, cut: int) -> Answer[Any] | None:
    text = body[: len(body) * cut // 4] if cut else body
    try:
        answer = parse(text)
    except UpstreamError as exc:
        _check_failure(exc, text, cut=cut)
        return None
    assert answer.raw_body == text
    return answer


def _check_failure(exc: UpstreamError, text: str, *, cut: int) -> None:
    assert exc.message
    assert "\n" not in str(exc)
    if isinstance(exc, UnreadableAnswer):
        assert exc.raw_body == text  # kept whole
        assert (exc.code, exc.billed) == (0, True)
    else:
        assert cut, "a whole code-0 body is read or unreadable, never another error"


@FUZZ
@given(fans_bodies(), st.integers(0, 3))
def test_follower_bodies_parse_or_are_kept(body: str, cut: int) -> None:
    answer = _check(lambda text: parse_fans(text, today=TODAY), body, cut)
    if answer is not None:
        history: FollowerHistory = answer.data
        keys = [p.date_key for p in history.points]
        assert keys == sorted(set(keys))
        assert all(isinstance(p.fans, int) and 0 <= p.fans < 2**63 for p in history.points)
        assert all(k <= TODAY + timedelta(days=2) for k in keys)


@FUZZ
@given(notes_bodies(), st.integers(0, 3))
def test_note_bodies_parse_or_are_kept(body: str, cut: int) -> None:
    answer = _check(lambda text: parse_notes(text, today=TODAY), body, cut)
    if answer is not None:
        page: NotePage = answer.data
        ids = [n.note.note_id for n in page.notes]
        assert len(ids) == len(set(ids))
        for listed in page.notes:
            assert re.fullmatch(r"[0-9a-f]{24}", listed.note.note_id)
            assert "\n" not in listed.note.title
            assert listed.note.published <= TODAY + timedelta(days=2)
            for count in (listed.stats.reads, listed.stats.likes, listed.stats.collects):
                assert count is None or (isinstance(count, int) and count >= 0)


@FUZZ
@given(balance_bodies(), st.integers(0, 3))
def test_balance_bodies_parse_or_are_kept(body: str, cut: int) -> None:
    answer = _check(parse_balance, body, cut)
    if answer is not None:
        balance: Balance = answer.data
        assert isinstance(balance.amount, Decimal)
        assert balance.amount.is_finite()
        assert re.fullmatch(r"[A-Z]{3}", balance.currency)
