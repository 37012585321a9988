"""Message rendering: the numbers, the link, both languages, account alerts, the digest, and
user templates that override or break.
"""

# the Chinese messages use full-width punctuation on purpose

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from monitor.model import Creator, Severity, Variant
from monitor.notify.message import (
    AlertLine,
    Digest,
    FailingCreator,
    MessageContext,
    Mover,
    format_change,
    format_pct,
    format_value,
    human_duration,
)
from monitor.notify.rendering import Renderer, render
from monitor.policy.lifecycle import AlertState, Phase

LILY = Creator("5c3bf7f7000000000602fd63", "Lilyy", ("fitness",))
BOB = Creator("5c3bf7f7000000000602fd64", "Bob")
FIRED = datetime(2025, 12, 11, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai
SHANGHAI = ZoneInfo("Asia/Shanghai")
CTX = MessageContext(
    now=FIRED + timedelta(days=1, hours=3), creator=LILY, variant=Variant(), zone=SHANGHAI
)
LINK = "https://pgy.xiaohongshu.com/solar/pre-trade/blogger-detail/5c3bf7f7000000000602fd63"

DROP = AlertState(
    rule="reads-down-30pct-week",
    scope=LILY.user_id,
    severity=Severity.WARNING,
    state=Phase.FIRING,
    id=1,
    creator_id=3,
    metric="read",
    value=4260,
    baseline=7100,
    fired_at=FIRED,
    firing_sent=True,
    summary="read 7100 → 4260 (-40.0 %) from 2025-12-03 to 2025-12-10; rolling medians",
    details={
        "kind": "change",
        "change_abs": -2840.0,
        "change_pct": -40.0,
        "date": "2025-12-10",
        "baseline_date": "2025-12-03",
        "rolling_median": True,
    },
)


def test_english_firing_says_who_what_how_much_since_when_and_links() -> None:
    m = render("firing", DROP, CTX, "en")
    assert m.error is None
    assert m.title == "[FIRING] Lilyy: reads 7,100 → 4,260 (-40.0 %) · reads-down-30pct-week"
    for needle in (
        "**Lilyy** (`5c3bf7f7000000000602fd63`, DAILY_NOTE/PHOTO_TEXT_AND_VIDEO/DAY_30/ALL)",
        "- Reads: 7,100 → 4,260 (-40.0 %), by -2,840",
        "- Compared: 2025-12-03 → 2025-12-10",
        "- Firing since 2025-12-11 10:00 Asia/Shanghai (1d 3h)",
        "rolling medians per note",
        f"[Open in Pugongying]({LINK})",
    ):
        assert needle in m.body


def test_chinese_firing_has_the_same_numbers() -> None:
    m = render("firing", DROP, CTX, "zh")
    assert m.error is None
    assert m.title == "【告警】Lilyy：阅读 7,100 → 4,260 (-40.0 %) · reads-down-30pct-week"
    for needle in (
        "- 阅读：7,100 → 4,260 (-40.0 %)，变化 -2,840",
        "- 告警开始：2025-12-11 10:00 Asia/Shanghai（已持续 1天3小时）",
        "滚动中位数",
        f"[在蒲公英中查看]({LINK})",
        "（change，警告）",  # the severity in the message's language
    ):
        assert needle in m.body
    assert "warning" not in m.body


def test_repeat_and_resolved() -> None:
    assert render("repeat", DROP, CTX, "en").title.startswith("[STILL FIRING] Lilyy")
    resolved_at = FIRED + timedelta(hours=30)
    done = replace(
        DROP,
        state=Phase.RESOLVED,
        resolved_at=resolved_at,
        details={**DROP.details, "clear_value": 6900.0},
    )
    en = render("resolved", done, CTX, "en")
    assert en.title.startswith("[RESOLVED] Lilyy")
    assert "- Resolved at 2025-12-12 16:00 Asia/Shanghai; now 6,900" in en.body
    assert "(1d 6h)" in en.body  # firing lasted until the resolution, not until now
    zh = render("resolved", done, CTX, "zh")
    assert zh.title.startswith("【已恢复】Lilyy")
    assert "- 恢复时间：2025-12-12 16:00 Asia/Shanghai；当前 6,900" in zh.body


def test_threshold_rate_and_cost_formats() -> None:
    rate = AlertState(
        rule="engagement-floor",
        scope=LILY.user_id,
        severity=Severity.INFO,
        state=Phase.FIRING,
        metric="engage_rate",
        value=0.0412,
        baseline=0.0673,
        fired_at=FIRED,
        details={"kind": "threshold", "op": "<", "threshold": 0.05, "change_abs": -0.0261},
    )
    m = render("firing", rate, CTX, "en")
    assert m.error is None
    assert "- Engagement rate: 6.73 % → 4.12 %, by -2.61 pp" in m.body
    assert "- Threshold: engagement rate < 5.00 %" in m.body
    assert "rolling medians" not in m.body


@pytest.mark.parametrize(
    ("kind", "details", "en", "zh"),
    [
        (
            "stale",
            {"kind": "stale", "age_s": 180000.0, "after_s": 172800.0},
            "- No fresh data for 2d 2h (limit 2d)",
            "- 已 2天2小时 没有新数据（上限 2天）",
        ),
        (
            "api_error",
            {"kind": "api_error", "code": 400, "consecutive_failures": 2},
            "- Last code 400, 2 consecutive failures",
            "- 最近错误码 400，连续失败 2 次",
        ),
    ],
)
def test_metricless_creator_alerts(kind: str, details: dict[str, object], en: str, zh: str) -> None:
    alert = AlertState(
        rule=kind, scope=LILY.user_id, severity=Severity.WARNING, state=Phase.FIRING,
        fired_at=FIRED, details=details, summary="s",
    )  # fmt: skip
    assert en in render("firing", alert, CTX, "en").body
    assert zh in render("firing", alert, CTX, "zh").body


def account(**kw: object) -> AlertState:
    base: dict[str, object] = {
        "rule": "out-of-money",
        "scope": "account",
        "severity": Severity.CRITICAL,
        "state": Phase.FIRING,
        "fired_at": FIRED,
        "summary": "account-wide error 601: all calls paused",
        "details": {"kind": "api_error", "code": 601, "reason": "INSUFFICIENT BALANCE"},
    }
    return AlertState(**{**base, **kw})  # type: ignore[arg-type]


def test_account_wide_error_in_both_languages() -> None:
    ctx = MessageContext(now=FIRED + timedelta(minutes=30), zone=SHANGHAI)
    en = render("firing", account(), ctx, "en")
    assert en.title == "[CRITICAL] insufficient balance (601): all calls paused"
    assert "- Upstream message: INSUFFICIENT BALANCE" in en.body
    assert "- Since 2025-12-11 10:00 Asia/Shanghai (30m)" in en.body
    zh = render("firing", account(), ctx, "zh")
    assert zh.title == "【严重】账户余额不足（601）：所有调用已暂停"
    done = account(state=Phase.RESOLVED, resolved_at=FIRED + timedelta(hours=2))
    assert render("resolved", done, ctx, "en").title == (
        "[RESOLVED] insufficient balance (601): calls resumed"
    )
    assert render("resolved", done, ctx, "zh").title == "【已恢复】账户余额不足（601）：调用已恢复"


def test_budget_alert() -> None:
    alert = account(
        rule="budget-80",
        severity=Severity.WARNING,
        details={"kind": "budget", "share_pct": 85.0, "level_pct": 80.0},
    )
    ctx = MessageContext(now=FIRED)
    assert render("firing", alert, ctx, "en").title == "[WARNING] daily call budget 85.0 % used"
    assert render("firing", alert, ctx, "zh").title == "【警告】今日调用额度已用 85.0 %"


def digest() -> Digest:
    carol = Creator("5c3bf7f7000000000602fd65", "Carol")
    return Digest(
        day=date(2025, 12, 10),
        movers=(
            Mover(LILY, "read", 7100, 4260),  # -40 %
            Mover(BOB, "read", 1000, 1100),  # +10 %
            Mover(carol, "read", 2000, 3000),  # +50 %
            Mover(carol, "engage", 0, 10),  # undefined %: left out
            Mover(BOB, "engage", 400, 400),  # no move: left out
        ),
        fired=(AlertLine("reads-down", LILY.user_id, "warning", "read fell", FIRED, LILY),),
        resolved=(AlertLine("out-of-money", "account", "critical", "calls resumed", FIRED),),
        budget_used=1234,
        daily_calls=2000,
        failing=(FailingCreator(BOB, 3, 500, None),),
        top=2,
    )


def test_digest_english() -> None:
    m = Renderer().render_digest(digest(), MessageContext(now=FIRED, zone=SHANGHAI), "en")
    assert m.error is None
    assert m.title == "Daily digest 2025-12-10: 1 fired, 1 resolved, 1 failing"
    assert "**Budget:** 1,234 of 2,000 calls used (61.7 %)" in m.body
    carol = "[Carol](https://pgy.xiaohongshu.com/solar/pre-trade/blogger-detail/5c3bf7f7000000000602fd65)"
    lily = f"[Lilyy]({LINK})"
    assert f"- {carol}: 2,000 → 3,000 (+50.0 %)\n- {lily}: 7,100 → 4,260 (-40.0 %)\n" in m.body
    assert "Bob](" not in m.body.split("## Alerts fired")[0]  # top=2 leaves Bob's +10 % out
    assert "**Engagements**" not in m.body
    # the zone is named once, in the heading, not on every line
    assert (
        "## Alerts fired (times in Asia/Shanghai)\n"
        "- 2025-12-11 10:00 `reads-down` Lilyy (warning): read fell"
    ) in m.body
    assert m.body.count("Asia/Shanghai") == 3
    assert "`out-of-money` account: calls resumed" in m.body
    assert "3 consecutive failures, last code 500, last success never" in m.body


def test_digest_chinese_and_empty() -> None:
    m = Renderer().render_digest(digest(), MessageContext(now=FIRED), "zh")
    assert m.title == "每日摘要 2025-12-10：新告警 1 条，恢复 1 条，抓取失败达人 1 位"
    assert "**调用额度：** 已用 1,234 / 2,000 次（61.7 %）" in m.body
    assert "连续失败 3 次，最近错误码 500，最近成功 从未" in m.body
    empty = Renderer().render_digest(
        Digest(day=date(2025, 12, 10)), MessageContext(now=FIRED), "en"
    )
    assert empty.body.count("- none") == 4
    assert "(n/a)" in empty.body


# --- user templates -------------------------------------------------------------------------


def test_user_template_overrides_with_the_same_variables(tmp_path: Path) -> None:
    (tmp_path / "alert.en.j2").write_text(
        "{{ creator.name }} {{ metric }} {{ movement_text }}\n"
        "{{ value | num(metric) }} {{ change_pct | pct }} {{ details.kind }} {{ creator.url }}\n"
    )
    m = render("firing", DROP, CTX, "en", templates_dir=tmp_path)
    assert m.error is None
    assert m.title == "Lilyy read 7,100 → 4,260 (-40.0 %)"
    assert m.body == f"4,260 -40.0 % change {LINK}\n"
    # a template the user did not override is the built-in one, without an error
    zh = render("firing", DROP, CTX, "zh", templates_dir=tmp_path)
    assert (zh.error, zh.title.startswith("【告警】")) == (None, True)


@pytest.mark.parametrize(
    ("source", "error_start"),
    [
        ("{% if %}broken", "template alert.en.j2: TemplateSyntaxError"),
        ("{{ no_such_variable }}", "template alert.en.j2: UndefinedError"),
        ("{{ rule.__class__.__mro__ }}", "template alert.en.j2: SecurityError"),
        ("{{ 1 / 0 }}", "template alert.en.j2: ZeroDivisionError"),
    ],
)
def test_broken_user_template_falls_back_to_builtin(
    tmp_path: Path, source: str, error_start: str
) -> None:
    (tmp_path / "alert.en.j2").write_text(source)
    m = Renderer(tmp_path).render("firing", DROP, CTX, "en")
    assert m.error is not None
    assert m.error.startswith(error_start)
    assert m.title == render("firing", DROP, CTX, "en").title


# --- formatting -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("metric", "value", "text"),
    [
        ("read", 7100.0, "7,100"),
        ("imp", 118751, "118,751"),
        ("cpm", 253.89259879916804, "253.89"),
        ("cpe", 60.0, "60.00"),
        ("engage_rate", 0.0673, "6.73 %"),
        ("read", None, "n/a"),
        (None, 1.5, "1.50"),
    ],
)
def test_format_value(metric: str | None, value: float | None, text: str) -> None:
    assert format_value(metric, value) == text


def test_format_change_pct_and_duration() -> None:
    assert format_change("read", -2840.0) == "-2,840"
    assert format_change("read", 12.0) == "+12"
    assert format_change("read", 0.0) == "±0"
    assert format_change("read_rate", 0.005) == "+0.50 pp"
    assert format_change("read", None) == "n/a"
    assert (format_pct(-40.0), format_pct(12.345), format_pct(0.0)) == (
        "-40.0 %",
        "+12.3 %",
        "0.0 %",
    )
    assert format_pct(None) == "n/a"
    assert human_duration(timedelta(days=2, hours=3, minutes=5), "en") == "2d 3h"
    assert human_duration(timedelta(hours=3, minutes=5), "en") == "3h 5m"
    assert human_duration(timedelta(hours=3), "zh") == "3小时"
    assert human_duration(timedelta(seconds=20), "zh") == "0分钟"
