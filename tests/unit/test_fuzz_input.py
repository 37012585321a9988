"""Bad input (drill 6): hypothesis fuzzes the config loader, the envelope parser and the rules.

Every failure must be a clean ``MonitorError`` subclass with a message (a config error also with
its key path), never another exception, and never a hang (each example has a deadline).
"""

from __future__ import annotations

import json
import math
import os
import string
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from monitor.config import Config, load_config, parse_config
from monitor.errors import ConfigError, ParseError, UpstreamError
from monitor.model import ALL_METRICS, INT_METRICS, METRICS, Creator, DailyPoint, Variant
from monitor.policy.rules import AccountSubject, Outcome, Subject, evaluate
from monitor.upstream.client import parse_core_data

pytestmark = pytest.mark.drills

#: examples per property; ``bench/drills.py`` raises it for the long form
EXAMPLES = int(os.environ.get("CM_FUZZ_EXAMPLES", "150"))
#: a deadline per example: a parser that loops on some input fails here instead of hanging CI
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=timedelta(milliseconds=750),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
#: the widest integer the database columns (SQLite INTEGER, PostgreSQL BIGINT) can hold
INT64_MAX = 2**63 - 1
USER_ID = "5c3bf7f7000000000602fd63"
OTHER_ID = "5c3bf7f7000000000602fd64"

# --------------------------------------------------------------------------- values

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
metric_values = st.one_of(
    st.integers(min_value=-5, max_value=10**6),
    st.integers(min_value=2**52, max_value=2**62),  # past a float's exact range
    st.floats(allow_nan=False, allow_infinity=False, min_value=-1.0, max_value=1e308),
    st.sampled_from(["", "12", "-3", "4.5", "1e400", "nan", "abc", " 7 ", "0x10", "9" * 30]),
    st.none(),
    st.booleans(),
    st.lists(st.integers(), max_size=2),
)
date_keys = st.one_of(
    st.dates(min_value=date(2020, 1, 1), max_value=date(2030, 12, 31)).map(date.isoformat),
    st.sampled_from(["2025-02-30", "2025-13-01", "20251201", "", "2025-12-1"]),
    st.none(),
    st.integers(),
)
API_KEYS = ("imp", "read", "engage", "cpm", "cpe", "cpv", "cpuv", "thirdUserNum")


@st.composite
def points(draw: st.DrawFn) -> dict[str, Any]:
    keys = draw(st.lists(st.sampled_from(API_KEYS), unique=True, max_size=len(API_KEYS)))
    point: dict[str, Any] = {key: draw(metric_values) for key in keys}
    if draw(st.booleans()) or draw(st.booleans()):
        point["dateKey"] = draw(date_keys)
    return point


@st.composite
def envelopes(draw: st.DrawFn) -> dict[str, Any]:
    """Envelope-shaped JSON: mostly code 0 with plausible-to-broken data."""
    data: Any = {
        "sumData": draw(st.one_of(points(), json_values)),
        "dailyData": draw(st.one_of(st.lists(points(), max_size=6), json_values)),
    }
    if draw(st.integers(0, 9)) == 0:
        data = draw(json_values)
    envelope: dict[str, Any] = {
        "code": draw(
            st.one_of(st.just(0), st.sampled_from([0, 201, 301, 302, 400, 601, 999]), scalars)
        ),
        "data": data,
        "message": draw(st.one_of(st.none(), st.text(max_size=30), json_values)),
        "recordTime": draw(
            st.one_of(
                st.none(),
                st.sampled_from(["2025-12-11T10:17:58.460419416", "2025-12-11 10:17:58", "x"]),
                json_values,
            )
        ),
    }
    for key in draw(st.lists(st.sampled_from(list(envelope)), max_size=2)):
        envelope.pop(key, None)
    return envelope


def check_success(result: Any) -> None:
    """A parsed success holds only values every later stage can use."""
    for point in (result.data.summary, *result.data.daily):
        for metric in METRICS:
            raw = getattr(point, metric)
            if raw is None:
                continue
            assert not isinstance(raw, bool)
            assert raw >= 0
            if metric in INT_METRICS:
                # the int64 bound is the xfail test below; here: a whole number
                assert isinstance(raw, int)
            else:
                assert math.isfinite(raw)
        for metric in ALL_METRICS:
            point.value(metric)  # rules and reports call this on every stored point


