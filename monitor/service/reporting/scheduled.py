"""Scheduled reports (``[[reports]]``): when each period ends, build the HTML report for its
scope, a text summary per channel, and queue them once (a claim in ``report_runs``).

Owns the cadence arithmetic (pure) and the glue to ``report`` and the store; sends nothing: the
notifier delivers the queued messages and attaches the stored HTML where a channel takes files.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from monitor.config import Config, ReportConfig
from monitor.model import METRIC_LABELS
from monitor.notify.message import Language, cut, format_pct, format_value
from monitor.notify.summary import describe
from monitor.service.reporting.report import ReportData, collect, render
from monitor.store import Store
from monitor.store.outbox import NewMessage

log = logging.getLogger(__name__)

_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
#: entries of each list in the summary before "and K more"
SUMMARY_ROWS = 5


@dataclass(frozen=True, slots=True)
class Period:
    """One period of a report: ``[start, end)`` in UTC; ``key`` names it in ``report_runs``."""

    start: datetime
    end: datetime
    key: str
    first_day: date  # local
    last_day: date  # local, inclusive


def _month_back(day: date, months: int, on: int) -> date:
    index = day.year * 12 + day.month - 1 - months
    return date(index // 12, index % 12 + 1, on)


def last_period(report: ReportConfig, now: datetime, zone: ZoneInfo) -> Period:
    """The newest period of ``report`` that has ended at ``now`` (PURE)."""
    local = now.astimezone(zone)
    today = local.date()

    def at(day: date) -> datetime:
        return datetime.combine(day, report.at, tzinfo=zone)

    if report.cadence == "daily":
        end_day = today if at(today) <= local else today - timedelta(days=1)
        start_day = end_day - timedelta(days=1)
    elif report.cadence == "weekly":
        back = (today.weekday() - _WEEKDAYS.index(report.weekday)) % 7
        end_day = today - timedelta(days=back)
        if at(end_day) > local:
            end_day -= timedelta(days=7)
        start_day = end_day - timedelta(days=7)
    else:
        end_day = _month_back(today, 0, report.day)
        if at(end_day) > local:
            end_day = _month_back(today, 1, report.day)
        start_day = _month_back(end_day, 1, report.day)
    return Period(
        start=at(start_day).astimezone(UTC),
        end=at(end_day).astimezone(UTC),
        key=f"{report.cadence}:{end_day.isoformat()}",
        first_day=start_day,
        last_day=end_day - timedelta(days=1),
    )


def in_scope(report: ReportConfig, config: Config) -> set[str]:
    """The user ids a report covers: its creators and tags; both empty: every creator."""
    if not report.creators and not report.tags:
        return {c.user_id for c in config.creators}
    return {
        c.user_id
        for c in config.creators
        if c.user_id in report.creators or set(report.tags) & set(c.tags)
    }


def scoped(data: ReportData, users: set[str]) -> ReportData:
    """The report's data limited to ``users`` (account-wide alerts stay)."""
    movers = None if data.all_movers is None else [m for m in data.all_movers if m.user_id in users]
    return replace(
        data,
        creators=[c for c in data.creators if c.user_id in users],
        alerts=[a for a in data.alerts if a.scope in users or a.scope == "account"],
        open_alerts=[a for a in data.open_alerts if a.scope in users or a.scope == "account"],
        all_movers=movers,
        new_notes=[n for n in data.new_notes if n.user_id in users],
    )


_TEXT = {
    "en": {
        "daily": "Daily report",
        "weekly": "Weekly report",
        "monthly": "Monthly report",
        "movers": "Top movers (latest point against a week before)",
        "alerts": "Alerts of the period",
        "budget": "Budget",
        "none": "none",
        "more": "…and {k} more",
        "calls": "{calls:,} calls used ({billed:,} billed) over {days} days; daily_calls {cap:,}",
        "attached": "The full report is attached: {file}",
        "title": "{what} {first} – {last}: {alerts} alerts, {calls:,} calls",
    },
    "zh": {
        "daily": "日报",
        "weekly": "周报",
        "monthly": "月报",
        "movers": "变化最大（最新数据对比一周前）",
        "alerts": "本期告警",
        "budget": "调用额度",
        "none": "无",
        "more": "……另有 {k} 条",
        "calls": "{days} 天共调用 {calls:,} 次（计费 {billed:,} 次）；每日上限 {cap:,}",
        "attached": "完整报告见附件：{file}",
        "title": "{what} {first} – {last}：告警 {alerts} 条，调用 {calls:,} 次",
    },
}


