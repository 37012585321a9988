"""Rule evaluation: every kind, on hand-made series and on the real upstream sample."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from monitor.config import Rule, parse_config
from monitor.model import Creator, DailyPoint, Variant, Verdict
from monitor.policy.rules import (
    ACCOUNT_SCOPE,
    AccountSubject,
    Subject,
    evaluate,
    in_scope,
    inhibit,
)

LILY = Creator("5c3bf7f7000000000602fd63", "Lilyy", ("fitness", "tier-a"))
BOB = Creator("5c3bf7f7000000000602fd64", "Bob", ("food",))
NOW = datetime(2025, 12, 11, 2, 0, tzinfo=UTC)
DAY0 = date(2025, 12, 1)


def rule(**fields: Any) -> Rule:
    """A rule through the real config parser (creators must be tracked to be named)."""
    fields.setdefault("name", "r")
    config = parse_config(
        {
            "creators": [{"user_id": LILY.user_id}, {"user_id": BOB.user_id}],
            "rules": [fields],
        }
    )
    return config.rules[0]


def points(metric: str, values: list[Any], start: date = DAY0) -> tuple[DailyPoint, ...]:
    return tuple(DailyPoint(start + timedelta(days=i), **{metric: v}) for i, v in enumerate(values))


def subject(series: tuple[DailyPoint, ...] = (), creator: Creator = LILY, **kw: Any) -> Subject:
    return Subject(creator=creator, variant=Variant(), series=series, now=NOW, **kw)


def sample_series(
    data_dir: Path, name: str = "core_data_success_30d.json"
) -> tuple[DailyPoint, ...]:
    daily = json.loads((data_dir / name).read_text())["data"]["dailyData"]
    return tuple(
        DailyPoint(
            date.fromisoformat(p["dateKey"]), imp=p["imp"], read=p["read"], engage=p["engage"]
        )
        for p in daily
    )


# --- threshold ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("op", "limit", "newest", "verdict"),
    [
        ("<", 50, 49, Verdict.FIRING),
        ("<", 50, 50, Verdict.CLEAR),
        ("<=", 50, 50, Verdict.FIRING),
        (">", 50, 51, Verdict.FIRING),
        (">", 50, 50, Verdict.CLEAR),
        (">=", 50, 50, Verdict.FIRING),
        ("==", 50, 50, Verdict.FIRING),
        ("!=", 50, 50, Verdict.CLEAR),
    ],
)
def test_threshold_ops(op: str, limit: float, newest: int, verdict: Verdict) -> None:
    r = rule(kind="threshold", metric="engage", op=op, value=limit)
    out = evaluate(r, subject(points("engage", [80, newest])))
    assert out.verdict is verdict
    assert out.scope == LILY.user_id
    assert out.finding is not None
    assert out.finding.value == newest
    assert out.finding.baseline == 80
    assert out.finding.change_abs == newest - 80
    assert out.finding.details["threshold"] == limit


def test_threshold_on_derived_engage_rate() -> None:
    r = rule(kind="threshold", metric="engage_rate", op="<", value=0.05)
    low = (DailyPoint(DAY0, read=1000, engage=40),)
    high = (DailyPoint(DAY0, read=1000, engage=60),)
    zero_read = (DailyPoint(DAY0, read=0, engage=60),)
    assert evaluate(r, subject(low)).verdict is Verdict.FIRING
    assert evaluate(r, subject(low)).finding.value == pytest.approx(0.04)  # type: ignore[union-attr]
    assert evaluate(r, subject(high)).verdict is Verdict.CLEAR
    assert evaluate(r, subject(zero_read)).verdict is Verdict.UNKNOWN


def test_threshold_without_data_or_value_is_unknown() -> None:
    r = rule(kind="threshold", metric="cpm", op=">", value=500)
    assert evaluate(r, subject()).verdict is Verdict.UNKNOWN
    assert evaluate(r, subject(points("cpm", [None]))).verdict is Verdict.UNKNOWN


# --- change ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "values", "verdict"),
    [
        ({"pct": -30}, [7100, 4970], Verdict.FIRING),  # exactly -30 %
        ({"pct": -30}, [7100, 4971], Verdict.CLEAR),
        ({"pct": -30}, [7100, 4260], Verdict.FIRING),
        ({"pct": -30}, [7100, 9000], Verdict.CLEAR),  # a rise is not a fall
        ({"pct": 20}, [100, 120], Verdict.FIRING),
        ({"pct": 20}, [100, 119], Verdict.CLEAR),
        ({"pct": 20}, [100, 50], Verdict.CLEAR),
        ({"abs": -500}, [7100, 6600], Verdict.FIRING),
        ({"abs": -500}, [7100, 6601], Verdict.CLEAR),
        ({"abs": 3}, [0, 3], Verdict.FIRING),  # abs needs no non-zero baseline
        ({"pct": -30}, [0, 3], Verdict.UNKNOWN),  # pct of 0 is undefined
        ({"pct": -30}, [None, 3], Verdict.UNKNOWN),
        ({"pct": -30}, [3], Verdict.UNKNOWN),  # no previous point
    ],
)
def test_change_against_previous(
    fields: dict[str, float], values: list[float | None], verdict: Verdict
) -> None:
    r = rule(kind="change", metric="read", baseline="previous", **fields)
    assert evaluate(r, subject(points("read", values))).verdict is verdict


def test_change_finding_carries_numbers_dates_and_the_rolling_median_flag() -> None:
    r = rule(kind="change", metric="read", baseline="7d", pct=-30)
    series = points("read", [7100, 7000, 6000, 5000, 4000, 4100, 4200, 4260])
    out = evaluate(r, subject(series))
    assert out.verdict is Verdict.FIRING
    f = out.finding
    assert f is not None
    assert (f.metric, f.value, f.baseline, f.change_abs) == ("read", 4260, 7100, -2840)
    assert f.change_pct == pytest.approx(-40.0)
    assert (f.baseline_date, f.newest_date) == (date(2025, 12, 1), date(2025, 12, 8))
    # the metric's label and numbers as every surface shows them; the rolling-median note is
    # the surfaces' to say once beside a list, so the summary of each row leaves it out
    assert f.summary == "reads 7,100 → 4,260 (-40.0 %) from 2025-12-01 to 2025-12-08"
    assert f.details["baseline"] == "7d"
    assert f.details["rolling_median"] is True


def test_change_uses_nearest_point_at_or_before_the_baseline_date() -> None:
    r = rule(kind="change", metric="read", baseline="7d", pct=-10)
    # 2025-12-01 (exactly 7 days back) is missing; 2025-11-30 is the nearest before it
    series = (
        DailyPoint(date(2025, 11, 29), read=9000),
        DailyPoint(date(2025, 11, 30), read=8000),
        DailyPoint(date(2025, 12, 2), read=100),
        DailyPoint(date(2025, 12, 8), read=7000),
    )
    f = evaluate(r, subject(series)).finding
    assert f is not None
    assert (f.baseline, f.baseline_date) == (8000, date(2025, 11, 30))
    too_short = series[2:]
    assert evaluate(r, subject(too_short)).verdict is Verdict.UNKNOWN


def test_change_on_real_sample(data_dir: Path) -> None:
    series = sample_series(data_dir)
    week = evaluate(rule(kind="change", metric="read", baseline="7d", pct=-5), subject(series))
    assert week.verdict is Verdict.FIRING
    assert week.finding is not None
    assert (week.finding.baseline, week.finding.value) == (7782, 7100)
    assert week.finding.baseline_date == date(2025, 12, 3)
    assert week.finding.change_pct == pytest.approx(-682 / 7782 * 100)
    deeper = evaluate(rule(kind="change", metric="read", baseline="7d", pct=-10), subject(series))
    assert deeper.verdict is Verdict.CLEAR
    rate = evaluate(
        rule(kind="change", metric="read_rate", baseline="previous", pct=5), subject(series)
    )
    # read_rate 6966/115811 → 7100/118751: a small rise, below 5 %
    assert rate.verdict is Verdict.CLEAR
    assert rate.finding is not None
    assert rate.finding.value == pytest.approx(7100 / 118751)


# --- scope ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scope", "lily", "bob"),
    [
        ({}, True, True),
        ({"tags": ["fitness"]}, True, False),
        ({"tags": ["food", "fitness"]}, True, True),
        ({"creators": [BOB.user_id]}, False, True),
        ({"creators": [BOB.user_id], "tags": ["tier-a"]}, True, True),
    ],
)
def test_scope_by_tags_and_ids(scope: dict[str, list[str]], lily: bool, bob: bool) -> None:
    r = rule(kind="threshold", metric="read", op="<", value=10, **scope)
    series = points("read", [5])
    assert (evaluate(r, subject(series, LILY)).verdict is Verdict.FIRING) is lily
    assert (evaluate(r, subject(series, BOB)).verdict is Verdict.FIRING) is bob
    if not bob:
        assert evaluate(r, subject(series, BOB)).reason == "out of scope"


def test_kinds_by_subject_type() -> None:
    account = AccountSubject(now=NOW, used_today=0, daily_calls=10)
    assert not in_scope(rule(kind="budget"), subject())
    assert in_scope(rule(kind="budget"), account)
    assert in_scope(rule(kind="api_error", codes=[601]), account)
    assert in_scope(rule(kind="api_error", codes=[601]), subject())
    assert not in_scope(rule(kind="stale", after="1h"), account)
    assert evaluate(rule(kind="stale", after="1h"), account).verdict is Verdict.UNKNOWN


# --- stale ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kw", "verdict"),
    [
        ({"last_success_at": NOW - timedelta(hours=48)}, Verdict.FIRING),
        ({"last_success_at": NOW - timedelta(hours=47, minutes=59)}, Verdict.CLEAR),
        ({"tracked_since": NOW - timedelta(hours=49)}, Verdict.FIRING),
        ({"tracked_since": NOW - timedelta(hours=1)}, Verdict.CLEAR),
        ({}, Verdict.UNKNOWN),
    ],
)
def test_stale(kw: dict[str, Any], verdict: Verdict) -> None:
    out = evaluate(rule(kind="stale", after="48h"), subject(**kw))
    assert out.verdict is verdict
    if verdict is Verdict.FIRING:
        assert out.finding is not None
        assert out.finding.details["after_s"] == 48 * 3600


# --- api_error ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "kw", "verdict"),
    [
        ({"codes": [400]}, {"last_code": 400, "consecutive_failures": 1}, Verdict.FIRING),
        ({"codes": [400]}, {"last_code": 500, "consecutive_failures": 1}, Verdict.CLEAR),
        ({"codes": [400]}, {"last_code": 0}, Verdict.CLEAR),
        ({"consecutive": 3}, {"last_code": 500, "consecutive_failures": 3}, Verdict.FIRING),
        ({"consecutive": 3}, {"last_code": 500, "consecutive_failures": 2}, Verdict.CLEAR),
        ({"codes": [400], "consecutive": 3}, {"consecutive_failures": 5}, Verdict.FIRING),
        ({"codes": [400]}, {}, Verdict.CLEAR),
    ],
)
def test_api_error_per_creator(
    fields: dict[str, Any], kw: dict[str, Any], verdict: Verdict
) -> None:
    out = evaluate(rule(kind="api_error", **fields), subject(**kw))
    assert out.verdict is verdict
    assert out.finding is not None
    assert out.finding.details["code"] == kw.get("last_code")


def test_account_wide_error_is_one_account_finding() -> None:
    r = rule(kind="api_error", codes=[601, 602, 100], severity="critical")
    paused = AccountSubject(NOW, 10, 2000, pause_code=601, pause_reason="INSUFFICIENT BALANCE")
    out = evaluate(r, paused)
    assert out.verdict is Verdict.FIRING
    assert out.scope == ACCOUNT_SCOPE
    assert out.finding is not None
    assert out.finding.summary == "account-wide error 601: all calls paused"
    assert out.finding.details["reason"] == "INSUFFICIENT BALANCE"
    assert evaluate(r, AccountSubject(NOW, 10, 2000)).verdict is Verdict.CLEAR
    quota = AccountSubject(NOW, 10, 2000, pause_code=303)
    assert evaluate(r, quota).verdict is Verdict.CLEAR  # 303 is not among this rule's codes
    assert evaluate(rule(kind="api_error", codes=[303]), quota).verdict is Verdict.FIRING


@pytest.mark.parametrize(
    ("code", "pause", "inhibited"),
    [
        (601, 601, True),
        (100, 601, True),  # any account-wide code while the account is paused
        (303, 303, True),
        (601, None, True),  # an account-wide code is the account alert's, paused or not
        (500, 601, False),  # a creator's own error is not the account's
    ],
)
def test_inhibit_per_creator_findings_during_account_error(
    code: int, pause: int | None, inhibited: bool
) -> None:
    r = rule(kind="api_error", codes=[code, 500])
    subj = subject(last_code=code, consecutive_failures=1)
    out = evaluate(r, subj)
    assert out.verdict is Verdict.FIRING
    account = AccountSubject(NOW, 0, 100, pause_code=pause)
    after = inhibit(r, out, subj, account)
    assert (after.verdict is Verdict.UNKNOWN) is inhibited
    assert after.scope == LILY.user_id
    if not inhibited:
        assert after is out


def test_inhibit_leaves_other_kinds_alone() -> None:
    r = rule(kind="threshold", metric="read", op="<", value=10)
    subj = subject(points("read", [5]), last_code=601)
    out = evaluate(r, subj)
    assert inhibit(r, out, subj, AccountSubject(NOW, 0, 100, pause_code=601)) is out


# --- anomaly --------------------------------------------------------------------------------


def test_anomaly_fires_on_a_jump_from_the_trailing_median() -> None:
    r = rule(kind="anomaly", metric="read", k=3.5, window=7, min_points=5)
    base = [100, 104, 98, 101, 99, 103, 97]  # median 100, MAD 2 → scale 2.9652
    calm = evaluate(r, subject(points("read", [*base, 108])))
    assert calm.verdict is Verdict.CLEAR
    jump = evaluate(r, subject(points("read", [*base, 111])))
    assert jump.verdict is Verdict.FIRING
    assert jump.finding is not None
    assert jump.finding.baseline == 100
    assert jump.finding.details["score"] == pytest.approx(11 / (2 * 1.4826), abs=1e-3)
    drop = evaluate(r, subject(points("read", [*base, 89])))
    assert drop.verdict is Verdict.FIRING
    assert drop.finding is not None
    assert "rolling medians" not in drop.finding.summary
    assert drop.finding.summary.startswith("reads 89 is ")
    assert drop.finding.details["rolling_median"] is True


def test_anomaly_window_excludes_older_points_and_counts_min_points() -> None:
    r = rule(kind="anomaly", metric="read", window=3, min_points=3)
    # the 1000s are outside the 3-point window before the newest point
    out = evaluate(r, subject(points("read", [1000, 1000, 10, 11, 12, 11])))
    assert out.finding is not None
    assert out.finding.baseline == 11
    few = rule(kind="anomaly", metric="read", window=14, min_points=7)
    out = evaluate(few, subject(points("read", [10, None, 11, 12, 13, 14, 15, 99])))
    assert out.verdict is Verdict.UNKNOWN  # 6 usable points of 7
    assert out.reason == "6 of 7 points needed"


def test_anomaly_with_zero_mad() -> None:
    r = rule(kind="anomaly", metric="engage", k=3.5, window=7, min_points=5)
    flat = [500] * 7
    # flat window: the scale is 1 % of the median (5), so 510 is 2 deviations, 520 is 4
    assert evaluate(r, subject(points("engage", [*flat, 510]))).verdict is Verdict.CLEAR
    assert evaluate(r, subject(points("engage", [*flat, 520]))).verdict is Verdict.FIRING
    assert evaluate(r, subject(points("engage", [*flat, 500]))).verdict is Verdict.CLEAR
    # over half tie (MAD 0): the mean absolute deviation takes over
    ties = [500, 500, 500, 500, 530, 470, 500]
    out = evaluate(r, subject(points("engage", [*ties, 540])))
    assert out.finding is not None
    assert out.finding.details["scale"] == pytest.approx(60 / 7 * 1.2533)
    assert out.verdict is Verdict.FIRING  # 40 / 10.74 = 3.72 deviations
    zero = [0] * 7
    assert evaluate(r, subject(points("engage", [*zero, 0]))).verdict is Verdict.CLEAR


def test_anomaly_on_real_sample(data_dir: Path) -> None:
    out = evaluate(rule(kind="anomaly", metric="read"), subject(sample_series(data_dir)))
    assert out.finding is not None
    assert out.finding.baseline == 7744.5
    assert out.verdict is Verdict.CLEAR


# --- budget ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("used", "verdict"), [(1599, Verdict.CLEAR), (1600, Verdict.FIRING), (2000, Verdict.FIRING)]
)
def test_budget(used: int, verdict: Verdict) -> None:
    out = evaluate(rule(kind="budget", level_pct=80), AccountSubject(NOW, used, 2000))
    assert out.verdict is verdict
    assert out.scope == ACCOUNT_SCOPE
    assert out.finding is not None
    assert out.finding.details["share_pct"] == used / 20


# --- one alert per variant, inhibition in one place, wording ---------------------------------


def test_stale_is_inhibited_only_while_the_account_is_paused() -> None:
    r = rule(kind="stale", after="1d")
    subj = subject(last_success_at=NOW - timedelta(days=3))
    out = evaluate(r, subj)
    assert out.verdict is Verdict.FIRING
    assert inhibit(r, out, subj, AccountSubject(NOW, 0, 100)) is out
    paused = inhibit(r, out, subj, AccountSubject(NOW, 0, 100, pause_code=601))
    assert paused.verdict is Verdict.UNKNOWN
    assert "601" in paused.reason


def test_threshold_wording_firing_and_back() -> None:
    r = rule(kind="threshold", metric="engage", op="<", value=100)
    low = evaluate(r, subject(points("engage", [120, 99])))
    assert low.finding is not None
    assert low.finding.summary.startswith("engagements 99 < 100 (threshold)")
    back = evaluate(r, subject(points("engage", [99, 102])))
    assert back.verdict is Verdict.CLEAR
    assert back.finding is not None
    assert back.finding.summary.startswith("engagements back to 102 (≥ 100)")