def check_upstream_error(exc: UpstreamError) -> None:
    assert str(exc)
    assert repr(exc)
    assert exc.message


# --------------------------------------------------------------------------- the envelope parser


@FUZZ
@given(st.binary(max_size=300))
def test_random_bytes_parse_or_fail_cleanly(body: bytes) -> None:
    try:
        result = parse_core_data(body, http_status=200)
    except UpstreamError as exc:
        check_upstream_error(exc)
    else:
        check_success(result)


@FUZZ
@given(json_values)
def test_random_json_parses_or_fails_cleanly(value: Any) -> None:
    try:
        result = parse_core_data(json.dumps(value), http_status=502)
    except UpstreamError as exc:
        check_upstream_error(exc)
    else:
        check_success(result)


@FUZZ
@given(envelopes(), st.integers(0, 3))
def test_envelope_shaped_bodies_parse_or_fail_cleanly(envelope: dict[str, Any], cut: int) -> None:
    text = json.dumps(envelope)
    if cut:  # truncated bodies, as a dropped connection leaves them
        text = text[: len(text) * cut // 4]
    try:
        result = parse_core_data(text.encode())
    except UpstreamError as exc:
        check_upstream_error(exc)
        kept = exc.raw_body if isinstance(exc, ParseError) else text
    else:
        check_success(result)
        kept = result.raw_body
    assert kept == text  # a body we could not read is kept whole for audit


@pytest.mark.parametrize("value", [2**63, 10**400, "9" * 30], ids=["2^63", "10^400", "9x30"])
def test_an_integer_past_int64_is_a_parse_error(value: object) -> None:
    body = json.dumps({"code": 0, "data": {"sumData": {"dateKey": "2025-12-10", "imp": value}}})
    with pytest.raises(ParseError):
        parse_core_data(body)


# --------------------------------------------------------------------------- the config


DURATIONS = st.one_of(
    st.sampled_from(["90s", "15m", "12h", "7d", "1d12h", "0s", "-1h", "h", "", "7 d", "1w"]),
    st.text(alphabet="0123456789smhdw -", max_size=6),
)
RULE_KINDS = ("threshold", "change", "stale", "api_error", "anomaly", "budget", "bogus")
anything = st.one_of(scalars, DURATIONS, st.lists(scalars, max_size=3))


@st.composite
def rule_dicts(draw: st.DrawFn) -> dict[str, Any]:
    rule: dict[str, Any] = {
        "name": draw(st.one_of(st.sampled_from(["r1", "r2", ""]), anything)),
        "kind": draw(st.one_of(st.sampled_from(RULE_KINDS), anything)),
    }
    optional = {
        "metric": st.one_of(st.sampled_from([*ALL_METRICS, "reads"]), anything),
        "op": st.one_of(st.sampled_from(["<", ">=", "=>", "!="]), anything),
        "value": anything,
        "pct": st.one_of(st.floats(-100, 100), anything),
        "abs": anything,
        "baseline": st.one_of(st.just("previous"), DURATIONS, anything),
        "after": DURATIONS,
        "codes": st.one_of(st.lists(st.integers(0, 999), max_size=3), anything),
        "consecutive": anything,
        "severity": st.one_of(st.sampled_from(["info", "warning", "critical", "fatal"]), anything),
        "channels": st.one_of(st.lists(st.sampled_from(["team", "ops"]), max_size=2), anything),
        "creators": st.one_of(st.lists(st.sampled_from([USER_ID, OTHER_ID]), max_size=2), anything),
        "for": anything,
        "repeat": DURATIONS,
        "k": anything,
        "window": anything,
        "level_pct": anything,
        "typo_key": anything,
    }
    for key in draw(st.lists(st.sampled_from(sorted(optional)), unique=True, max_size=5)):
        rule[key] = draw(optional[key])
    return rule


@st.composite
def config_dicts(draw: st.DrawFn) -> dict[str, Any]:
    sections: dict[str, st.SearchStrategy[Any]] = {
        "api": st.fixed_dictionaries(
            {},
            optional={
                "base_url": st.one_of(
                    st.sampled_from(["http://127.0.0.1:1", "ftp://x", "https://a/b?c"]), anything
                ),
                "timeout": DURATIONS,
                "token_file": anything,
                "max_response_bytes": anything,
            },
        ),
        "budget": st.fixed_dictionaries(
            {},
            optional={
                "calls_per_minute": anything,
                "burst": anything,
                "daily_calls": anything,
                "timezone": st.one_of(
                    st.sampled_from(["Asia/Shanghai", "Mars/Base", "UTC"]), anything
                ),
            },
        ),
        "storage": st.fixed_dictionaries(
            {}, optional={"url": anything, "raw_retention": DURATIONS}
        ),
        "defaults": st.fixed_dictionaries(
            {},
            optional={
                "every": DURATIONS,
                "business": st.sampled_from(["DAILY_NOTE", "daily_note", "X"]),
                "date_type": anything,
            },
        ),
        "creators": st.lists(
            st.fixed_dictionaries(
                {"user_id": st.one_of(st.sampled_from([USER_ID, OTHER_ID, "0x12"]), anything)},
                optional={"name": anything, "every": DURATIONS, "tags": anything, "nick": anything},
            ),
            max_size=3,
        ),
        "channels": st.lists(
            st.fixed_dictionaries(
                {"name": st.one_of(st.sampled_from(["team", "ops"]), anything)},
                optional={
                    "url": st.one_of(st.just("json://127.0.0.1:9/x"), anything),
                    "url_env": anything,
                    "quiet_hours": st.one_of(st.sampled_from(["22:00-08:00", "25:00-1"]), anything),
                },
            ),
            max_size=2,
        ),
        "rules": st.lists(rule_dicts(), max_size=3),
        "http": st.fixed_dictionaries({}, optional={"listen": anything}),
        "mystery": anything,
    }
    keys = draw(st.lists(st.sampled_from(sorted(sections)), unique=True, max_size=6))
    return {key: draw(sections[key]) for key in keys}


def check_config_error(exc: ConfigError) -> None:
    assert exc.path, "a config error names where it is"
    assert exc.message
    assert "\n" not in str(exc), "one line"
    assert "Traceback" not in str(exc)


@FUZZ
@given(config_dicts())
def test_random_config_dicts_load_or_name_the_bad_key(data: dict[str, Any]) -> None:
    try:
        config = parse_config(data)
    except ConfigError as exc:
        check_config_error(exc)
    else:
        assert isinstance(config, Config)


def to_toml(data: dict[str, Any]) -> str:
    """A small TOML writer for what ``config_dicts`` draws (tables, arrays of tables, scalars)."""
    head: list[str] = []
    body: list[str] = []
    for key, value in data.items():
        if isinstance(value, dict):
            body.append(f"[{key}]")
            body += [f"{k} = {toml_value(v)}" for k, v in value.items()]
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            for item in value:
                body.append(f"[[{key}]]")
                body += [f"{k} = {toml_value(v)}" for k, v in item.items()]
        else:
            head.append(f"{key} = {toml_value(value)}")
    return "\n".join(head + body) + "\n"


def toml_value(value: Any) -> str:
    if value is None:
        return '""'  # TOML has no null; an empty string is as wrong for most keys
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return (
            "nan"
            if math.isnan(value)
            else ("inf" if value > 0 else "-inf")
            if math.isinf(value)
            else repr(value)
        )
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return json.dumps(str(value))


@FUZZ
@given(
    config_dicts(), st.text(alphabet=string.printable + "\x00é中", max_size=20), st.integers(0, 3)
)
def test_random_toml_text_loads_or_fails_with_one_line(
    tmp_path_factory: pytest.TempPathFactory, data: dict[str, Any], noise: str, where: int
) -> None:
    text = to_toml(data)
    if where == 1:
        text += noise
    elif where == 2:
        text = noise + text
    elif where == 3:
        text = text[: len(text) // 2] + noise
    path: Path = tmp_path_factory.mktemp("cfg") / "config.toml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    path.chmod(0o600)
    try:
        config = load_config(path)
    except ConfigError as exc:
        check_config_error(exc)
    else:
        assert isinstance(config, Config)


@FUZZ
@given(st.binary(max_size=200))
def test_random_bytes_as_a_config_file(
    tmp_path_factory: pytest.TempPathFactory, raw: bytes
) -> None:
    path = tmp_path_factory.mktemp("cfg") / "config.toml"
    path.write_bytes(raw)
    try:
        load_config(path)
    except ConfigError as exc:
        check_config_error(exc)


# --------------------------------------------------------------------------- the rules

NOW = datetime(2025, 12, 11, 2, 0, tzinfo=UTC)
int_metric = st.one_of(st.none(), st.integers(0, INT64_MAX))
cost_metric = st.one_of(st.none(), st.floats(min_value=0.0, max_value=1e308, exclude_min=True))


@st.composite
def series(draw: st.DrawFn) -> tuple[DailyPoint, ...]:
    days = draw(
        st.lists(
            st.dates(min_value=date(2025, 1, 1), max_value=date(2025, 12, 31)),
            unique=True,
            max_size=40,
        )
    )
    return tuple(
        DailyPoint(
            date_key=day,
            imp=draw(int_metric),
            read=draw(int_metric),
            engage=draw(int_metric),
            cpm=draw(cost_metric),
            cpe=draw(cost_metric),
            cpv=draw(cost_metric),
            cpuv=draw(cost_metric),
            third_user_num=draw(int_metric),
        )
        for day in sorted(days)
    )


@st.composite
def valid_rules(draw: st.DrawFn) -> Any:
    """Rules that passed the config parser (fuzzed dicts, kept only when they load)."""
    metric = draw(st.sampled_from(ALL_METRICS))
    kind = draw(st.sampled_from(RULE_KINDS[:-1]))
    number = st.floats(min_value=-1e12, max_value=1e12, allow_nan=False).filter(lambda v: v != 0)
    size = draw(st.sampled_from(["pct", "abs"]))
    pct = st.floats(min_value=-100, max_value=1e6).filter(lambda v: v != 0)  # config's range
    by_kind: dict[str, dict[str, Any]] = {
        "threshold": {
            "metric": metric,
            "op": draw(st.sampled_from(["<", "<=", ">", ">=", "==", "!="])),
            "value": draw(number),
        },
        "change": {
            "metric": metric,
            "baseline": draw(st.sampled_from(["previous", "1d", "7d", "36h", "90d"])),
            size: draw(pct if size == "pct" else number),
        },
        "stale": {"after": draw(st.sampled_from(["1s", "48h", "365d"]))},
        "api_error": {"codes": draw(st.lists(st.integers(0, 999), min_size=1, max_size=4))},
        "anomaly": {
            "metric": metric,
            "k": draw(st.floats(min_value=0.01, max_value=100)),
            "window": draw(st.integers(3, 40)),
            "min_points": draw(st.integers(3, 40)),
        },
        "budget": {"level_pct": draw(st.floats(min_value=0.01, max_value=100))},
    }
    config = parse_config(
        {
            "creators": [{"user_id": USER_ID}],
            "rules": [{"name": "r", "kind": kind, **by_kind[kind]}],
        }
    )
    return config.rules[0]


@FUZZ
@given(
    valid_rules(),
    series(),
    st.one_of(st.none(), st.datetimes(timezones=st.just(UTC))),
    st.integers(0, 10_000),
    st.one_of(st.none(), st.integers(0, 999)),
)
@example(
    rule=parse_config(
        {
            "creators": [{"user_id": USER_ID}],
            "rules": [{"name": "r", "kind": "anomaly", "metric": "imp"}],
        }
    ).rules[0],
    points=(
        *(DailyPoint(date(2025, 1, d), imp=INT64_MAX) for d in range(1, 12)),
        DailyPoint(date(2025, 1, 12), imp=0),
    ),
    last_success=None,
    failures=0,
    last_code=None,
)
def test_rules_decide_on_any_series(
    rule: Any,
    points: tuple[DailyPoint, ...],
    last_success: datetime | None,
    failures: int,
    last_code: int | None,
) -> None:
    creator = Creator(USER_ID, "Lilyy", ("fitness",))
    subject = Subject(
        creator=creator,
        variant=Variant(),
        series=points,
        now=NOW,
        last_success_at=last_success,
        consecutive_failures=failures,
        last_code=last_code,
        tracked_since=NOW - timedelta(days=3),
    )
    account = AccountSubject(now=NOW, used_today=failures, daily_calls=2000, pause_code=last_code)
    for target in (subject, account):
        outcome = evaluate(rule, target)
        assert isinstance(outcome, Outcome)
        if outcome.finding is not None:
            assert outcome.finding.summary
            json.dumps(dict(outcome.finding.details), allow_nan=True)  # JSON-ready, as promised
