"""Terminal output of the commands: tables (status, instances, alerts, silences, a backtest,
what a fetch did), progress and one-line errors. A creator's history, its CSV and JSON, and the
export stream are in ``history_output``. Formats only; no I/O but the stream it is handed.
"""

from __future__ import annotations

import functools
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, TextIO
from zoneinfo import ZoneInfo

from monitor.display import (
    ROLLING_NOTE,
    format_age,
    format_days,
    format_duration,
    format_money,
    format_number,
    labelled_time,
    local_time,
    pad,
    text_width,
    with_zone,
)
from monitor.errors import MonitorError
from monitor.notify.message import cut
from monitor.notify.summary import describe
from monitor.policy.budget_state import (
    ACCOUNT_CODES,
    INSUFFICIENT_BALANCE,
    QUOTA_EXCEEDED,
    RATE_LIMITED,
)

UTC_ZONE = ZoneInfo("UTC")


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return f"{value:,.2f}"
    if isinstance(value, int):
        return format_number(value)
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M")
    return str(value)


@functools.cache
def _class_names() -> re.Pattern[str]:
    """``TransportError: `` and the like: our exception class names, as a prefix to drop."""
    found: set[str] = set()
    todo: list[type[BaseException]] = [MonitorError]
    while todo:
        cls = todo.pop()
        found.add(cls.__name__)
        todo += cls.__subclasses__()
    names = "|".join(sorted(map(re.escape, found), key=len, reverse=True))
    return re.compile(rf"\b(?:{names}): ")


def plain_error(text: str) -> str:
    """An error as a user reads it: without our exception class names (an upstream error's
    text, as stored in the database, starts with its class's name)."""
    return _class_names().sub("", text)


def variant_of(alert: Any) -> str:
    """The variant an alert is about, when its creator tracks several (else '-')."""
    return alert.variant if alert.variant and alert.variants > 1 else "-"