def summary(
    report: ReportConfig, period: Period, data: ReportData, language: Language, filename: str
) -> tuple[str, str]:
    """(title, Markdown body): top movers, alerts of the period, budget and calls used."""
    text = _TEXT[language]
    calls = sum(b.calls for b in data.budget)
    billed = sum(b.billed for b in data.budget)
    title = text["title"].format(
        what=text[report.cadence],
        first=period.first_day.isoformat(),
        last=period.last_day.isoformat(),
        alerts=len(data.alerts),
        calls=calls,
    )
    lines = [f"## {text['movers']}"]
    movers = data.movers
    for m in movers[:SUMMARY_ROWS]:
        label = METRIC_LABELS[language].get(m.metric, m.metric)
        lines.append(
            f"- {m.name or m.user_id} [{m.variant}] {label}: {format_value(m.metric, m.old)} → "
            f"{format_value(m.metric, m.new)} ({format_pct(m.pct)})"
        )
    lines += [] if movers else [f"- {text['none']}"]
    lines += ["", f"## {text['alerts']}"]
    for a in data.alerts[:SUMMARY_ROWS]:
        variant = f" [{a.variant}]" if a.variant and a.variants > 1 else ""
        said = cut(describe(a, language), 90)
        lines.append(f"- `{a.rule}` {a.name or a.scope}{variant} ({a.state}): {said}")
    if len(data.alerts) > SUMMARY_ROWS:
        lines.append(text["more"].format(k=len(data.alerts) - SUMMARY_ROWS))
    lines += [] if data.alerts else [f"- {text['none']}"]
    days = (period.last_day - period.first_day).days + 1
    cap = data.daily_calls
    lines += [
        "",
        f"## {text['budget']}",
        text["calls"].format(calls=calls, billed=billed, days=days, cap=cap),
    ]
    lines += ["", text["attached"].format(file=filename)]
    return title, "\n".join(lines) + "\n"


async def skip_ended_periods(
    reports: Sequence[ReportConfig], config: Config, store: Store, now: datetime, *, owner: str
) -> None:
    """``[[reports]]`` entries a reload just added: the period that ended before they existed
    is marked done without a report (no HTML, no message), so their first report is for the
    first period that ends after they were added. A start-up still catches up the period it
    missed while it was down."""
    for report in reports:
        period = last_period(report, now, config.budget.zone)
        claimed = await store.claim_report(
            report.name, period.key, html="", messages=(), owner=owner, now=now
        )
        if claimed:
            log.info(
                "report %s added: its first report is for the period after %s",
                report.name,
                period.key,
            )


async def queue_due_reports(config: Config, store: Store, now: datetime, *, owner: str) -> int:
    """Build and queue each report whose newest period is not sent yet; returns how many."""
    queued = 0
    zone = config.budget.zone
    for report in config.reports:
        period = last_period(report, now, zone)
        if await store.report_sent(report.name, period.key):
            continue
        data = await collect(  # the period's own days: points, alerts and calls alike
            store,
            since=period.first_day,
            until=period.last_day,
            now=now,
            daily_calls=config.budget.daily_calls,
            zone=zone,
        )
        data = scoped(data, in_scope(report, config))
        html = render(data)
        filename = f"report-{report.name}-{period.key.replace(':', '-')}.html"
        messages = []
        for channel in config.channels:
            if report.channels is not None and channel.name not in report.channels:
                continue
            language: Language = report.language or channel.language or config.notify.language
            title, body = summary(report, period, data, language, filename)
            messages.append(
                NewMessage(
                    channel=channel.name,
                    event="report",
                    severity="info",
                    title=title,
                    body=body,
                    attachment={"report": report.name, "period": period.key, "filename": filename},
                )
            )
        claimed = await store.claim_report(
            report.name, period.key, html=html, messages=messages, owner=owner, now=now
        )
        if claimed:
            log.info(
                "report %s for %s queued for %d channels", report.name, period.key, len(messages)
            )
            queued += 1
    return queued
