"""The config keys of the newer sources: ``sources`` (defaults, per creator, roster column),
``every_source``, ``notes_pages``, ``[account] balance_every``, and the rule kinds ``new_note``,
``note``, ``balance`` and ``metric = "fans"``. Each bad value is one line naming its key."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from monitor.config import (
    AnomalyRule,
    BalanceRule,
    ChangeRule,
    Config,
    ConfigError,
    NewNoteRule,
    NoteRule,
    ThresholdRule,
    load_config,
    parse_config,
)
from monitor.model import Creator, DailyPoint, Variant, Verdict
from monitor.policy.rules import Subject, evaluate
from monitor.validation import problems_of

ROOT = Path(__file__).parent.parent.parent
UID = "5c3bf7f7000000000602fd63"
UID2 = "5a1b2c3d4e5f60718293a4b5"
HOUR = timedelta(hours=1)


def _lines(document: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(document)
    return [str(problem) for problem in problems_of(caught.value)]


def test_an_existing_config_loads_as_before_with_core_only() -> None:
    for config in (parse_config({}), load_config(ROOT / "config.example.toml")):
        assert config.defaults.sources == ("core",)
        assert config.defaults.every_source is None
        assert config.defaults.notes_pages == 2
        assert config.account.balance_every == HOUR
        for creator in config.creators:
            assert config.sources_of(creator) == ("core",)
            for source in ("core", "fans", "notes"):
                assert config.every_source_of(creator, source) == config.every_of(creator)


def test_sources_in_defaults_and_per_creator() -> None:
    config = parse_config(
        {
            "defaults": {"sources": ["core", "fans", "notes"], "notes_pages": 5},
            "creators": [{"user_id": UID}, {"user_id": UID2, "sources": ["fans"]}],
        }
    )
    first, second = config.creators
    assert config.sources_of(first) == ("core", "fans", "notes")
    assert config.sources_of(second) == ("fans",)
    assert config.defaults.notes_pages == 5


@pytest.mark.parametrize(
    ("value", "line"),
    [
        (["fan"], "defaults.sources: unknown source 'fan'; did you mean 'fans'?"),
        (["core", "core"], "defaults.sources: source 'core' is listed twice"),
        ([], 'defaults.sources: must name at least one source, e.g. ["core"]'),
        ("core", 'defaults.sources: expected an array, e.g. ["a", "b"], got "core"'),
        (["core", 3], "defaults.sources[1]: expected 'core', 'fans' or 'notes', got 3"),
    ],
)
def test_bad_sources_are_one_line_each(value: object, line: str) -> None:
    assert _lines({"defaults": {"sources": value}}) == [line]


def test_a_creators_bad_sources_name_the_creator() -> None:
    lines = _lines({"creators": [{"user_id": UID, "sources": ["core", "note"]}]})
    assert lines == ["creators[0].sources: unknown source 'note'; did you mean 'notes'?"]


def test_every_source_overrides_every_at_its_level() -> None:
    config = parse_config(
        {
            "defaults": {"every": "12h", "every_source": {"fans": "24h", "notes": "6h"}},
            "creators": [
                {"user_id": UID},
                {"user_id": UID2, "every": "2h", "every_source": {"notes": "1h"}},
            ],
        }
    )
    plain, own = config.creators
    assert config.every_source_of(plain, "core") == timedelta(hours=12)
    assert config.every_source_of(plain, "fans") == timedelta(hours=24)
    assert config.every_source_of(plain, "notes") == timedelta(hours=6)
    # the creator's own settings first: its every_source, then its every
    assert config.every_source_of(own, "notes") == HOUR
    assert config.every_source_of(own, "fans") == timedelta(hours=2)
    assert config.every_source_of(own, "core") == timedelta(hours=2)
    assert config.every_of(own) == timedelta(hours=2)  # core's cadence as before


@pytest.mark.parametrize(
    ("every_source", "line"),
    [
        ({"follower": "1h"},
         "defaults.every_source.follower: unknown key; known: core, fans, notes"),
        ({"fans": "soon"}, "defaults.every_source.fans: bad duration 'soon'; use a number with s, "
         "m, h, d or w, e.g. '15m'"),
        ({"notes": "400d"}, "defaults.every_source.notes: duration '400d' is too long; at most "
         "365d"),
        ("6h", "defaults.every_source: expected a table (a [section] or { key = value }), got "
         '"6h"'),
    ],
)  # fmt: skip
def test_bad_every_source(every_source: object, line: str) -> None:
    assert _lines({"defaults": {"every_source": every_source}}) == [line]


@pytest.mark.parametrize(
    ("value", "line"),
    [
        (0, "defaults.notes_pages: must be at least 1, got 0"),
        (51, "defaults.notes_pages: must be at most 50, got 51"),
        ("2", 'defaults.notes_pages: expected a whole number (no quotes), got "2"'),
    ],
)
def test_bad_notes_pages(value: object, line: str) -> None:
    assert _lines({"defaults": {"notes_pages": value}}) == [line]


def test_balance_every_takes_a_duration_or_off() -> None:
    assert parse_config({"account": {"balance_every": "15m"}}).account.balance_every == (
        timedelta(minutes=15)
    )
    assert parse_config({"account": {"balance_every": "off"}}).account.balance_every is None


@pytest.mark.parametrize(
    ("value", "line"),
    [
        ("30s", 'account.balance_every: must be at least 1m, or "off"'),
        ("8d", "account.balance_every: duration '8d' is too long; at most 7d"),
        (5, 'account.balance_every: expected a duration like "1h", or "off", got 5'),
        ("never", "account.balance_every: bad duration 'never'; use a number with s, m, h, d or "
         "w, e.g. '15m'"),
    ],
)  # fmt: skip
def test_bad_balance_every(value: object, line: str) -> None:
    assert _lines({"account": {"balance_every": value}}) == [line]


def test_unknown_account_key() -> None:
    assert _lines({"account": {"balance": "1h"}}) == [
        "account.balance: unknown key; did you mean 'balance_every'?"
    ]


def test_roster_column_sources(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text(
        f"user_id,sources\n{UID},core;fans;notes\n{UID2},\n", encoding="utf-8"
    )
    (tmp_path / "config.toml").write_text('[roster]\nfiles = ["a.csv"]\n', encoding="utf-8")
    config = load_config(tmp_path / "config.toml")
    first, second = config.creators
    assert config.sources_of(first) == ("core", "fans", "notes")
    assert config.sources_of(second) == ("core",)  # an empty cell: the default

    (tmp_path / "a.csv").write_text(f"user_id,sources\n{UID},core;fams\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "config.toml")
    assert str(caught.value) == "a.csv:2: sources: unknown source 'fams'; did you mean 'fans'?"


def _rule(**kw: Any) -> Any:
    return parse_config({"rules": [{"name": "r", **kw}]}).rules[0]


def test_fans_is_a_metric_of_threshold_change_and_anomaly() -> None:
    assert isinstance(_rule(kind="threshold", metric="fans", op="<", value=1000), ThresholdRule)
    change = _rule(kind="change", metric="fans", baseline="7d", pct=-1)
    assert isinstance(change, ChangeRule)
    assert change.metric == "fans"
    assert isinstance(_rule(kind="anomaly", metric="fans"), AnomalyRule)
    assert _lines({"rules": [{"name": "r", "kind": "change", "metric": "fan", "pct": -1}]}) == [
        "rules[0].metric: unknown metric 'fan'; did you mean 'fans'?"
    ]


def test_new_note_rule() -> None:
    rule = _rule(kind="new_note", group_by=["rule", "creator"], tags=["tier-a"])
    assert isinstance(rule, NewNoteRule)
    assert rule.group_by == ("rule", "creator")
    assert _lines({"rules": [{"name": "r", "kind": "new_note", "metric": "reads"}]}) == [
        "rules[0].metric: unknown key; known: name, severity, channels, creators, tags, for, "
        "resolve_for, repeat, max_repeats, group_by, kind"
    ]
    assert _lines({"rules": [{"name": "r", "kind": "newnote"}]}) == [
        "rules[0].kind: unknown rule kind 'newnote'; did you mean 'new_note'?"
    ]


def test_note_rule_hit_and_flop() -> None:
    hit = _rule(kind="note", metric="reads", op=">=", value=10000, within="3d")
    assert isinstance(hit, NoteRule)
    assert (hit.within, hit.after) == (timedelta(days=3), None)
    flop = _rule(kind="note", metric="likes", op="<", value=500, after="3d")
    assert (flop.within, flop.after) == (None, timedelta(days=3))


@pytest.mark.parametrize(
    ("rule", "line"),
    [
        ({"metric": "reads", "op": ">", "value": 1},
         "rules[0]: give exactly one of 'within' (a hit while the note is younger, e.g. \"3d\") "
         "or 'after' (a flop once it is older)"),
        ({"metric": "reads", "op": ">", "value": 1, "within": "3d", "after": "3d"},
         "rules[0]: give exactly one of 'within' (a hit while the note is younger, e.g. \"3d\") "
         "or 'after' (a flop once it is older)"),
        ({"metric": "read", "op": ">", "value": 1, "within": "3d"},
         "rules[0].metric: expected 'reads', 'likes' or 'collects', got \"read\"; did you mean "
         "'reads'?"),
        ({"metric": "reads", "op": "=>", "value": 1, "within": "3d"},
         "rules[0].op: expected '<', '<=', '>', '>=', '==' or '!=', got \"=>\"; did you mean "
         "'>'?"),
        ({"metric": "reads", "op": ">", "value": -1, "within": "3d"},
         "rules[0].value: must be at least 0, got -1"),
        ({"metric": "reads", "op": ">", "within": "3d"}, "rules[0].value: required key is missing"),
        ({"metric": "reads", "op": ">", "value": 1, "within": "2y"},
         "rules[0].within: bad duration '2y'; use a number with s, m, h, d or w, e.g. '15m'"),
    ],
)  # fmt: skip
def test_bad_note_rules(rule: dict[str, Any], line: str) -> None:
    assert _lines({"rules": [{"name": "r", "kind": "note", **rule}]}) == [line]


def test_balance_rule() -> None:
    both = _rule(kind="balance", below=200, days_left=3, severity="critical")
    assert isinstance(both, BalanceRule)
    assert (both.below, both.days_left) == (200, 3)
    assert _rule(kind="balance", days_left=1.5).below is None
    assert _rule(kind="balance", below=50.5).days_left is None


@pytest.mark.parametrize(
    ("rule", "line"),
    [
        ({}, "rules[0]: give 'below' (CNY) or 'days_left' (or both)"),
        ({"below": 0}, "rules[0].below: must be greater than 0, got 0"),
        ({"days_left": -1}, "rules[0].days_left: must be greater than 0, got -1"),
        ({"below": "200"}, 'rules[0].below: expected a number (no quotes), got "200"'),
    ],
)
def test_bad_balance_rules(rule: dict[str, Any], line: str) -> None:
    assert _lines({"rules": [{"name": "r", "kind": "balance", **rule}]}) == [line]


def test_rules_of_the_new_sources_never_read_core_data() -> None:
    """A follower, note or balance rule on a core_data series decides nothing: it reads its
    own source (no crash, no firing on core data)."""
    creator = Creator(UID)
    point = DailyPoint(date_key=date(2025, 12, 10), read=100, imp=1000, engage=10)
    subject = Subject(
        creator=creator,
        variant=Variant(),
        series=(point,),
        now=datetime(2025, 12, 11, tzinfo=UTC),
    )
    rules: list[Any] = [
        _rule(kind="threshold", metric="fans", op="<", value=1e9),
        _rule(kind="change", metric="fans", pct=-1),
        _rule(kind="anomaly", metric="fans"),
        _rule(kind="new_note"),
        _rule(kind="note", metric="reads", op=">", value=0, within="3d"),
        _rule(kind="balance", below=200),
    ]
    for rule in rules:
        outcome = evaluate(rule, subject)
        assert outcome.verdict is Verdict.UNKNOWN, rule.kind
        assert outcome.reason == "out of scope"


def test_config_type_has_the_account_section() -> None:
    assert "account" in Config.model_fields