def _numeric(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def table(
    headers: Sequence[str],
    rows: Iterable[Sequence[object]],
    out: TextIO,
    right: Iterable[int] = (),
) -> None:
    """Plain aligned columns: numbers (and the columns ``right`` names) to the right, text to the
    left; wide (CJK) characters count as the two columns a terminal gives them."""
    to_right = set(right)
    raw = [list(row) for row in rows]
    cells = [[_cell(v) for v in row] for row in raw]
    widths = [
        max([text_width(h)] + [text_width(r[i]) for r in cells]) for i, h in enumerate(headers)
    ]
    out.write("  ".join(pad(h, w) for h, w in zip(headers, widths, strict=True)).rstrip() + "\n")
    for values, row in zip(raw, cells, strict=True):
        out.write(
            "  ".join(
                pad(c, w, right=_numeric(v) or i in to_right)
                for i, (v, c, w) in enumerate(zip(values, row, widths, strict=True))
            ).rstrip()
            + "\n"
        )


def print_status(
    rows: Sequence[Any],
    reading: Any,
    counts: Mapping[str, int],
    open_alerts: Sequence[Any],
    now: datetime,
    out: TextIO,
    unanswered: tuple[int, datetime | None] = (0, None),
    zone: ZoneInfo = UTC_ZONE,
    held: tuple[int, str] | None = None,
    unreadable: int = 0,
    funds: Any = None,
    balance_every: timedelta | None = None,
) -> None:
    """A table of creators, then one of the account: budget, money, holds, upstream, outbox, and
    the paid answers kept because this version could not read them."""
    open_by_scope: dict[str, int] = {}
    open_by_series: dict[tuple[str, str], int] = {}
    for alert in open_alerts:
        open_by_scope[alert.scope] = open_by_scope.get(alert.scope, 0) + 1
        series = (alert.scope, alert.variant)
        open_by_series[series] = open_by_series.get(series, 0) + 1
    out.write("creators\n")
    table(
        (
            "creator",
            "name",
            "variant",
            "last success",
            "next due",
            "failures",
            "open alerts",
            "rows",
            "last error",
        ),
        (
            [
                r.user_id,
                r.name,
                r.variant.label if r.variant else "-",
                format_age(r.last_success_at, now),
                format_age(r.next_due_at, now) if r.next_due_at else "-",
                f"{r.consecutive_failures}{' BROKEN' if r.broken_at else ''}",
                # per variant: the row's own alerts, plus any kept for the creator as a whole
                open_by_series.get((r.user_id, r.variant.label if r.variant else ""), 0)
                + (open_by_series.get((r.user_id, ""), 0) if r.variant else 0),
                r.rows_stored,
                cut(plain_error(r.last_error or "-"), 40),
            ]
            for r in rows
        ),
        out,
    )
    pct = 100 * reading.calls_today / reading.daily_calls if reading.daily_calls else 0.0
    out.write("\naccount\n")
    table(
        ("what", "value"),
        [
            [
                f"budget used today ({reading.day})",
                f"{reading.calls_today:,} of {reading.daily_calls:,} calls ({pct:.1f} %), "
                f"{reading.billed_today:,} billed",
            ],
            *_funds(funds, balance_every, now, zone),
            *(_holds(reading, held, now, zone, balance_every) or [["paused", "no"]]),
            ["upstream", _reach(unanswered, zone)],
            ["rate", f"x{reading.rate_factor:.2f} of calls_per_minute"],
            [
                "outbox depth",
                f"{counts.get('pending', 0):,} pending, {counts.get('sent', 0):,} sent",
            ],
            [
                "dead letters",
                f"{counts.get('dead', 0):,}"
                + (" (`creator-monitor notify retry`)" if counts.get("dead") else ""),
            ],
            ["open account alerts", f"{open_by_scope.get('account', 0):,}"],
            *(
                [
                    [
                        "unreadable answers",
                        f"{unreadable:,} paid answers kept whole, unread by this version "
                        "(`creator-monitor reparse` after an upgrade)",
                    ]
                ]
                if unreadable
                else []
            ),
        ],
        out,
    )


def _funds(
    funds: Any, balance_every: timedelta | None, now: datetime, zone: ZoneInfo
) -> list[list[str]]:
    """The account's money: the balance and when it was read, the derived price per billed
    call, and the days the balance lasts at the plan (``policy.spend.Funds``)."""
    if funds is None:
        return []
    if funds.balance is None:
        why = (
            'not read (account.balance_every = "off")'
            if balance_every is None
            else f"not read yet (the daemon reads it every {format_duration(balance_every)})"
        )
        return [["balance", why]]
    price = (
        f"{format_money(funds.price, funds.currency, places=4)} (derived from "
        f"{funds.readings:,} readings and the billed calls between them)"
        if funds.price is not None
        else "not known yet (it takes two readings with billed calls between them)"
    )
    days = format_days(funds.days_left)
    if funds.days_left is not None:
        days += f" at {funds.calls_per_day:,.0f} billed calls/day (the plan)"
    read = f"{labelled_time(funds.read_at, zone)}, {format_age(funds.read_at, now)}"
    return [
        ["balance", f"{format_money(funds.balance, funds.currency)} (read {read})"],
        ["price per call", price],
        ["days left", days],
    ]


def _holds(
    reading: Any,
    held: tuple[int, str] | None,
    now: datetime,
    zone: ZoneInfo,
    balance_every: timedelta | None = None,
) -> list[list[str]]:
    """One row per hold that keeps calls from going, each with when it ends."""
    rows: list[list[str]] = []
    code, until = reading.pause_code, reading.paused_until
    reason = reading.pause_reason or f"code {code}"
    when = labelled_time(until, zone, missing="")
    if code in ACCOUNT_CODES:
        probe = f"the next probe at {when}" if until and until > now else "a probe is due now"
        ends = f"{reason}; ends at the first normal answer ({probe})"
        if code == INSUFFICIENT_BALANCE and balance_every is not None:
            ends += " or balance reading that shows money (read every minute meanwhile)"
        rows.append(["hold: account", ends])
    elif code == QUOTA_EXCEEDED and until is not None and until > now:
        rows.append(["hold: quota", f"{reason}; until {when}"])
    elif code == RATE_LIMITED and until is not None and until > now:
        rows.append(["hold: rate limit", f"{reason}; every call waits until {when}"])
    if held is not None:
        count, where = held
        rows.append(
            [
                "hold: store",
                f"the database refused writes: {count:,} paid answers wait in {where}; no call "
                "goes until they are stored (the next fetch or run stores them)",
            ]
        )
    return rows


def _reach(unanswered: tuple[int, datetime | None], zone: ZoneInfo) -> str:
    """The upstream as the latest calls found it: answering, or unreachable since when."""
    from monitor.app import UNREACHABLE_AFTER  # the fetch path: not for ``--help``

    count, since = unanswered
    if count < UNREACHABLE_AFTER or since is None:
        return "answering"
    return (
        f"UNREACHABLE: the last {count} calls got no answer (since {labelled_time(since, zone)}); "
        "check api.base_url, the network and proxy settings"
    )


def print_instances(instances: Sequence[Any], now: datetime, out: TextIO) -> None:
    """The running daemons sharing this database (heartbeat, version, leases held)."""
    if not instances:
        out.write("\nno daemon is running on this database\n")
        return
    out.write("\ninstances\n")
    table(
        ("instance", "host", "pid", "version", "started", "heartbeat", "leases"),
        (
            [
                i.id,
                i.host,
                str(i.pid),  # an id, not a quantity: no thousands separator
                i.version,
                format_age(i.started_at, now),
                format_age(i.heartbeat_at, now),
                i.leases,
            ]
            for i in instances
        ),
        out,
        right=(2,),
    )


def progress(total: int | None, what: str) -> Any:
    """A progress bar on stderr, silent when stderr is not a terminal (logs, pipes, cron)."""
    from tqdm import tqdm

    return tqdm(
        total=total,
        desc=what,
        unit=" rows" if what == "export" else "",
        file=sys.stderr,
        disable=not sys.stderr.isatty(),
        leave=False,
        dynamic_ncols=True,
    )


def print_fetched(
    slots: Sequence[Any], calls: int, planned: int, stopped: str | None, out: TextIO
) -> None:
    """What ``fetch --all`` did, one row per series, then the totals."""
    table(
        ("creator", "name", "variant", "result"),
        (
            [
                s.creator.user_id,
                s.creator.name,
                s.variant.label,
                "ok"
                if not s.consecutive_failures
                else cut(plain_error(s.last_error or "failed"), 60),
            ]
            for s in slots
        ),
        out,
    )
    ok = sum(1 for s in slots if not s.consecutive_failures)
    out.write(f"\n{ok} of {planned} series fetched with {calls} calls\n")
    if stopped:
        out.write(f"stopped early: {stopped}\n")


def print_backtest(lines: Sequence[Any], out: TextIO, rolling: Iterable[str] = ()) -> None:
    """The events a backtest found; ``rolling``: the rules whose values are rolling medians
    (the note saying so comes once, below the table)."""
    table(
        ("when", "rule", "creator", "event", "summary"),
        ([x.when, x.rule, x.scope, x.event, cut(str(x.summary), 80)] for x in lines),
        out,
    )
    events: dict[str, int] = {}
    for line in lines:
        events[str(line.event)] = events.get(str(line.event), 0) + 1
    totals = ", ".join(f"{n} {event}" for event, n in sorted(events.items())) or "nothing"
    out.write(f"\n{len(lines)} events ({totals}); nothing was sent\n")
    if set(rolling) & {str(line.rule) for line in lines}:
        out.write(f"{ROLLING_NOTE['en']}\n")


def print_alerts(
    rows: Sequence[Any], counts: Mapping[str, int], zone: ZoneInfo, out: TextIO
) -> None:
    """Alerts with their times in ``zone`` (named once, in the headers) and, when any summary
    is about rolling medians, the note saying so once below the table."""
    table(
        (
            "id",
            "rule",
            "creator",
            "name",
            "variant",
            "severity",
            "state",
            with_zone("fired", zone),
            with_zone("resolved", zone),
            "summary",
        ),
        (
            [
                a.id,
                a.rule,
                a.scope,
                a.name,
                variant_of(a),
                a.severity,
                a.state,
                local_time(a.fired_at, zone),
                local_time(a.resolved_at, zone),
                cut(describe(a, "en"), 60),
            ]
            for a in rows
        ),
        out,
    )
    if any(getattr(a, "rolling_median", False) for a in rows):
        out.write(f"\n{ROLLING_NOTE['en']}\n")
    if counts.get("dead"):
        out.write(f"\n{counts['dead']} dead-lettered messages: `creator-monitor notify retry`\n")


def print_silences(rows: Sequence[Any], zone: ZoneInfo, out: TextIO) -> None:
    table(
        ("id", "creator", "rule", "tag", with_zone("until", zone), "reason"),
        ([s.id, s.user_id, s.rule, s.tag, local_time(s.ends_at, zone), s.reason] for s in rows),
        out,
    )
