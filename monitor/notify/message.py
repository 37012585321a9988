"""PURE message content: what an alert event, an account-wide alert or a daily digest says, as
the variables its Jinja2 template sees (``notify.rendering`` runs the templates into a Markdown
Message), in Chinese or English, with the helpers that format them. Must not send anything or
touch the database.

Variables of ``alert.*`` and ``account.*``:
  event ('firing' | 'repeat' | 'resolved'), language, rule, kind, severity, severity_text (in the
  message's language), scope, summary,
  details (dict), metric, metric_label, value, baseline, change_abs, change_pct (numbers or None),
  value_text, baseline_text, change_abs_text, change_pct_text, movement_text
  ("7,100 → 4,260 (-40.0 %)"), headline (the title's reading: "engagements 99 < 100
  (threshold)", "engagements back to 102 (≥ 100)", or the movement; None without a metric),
  date, baseline_date ('YYYY-MM-DD' or None),
  fired_at, resolved_at, now (local time strings or None), firing_for (e.g. "2d 3h" / "2天3小时"),
  creator ({name, user_id, url} or None), variant (label or None), code, code_text (account errors),
  rolling_median (bool: the values are rolling medians per note),
  note (the note of a ``new_note`` or ``note`` event, else None: {id, title, published
  ('YYYY-MM-DD', Asia/Shanghai), type_text ('video' / '视频'), ad (bool: a cooperation note),
  brand (or None), url, text (the whole line: title, type, day, ad and brand), when_text (a
  ``note`` rule's 'within 3d of publishing', else None)}),
  balance (a ``balance`` alert's reading, else None: {amount_text, below_text, days_left_text,
  days_left_limit, price_text, read_at} — texts, or None where not known).
Variables of ``digest.*``:
  language, zone (the IANA name the listed times are in), day,
  movers ([{metric, label, rows: [{name, user_id, url, old_text, new_text, change_pct_text}]}]),
  fired / resolved ([{rule, name, scope, severity, severity_text, summary, at}]),
  budget_used, daily_calls (formatted "1,200"), budget_pct_text,
  balance_text ("1,234.56 CNY", None before the first balance reading), price_text ("0.0500 CNY"
  per billed call, None until derived), days_left_text ("12.3", None while unknown),
  failing ([{name, user_id, url, failures, last_code, last_success_at}]); ``at`` and
  ``last_success_at`` are 'YYYY-MM-DD HH:MM' in ``zone``, which the headings name once;
  followers ([{name, user_id, url, old_text, new_text, change_text, change_pct_text, spark}]:
  the largest follower moves over the week, ``spark`` its days as ▁▂▃ blocks), followers_more
  (how many more moved); new_notes ([{name, user_id, url, title (Markdown-escaped, one line),
  note_url, published, video, type_text, brand, reads_text, first_seen_at}]: the notes first
  seen this week, newest first), new_notes_more. Both lists are empty where there is nothing
  to show (a creator tracked with core alone), and the built-in templates then leave their
  sections out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Literal, Protocol
from zoneinfo import ZoneInfo

from monitor.display import (
    format_days,
    format_money,
    format_pct,
    format_value,
    human_duration,
    labelled_time,
    local_time,
    zone_name,
)
from monitor.model import (
    DERIVED_METRICS,
    EVENT_KINDS,
    METRIC_LABELS,
    NEGATED_OPS,
    Creator,
    Variant,
)
from monitor.notify.digest_sources import (
    FollowerMove,
    NewNote,
    follower_move_variables,
    new_note_variables,
    top_follower_moves,
)
from monitor.notify.event_text import (
    balance_variables,
    event_headline,
    note_entry,
    note_variables,
)

Language = Literal["zh", "en"]
ACCOUNT_SCOPE = "account"
UTC_ZONE = ZoneInfo("UTC")

CODE_TEXTS: dict[str, dict[int, str]] = {
    "en": {
        100: "invalid or inactive API token",
        303: "daily quota exceeded",
        600: "permission denied",
        601: "insufficient balance",
        602: "the token's spending cap is reached",
    },
    "zh": {
        100: "API 令牌无效或未激活",
        303: "今日调用配额已用完",
        600: "无权限",
        601: "账户余额不足",
        602: "令牌消费上限已达",
    },
}


def cut(text: str, limit: int) -> str:
    """``text`` in at most ``limit`` characters: cut at a word where one is near, ending in "…"."""
    if len(text) <= limit:
        return text
    head = text[: limit - 1]
    space = head.rfind(" ")
    if space > limit // 2:
        head = head[:space]
    return head.rstrip(" ,;:") + "…"


class AlertView(Protocol):
    """What rendering reads from an alert (``alerts.AlertState`` fits; no import needed)."""

    @property
    def rule(self) -> str: ...
    @property
    def scope(self) -> str: ...
    @property
    def severity(self) -> str: ...
    @property
    def metric(self) -> str | None: ...
    @property
    def value(self) -> float | None: ...
    @property
    def baseline(self) -> float | None: ...
    @property
    def fired_at(self) -> datetime | None: ...
    @property
    def resolved_at(self) -> datetime | None: ...
    @property
    def summary(self) -> str: ...
    @property
    def details(self) -> Mapping[str, Any]: ...


@dataclass(frozen=True, slots=True)
class MessageContext:
    """Who the alert is about and how to show times (``zone``: the operator's time zone);
    ``variant`` is the one to name, or its label (None: the creator tracks only one)."""

    now: datetime
    creator: Creator | None = None
    variant: Variant | str | None = None
    zone: ZoneInfo = UTC_ZONE


@dataclass(frozen=True, slots=True)
class Message:
    title: str
    body: str  # Markdown
    error: str | None = None  # set when a user template failed and the built-in one was used


def format_change(metric: str | None, change: float | None) -> str:
    """A signed change in the metric's unit; a rate's change is in percentage points."""
    if change is None:
        return "n/a"
    if metric in DERIVED_METRICS:
        return f"{change * 100:+.2f} pp"
    sign = "+" if change > 0 else "-" if change < 0 else "±"
    return sign + format_value(metric, abs(change))


_SEVERITIES = {"zh": {"info": "提示", "warning": "警告", "critical": "严重"}}


def severity_label(severity: str, language: Language) -> str:
    """'critical' in the reader's language ('严重')."""
    return _SEVERITIES.get(language, {}).get(severity, severity)


def _local(at: datetime | None, zone: ZoneInfo) -> str | None:
    return None if at is None else labelled_time(at, zone)


def _creator(creator: Creator | None) -> dict[str, str] | None:
    if creator is None:
        return None
    return {
        "name": creator.name or creator.user_id,
        "user_id": creator.user_id,
        "url": creator.pgy_url,
    }


def _label(variant: Variant | str | None) -> str | None:
    return variant if variant is None or isinstance(variant, str) else variant.label


def alert_variables(
    event: str, alert: AlertView, context: MessageContext, language: Language
) -> dict[str, Any]:
    """Every documented variable of ``alert.*`` / ``account.*`` (see the module docstring)."""
    details = dict(alert.details)
    metric = alert.metric
    change_abs, change_pct = details.get("change_abs"), details.get("change_pct")
    pct_text = format_pct(change_pct)
    end = alert.resolved_at or context.now
    code = details.get("code")
    movement = f"{format_value(metric, alert.baseline)} → {format_value(metric, alert.value)}" + (
        "" if change_pct is None else f" ({pct_text})"
    )
    return {
        "event": event,
        "language": language,
        "rule": alert.rule,
        "kind": details.get("kind", ""),
        "severity": str(alert.severity),
        "severity_text": severity_label(str(alert.severity), language),
        "scope": alert.scope,
        "summary": alert.summary,
        "details": details,
        "metric": metric,
        "metric_label": METRIC_LABELS[language].get(metric or "", metric or ""),
        "value": alert.value,
        "baseline": alert.baseline,
        "change_abs": change_abs,
        "change_pct": change_pct,
        "value_text": format_value(metric, alert.value),
        "baseline_text": format_value(metric, alert.baseline),
        "change_abs_text": format_change(metric, change_abs),
        "change_pct_text": pct_text,
        "movement_text": movement,
        "headline": headline(event, alert, language, movement),
        "date": details.get("date"),
        "baseline_date": details.get("baseline_date"),
        "fired_at": _local(alert.fired_at, context.zone),
        "resolved_at": _local(alert.resolved_at, context.zone),
        "now": _local(context.now, context.zone),
        "firing_for": (
            None if alert.fired_at is None else human_duration(end - alert.fired_at, language)
        ),
        "creator": _creator(context.creator),
        "variant": _label(context.variant),
        "code": code,
        "code_text": CODE_TEXTS[language].get(code, "") if isinstance(code, int) else "",
        # rows stored before the flag: a change was on core_data (rolling medians)
        "rolling_median": bool(details.get("rolling_median", details.get("kind") == "change")),
        "note": note_variables(details, language),
        "balance": balance_variables(details, context.zone, resolved=event == "resolved"),
    }


class _Headed(Protocol):
    @property
    def metric(self) -> str | None: ...
    @property
    def value(self) -> float | None: ...
    @property
    def details(self) -> Mapping[str, Any]: ...


def headline(event: str, alert: _Headed, language: Language, movement: str) -> str | None:
    """The reading a title carries: the threshold crossed, or where the metric is back to; for
    an event, the note (a ``note`` rule: its reading, when it is judged); for the balance, the
    balance and days left."""
    details = alert.details
    kind = details.get("kind")
    if kind in EVENT_KINDS or kind == "balance":
        return event_headline(event, alert, language)
    metric = alert.metric
    if metric is None:
        return None
    label = METRIC_LABELS[language].get(metric, metric)
    clear = details.get("clear_value")
    threshold = details.get("threshold")
    if kind == "threshold" and threshold is not None:
        return _threshold_headline(event, alert, language, label, metric)
    if event == "resolved" and clear is not None:
        back = format_value(metric, clear)
        return f"{label} 回到 {back}" if language == "zh" else f"{label} back to {back}"
    return f"{label} {movement}"


def _threshold_headline(
    event: str, alert: _Headed, language: Language, label: str, metric: str
) -> str:
    details = alert.details
    limit = format_value(metric, details.get("threshold"))
    clear = details.get("clear_value")
    if event == "resolved" and clear is not None:
        back = format_value(metric, clear)
        negated = NEGATED_OPS.get(details.get("op", ""), "")
        if language == "zh":
            return f"{label} 回到 {back}（{negated} {limit}）"
        return f"{label} back to {back} ({negated} {limit})"
    note = "（阈值）" if language == "zh" else " (threshold)"
    return f"{label} {format_value(metric, alert.value)} {details.get('op')} {limit}{note}"


_GROUP_VERBS = {
    "en": {"firing": "FIRING", "repeat": "STILL FIRING", "resolved": "RESOLVED"},
    "zh": {"firing": "告警", "repeat": "持续告警", "resolved": "已恢复"},
}


def group_entry(
    event: str, alert: AlertView, context: MessageContext, language: Language
) -> dict[str, str]:
    """How this alert reads inside a grouped message: its one line, the group's title (``{n}``
    the number of entries) and the closing line (``{k}`` the entries left out, and the command
    that lists them all)."""
    variables = alert_variables(event, alert, context, language)
    creator = variables["creator"]
    who = creator["name"] if creator else alert.scope
    if variables["variant"]:
        who += f" [{variables['variant']}]"
    what = variables["headline"] or alert.summary
    verb = _GROUP_VERBS[language].get(event, event)
    command = "creator-monitor alerts" + ("" if event == "resolved" else " --open")
    note = variables["note"]
    if note is not None:
        return note_entry(str(variables["kind"]), who, what, note, alert.rule, language)
    if language == "zh":
        return {
            "line": f"{who}：{what}",
            "title": f"【{verb}】{alert.rule}：{{n}} 位达人",
            "more": f"……另有 {{k}} 位，全部列表：`{command}`",
        }
    return {
        "line": f"{who}: {what}",
        "title": f"[{verb}] {alert.rule}: {{n}} creators",
        "more": f"…and {{k}} more: `{command}` lists them all",
    }


@dataclass(frozen=True, slots=True)
class Mover:
    """One creator's move on one metric over the digest's period."""

    creator: Creator
    metric: str
    old: float
    new: float

    @property
    def change_pct(self) -> float | None:
        return None if self.old == 0 else (self.new - self.old) / self.old * 100


@dataclass(frozen=True, slots=True)
class AlertLine:
    rule: str
    scope: str
    severity: str
    summary: str
    at: datetime
    creator: Creator | None = None
    variant: str | None = None  # named only when the creator tracks several
    summaries: Mapping[str, str] = field(default_factory=dict)  # per language, where known


@dataclass(frozen=True, slots=True)
class FailingCreator:
    creator: Creator
    failures: int
    last_code: int | None = None
    last_success_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Digest:
    """A day's summary, assembled by the glue from the store."""

    day: date
    movers: tuple[Mover, ...] = ()
    fired: tuple[AlertLine, ...] = ()
    resolved: tuple[AlertLine, ...] = ()
    budget_used: int = 0
    daily_calls: int = 0
    failing: tuple[FailingCreator, ...] = ()
    top: int = 5  # movers shown per metric
    followers: tuple[FollowerMove, ...] = ()
    new_notes: tuple[NewNote, ...] = ()  # newest first seen first
    listed: int = 10  # follower moves and new notes shown
    #: the account's money at the newest balance reading (None: never read)
    balance: Decimal | None = None
    currency: str = "CNY"
    price_per_call: Decimal | None = None
    days_left: float | None = None


def top_movers(movers: Iterable[Mover], top: int) -> dict[str, list[Mover]]:
    """Per metric, the ``top`` largest moves by absolute percentage (undefined ones left out)."""
    grouped: dict[str, list[Mover]] = {}
    for mover in movers:
        if mover.change_pct is not None and mover.change_pct != 0:
            grouped.setdefault(mover.metric, []).append(mover)
    return {
        metric: sorted(rows, key=lambda m: -abs(m.change_pct or 0.0))[:top]
        for metric, rows in grouped.items()
    }


def digest_variables(digest: Digest, context: MessageContext, language: Language) -> dict[str, Any]:
    """Every documented variable of ``digest.*``."""

    def line(item: AlertLine) -> dict[str, Any]:
        name = item.creator.name or item.creator.user_id if item.creator else ""
        at = local_time(item.at, context.zone)  # the zone is named once, in the heading
        return {
            "rule": item.rule,
            "name": name,
            "scope": item.scope,
            "severity": item.severity,
            "severity_text": severity_label(item.severity, language),
            "summary": item.summaries.get(language, item.summary),
            "at": at,
            "variant": item.variant,
        }

    movers = [
        {
            "metric": metric,
            "label": METRIC_LABELS[language].get(metric, metric),
            "rows": [
                {
                    **(_creator(m.creator) or {}),
                    "old_text": format_value(metric, m.old),
                    "new_text": format_value(metric, m.new),
                    "change_pct_text": format_pct(m.change_pct),
                }
                for m in rows
            ],
        }
        for metric, rows in top_movers(digest.movers, digest.top).items()
    ]
    share = digest.budget_used / digest.daily_calls * 100 if digest.daily_calls else None
    moves = top_follower_moves(digest.followers)
    zone = context.zone
    return {
        "language": language,
        "zone": zone_name(context.zone),
        "day": digest.day.isoformat(),
        "movers": movers,
        "fired": [line(a) for a in digest.fired],
        "resolved": [line(a) for a in digest.resolved],
        "budget_used": f"{digest.budget_used:,}",
        "daily_calls": f"{digest.daily_calls:,}",
        "budget_pct_text": "n/a" if share is None else f"{share:.1f} %",
        "balance_text": format_money(digest.balance, digest.currency, missing="") or None,
        "price_text": format_money(digest.price_per_call, digest.currency, places=4, missing="")
        or None,
        "days_left_text": format_days(digest.days_left, missing="") or None,
        "failing": [
            {
                **(_creator(f.creator) or {}),
                "failures": f.failures,
                "last_code": f.last_code,
                "last_success_at": (
                    None
                    if f.last_success_at is None
                    else local_time(f.last_success_at, context.zone)
                ),
            }
            for f in digest.failing
        ],
        "followers": [follower_move_variables(f) for f in moves[: digest.listed]],
        "followers_more": max(0, len(moves) - digest.listed),
        "new_notes": [
            new_note_variables(n, zone, language) for n in digest.new_notes[: digest.listed]
        ],
        "new_notes_more": max(0, len(digest.new_notes) - digest.listed),
    }


__all__: list[str] = [
    "AlertLine",
    "AlertView",
    "Digest",
    "FailingCreator",
    "FollowerMove",
    "Message",
    "MessageContext",
    "Mover",
    "NewNote",
    "format_change",
    "format_pct",
    "format_value",
    "human_duration",
    "severity_label",
    "top_movers",
]
