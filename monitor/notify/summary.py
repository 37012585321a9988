"""PURE: an alert's one-line summary and severity in the reader's language, from the numbers
the alert row stores, with the metric labels and number format every surface shares (console,
CLI, report). The stored English summary is the fallback for a kind not known here. Leaves the
rolling-median note to the surface, which says it once beside a list.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from typing import Any, Protocol

from monitor.display import format_value, metric_label
from monitor.notify.event_text import event_headline, note_variables
from monitor.notify.message import (
    ACCOUNT_SCOPE,
    CODE_TEXTS,
    Language,
    format_pct,
    headline,
    human_duration,
    severity_label,
)

__all__ = ["Described", "describe", "severity_label"]


class Described(Protocol):
    """What ``describe`` reads from an alert row (the console's and the CLI's rows fit)."""

    @property
    def scope(self) -> str: ...
    @property
    def state(self) -> str: ...
    @property
    def metric(self) -> str | None: ...
    @property
    def value(self) -> float | None: ...
    @property
    def baseline(self) -> float | None: ...
    @property
    def summary(self) -> str: ...
    @property
    def details(self) -> Mapping[str, Any]: ...


@dataclass(frozen=True, slots=True)
class _Reading:
    """Just what ``headline`` reads, from a stored alert row."""

    metric: str
    value: float | None
    details: Mapping[str, Any]


def _on_day(text: str | None, day: str | None, zh: bool) -> str:
    if not day:
        return str(text)
    return f"{text}（{day}）" if zh else f"{text} on {day}"


def _threshold(alert: Described, language: Language) -> str | None:
    if alert.metric is None:
        return None
    reading = _Reading(alert.metric, alert.value, alert.details)
    text = headline("firing", reading, language, "")
    return _on_day(text, alert.details.get("date"), language == "zh")


def _change(alert: Described, language: Language) -> str | None:
    if alert.metric is None:
        return None
    details, shown = alert.details, partial(format_value, alert.metric)
    moved = f"{metric_label(alert.metric, language)} {shown(alert.baseline)} → {shown(alert.value)}"
    pct = details.get("change_pct")
    since, until = details.get("baseline_date"), details.get("date")
    if language == "zh":
        moved += "" if pct is None else f"（{format_pct(pct)}）"
        return moved + (f"，{since} 至 {until}" if since and until else "")
    moved += "" if pct is None else f" ({format_pct(pct)})"
    return moved + (f" from {since} to {until}" if since and until else "")


def _anomaly(alert: Described, language: Language) -> str | None:
    if alert.metric is None:
        return None
    label, shown = metric_label(alert.metric, language), partial(format_value, alert.metric)
    score = float(alert.details.get("score") or 0.0)
    if language == "zh":
        return (
            f"{label} {shown(alert.value)} 偏离中位数 {shown(alert.baseline)} "
            f"{score:+.1f} 个稳健标准差"
        )
    return (
        f"{label} {shown(alert.value)} is {score:+.1f} robust deviations from the median "
        f"{shown(alert.baseline)}"
    )


def _stale(alert: Described, language: Language) -> str | None:
    age_s = alert.details.get("age_s")
    if age_s is None:
        return None
    age = human_duration(timedelta(seconds=float(age_s)), language)
    return f"已 {age} 没有新数据" if language == "zh" else f"no fresh data for {age}"


def _budget(alert: Described, language: Language) -> str | None:
    if alert.value is None or not alert.baseline:
        return None
    used, daily = format_value(None, alert.value), format_value(None, alert.baseline)
    share = f"{alert.value / alert.baseline * 100:.1f} %"
    if language == "zh":
        return f"每日调用已用 {used} / {daily}（{share}）"
    return f"{used} of {daily} daily calls used ({share})"


def _api_error(alert: Described, language: Language) -> str | None:
    code = alert.details.get("code")
    zh = language == "zh"
    if alert.scope == ACCOUNT_SCOPE:
        if alert.state == "resolved" or code is None:
            return "账户调用已恢复" if zh else "account calls resumed"
        text = CODE_TEXTS[language].get(code, "") if isinstance(code, int) else ""
        if not text:
            return f"账户级错误 {code}" if zh else None
        if zh:
            return f"账户级错误 {code}（{text}）：所有调用已暂停"
        return f"account-wide error {code} ({text}): all calls paused"
    failures = alert.details.get("consecutive_failures")
    shown = code if code is not None else ("无" if zh else "n/a")
    if zh:
        return f"最近错误码 {shown}，连续失败 {failures} 次"
    return f"last code {shown}, {failures} consecutive failures"


def _note_event(alert: Described, language: Language) -> str | None:
    text = event_headline("firing", alert, language)
    note = note_variables(alert.details, language)
    if text is None or note is None:
        return None
    zh = language == "zh"
    if alert.details.get("kind") == "new_note":
        return f"新笔记 {text}" if zh else f"new note {text}"
    return f"{text}：{note['text']}" if zh else f"{text}: {note['text']}"


def _balance(alert: Described, language: Language) -> str | None:
    return event_headline("resolved" if alert.state == "resolved" else "firing", alert, language)


_KINDS: dict[str, Callable[[Described, Language], str | None]] = {
    "new_note": _note_event,
    "note": _note_event,
    "balance": _balance,
    "threshold": _threshold,
    "change": _change,
    "anomaly": _anomaly,
    "stale": _stale,
    "budget": _budget,
    "api_error": _api_error,
}


def describe(alert: Described, language: Language) -> str:
    """An alert's one-line summary in ``language`` (see the module docstring)."""
    details = alert.details
    if alert.state == "resolved" and details.get("clear_value") is not None and alert.metric:
        reading = _Reading(alert.metric, alert.value, details)
        text = headline("resolved", reading, language, "")
        return _on_day(text, details.get("clear_date"), language == "zh")
    kind = _KINDS.get(str(details.get("kind")))
    found = None if kind is None else kind(alert, language)
    return alert.summary if found is None else found
