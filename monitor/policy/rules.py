"""PURE rule evaluation: one rule and one subject (a creator's series, or the account) in, one
Outcome (FIRING with a Finding, CLEAR, or UNKNOWN) out; a note rule gives one per note
(``outcomes``, with ``events.py``). No I/O, no clock (``now`` is in the subject), no database,
no asyncio; the alert lifecycle lives in ``lifecycle.py``.

Which series a rule reads: ``metric = "fans"`` the creator's follower series (the ``fans``
source), another metric a core_data variant, ``new_note``/``note`` the note list (``notes``);
``stale`` and ``api_error`` any series; ``budget`` and ``balance`` the account.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from functools import partial
from typing import Any

from monitor.config import (
    AnomalyRule,
    ApiErrorRule,
    BalanceRule,
    BudgetRule,
    ChangeRule,
    NewNoteRule,
    NoteRule,
    Rule,
    StaleRule,
    ThresholdRule,
)
from monitor.display import format_money, format_number, format_value, metric_label
from monitor.model import (
    CORE,
    EVENT_KINDS,
    FANS,
    FOLLOWER_METRIC,
    NEGATED_OPS,
    NOTES,
    OPS,
    Creator,
    Finding,
    NoteRecord,
    Outcome,
    SeriesPoint,
    Variant,
    Verdict,
)
from monitor.policy import events

__all__ = [
    "ACCOUNT_SCOPE",
    "ACCOUNT_WIDE_CODES",
    "UNREADABLE_CODE",
    "AccountSubject",
    "Finding",
    "Outcome",
    "Subject",
    "Verdict",
    "evaluate",
    "in_scope",
    "inhibit",
    "outcomes",
    "source_of",
]

#: codes that block the whole account; they yield one account-scope finding, never one per creator
ACCOUNT_WIDE_CODES: frozenset[int] = frozenset({100, 303, 600, 601, 602})
ACCOUNT_SCOPE = "account"
#: the code an ``api_error`` rule names for a paid answer this version could not read (the
#: upstream's own success code: on a failed call it can mean nothing else)
UNREADABLE_CODE = 0
#: MAD → standard deviation of a normal distribution
MAD_SCALE = 1.4826
#: mean absolute deviation → standard deviation, the fallback when more than half the window ties
MEAN_AD_SCALE = 1.2533
#: when the whole window is one value, a deviation is measured against 1 % of it (at least 1 unit)
FLAT_SCALE_SHARE = 0.01


@dataclass(frozen=True, slots=True)
class Subject:
    """What a creator-scope rule sees for one creator and series at ``now`` (UTC, aware).

    ``series``: a core variant's daily points, or the follower counts of the ``fans`` series;
    ``notes``: on the ``notes`` series, the stored notes the note rules may speak of, and
    ``notes_since`` the creator's first note-list visit (its notes are the baseline)."""

    creator: Creator
    variant: Variant
    series: tuple[SeriesPoint, ...]  # ascending by date_key
    now: datetime
    last_success_at: datetime | None = None
    consecutive_failures: int = 0
    last_code: int | None = None  # code of the newest attempt (0 = success, None = never tried)
    recent_codes: tuple[int, ...] = ()  # newest last
    tracked_since: datetime | None = None  # a stale rule's clock when nothing succeeded yet
    notes: tuple[NoteRecord, ...] = ()
    notes_since: datetime | None = None


@dataclass(frozen=True, slots=True)
class AccountSubject:
    """What an account-scope rule sees: today's budget and the current account-wide pause."""

    now: datetime
    used_today: int
    daily_calls: int
    pause_code: int | None = None  # 100/303/600/601/602 while every call is paused
    pause_reason: str | None = None
    paused_since: datetime | None = None
    #: the newest balance reading (None: never read, or ``[account] balance_every = "off"``)
    balance: Decimal | None = None
    balance_read_at: datetime | None = None
    #: what one billed call costs, derived from readings and billed calls between them
    price_per_call: Decimal | None = None
    #: days until the money runs out at the current plan (None: no spend rate known yet)
    days_left: float | None = None


def _scope(subject: Subject | AccountSubject) -> str:
    return subject.creator.user_id if isinstance(subject, Subject) else ACCOUNT_SCOPE


def _unknown(subject: Subject | AccountSubject, reason: str) -> Outcome:
    return Outcome(Verdict.UNKNOWN, _scope(subject), reason=reason)


def _decide(subject: Subject | AccountSubject, fires: bool, finding: Finding) -> Outcome:
    verdict = Verdict.FIRING if fires else Verdict.CLEAR
    return Outcome(verdict, _scope(subject), finding=finding)


def source_of(rule: Rule) -> str | None:
    """The source whose series ``rule`` reads (None: any series, or the account)."""
    if isinstance(rule, NewNoteRule | NoteRule):
        return NOTES
    if isinstance(rule, ThresholdRule | ChangeRule | AnomalyRule):
        return FANS if rule.metric == FOLLOWER_METRIC else CORE
    return None


def in_scope(rule: Rule, subject: Subject | AccountSubject) -> bool:
    """Whether ``rule`` is evaluated for ``subject`` at all.

    budget and balance are account-only; api_error is both (per series, and once for the
    account); the rest are per creator, limited by the rule's ``creators``/``tags`` and to the
    series of the source they read (``source_of``).
    """
    if isinstance(subject, AccountSubject):
        return isinstance(rule, BudgetRule | ApiErrorRule | BalanceRule)
    if isinstance(rule, BudgetRule | BalanceRule) or not rule.applies_to(subject.creator):
        return False
    source = source_of(rule)
    return source is None or source == subject.variant.source


def evaluate(rule: Rule, subject: Subject | AccountSubject) -> Outcome:
    """Evaluate one rule; a subject out of the rule's scope is UNKNOWN (state left as it is),
    and so is a note rule's: it gives one outcome per note (``outcomes``)."""
    if not in_scope(rule, subject):
        return _unknown(subject, "out of scope")
    if isinstance(subject, AccountSubject):
        if isinstance(rule, BudgetRule):
            return _budget(rule, subject)
        if isinstance(rule, BalanceRule):
            return _balance(rule, subject)
        assert isinstance(rule, ApiErrorRule)
        return _account_error(rule, subject)
    if rule.kind in EVENT_KINDS:
        return _unknown(subject, f"a {rule.kind} rule speaks per note")
    return _CREATOR_KINDS[rule.kind](rule, subject)


def outcomes(rule: Rule, subject: Subject) -> list[tuple[str, Outcome]]:
    """(alert variant, outcome) of each alert ``rule`` speaks of on ``subject``: its series'
    (``Variant.label``), or, for a note rule, each note it judges (``note:<noteId>``, notes it
    has nothing to say about left out). Empty when the subject is out of scope."""
    if not in_scope(rule, subject):
        return []
    scope = subject.creator.user_id
    if isinstance(rule, NewNoteRule):
        return events.new_note_outcomes(
            rule, subject.notes, subject.notes_since, subject.now, scope
        )
    if isinstance(rule, NoteRule):
        return events.note_outcomes(rule, subject.notes, subject.now, scope)
    return [(subject.variant.label, evaluate(rule, subject))]


def inhibit(rule: Rule, outcome: Outcome, subject: Subject, account: AccountSubject) -> Outcome:
    """The one place of inhibition: a creator's FIRING finding the account alert already speaks
    for becomes UNKNOWN (the creator's alert, if any, is left as it was). Call it after updating
    the account's pause state.

    - an api_error finding on an account-wide code (100/303/600/601/602): the account alert
      says it once for everyone, during the pause and after it;
    - a stale finding while the account is paused: nothing can be fetched, so nothing is fresh.
    """
    if not outcome.firing:
        return outcome
    if isinstance(rule, ApiErrorRule) and subject.last_code in ACCOUNT_WIDE_CODES:
        if account.pause_code is not None:
            reason = f"inhibited by the account-wide error {account.pause_code}"
        else:
            reason = f"code {subject.last_code} is account-wide: the account alert speaks for it"
    elif isinstance(rule, StaleRule) and account.pause_code is not None:
        reason = f"nothing can be fetched while the account is paused ({account.pause_code})"
    else:
        return outcome
    return Outcome(Verdict.UNKNOWN, outcome.scope, reason=reason)


def _threshold(rule: ThresholdRule, subject: Subject) -> Outcome:
    if not subject.series:
        return _unknown(subject, "no data")
    newest = subject.series[-1]
    value = newest.value(rule.metric)
    if value is None:
        return _unknown(subject, f"{rule.metric} not available on {newest.date_key}")
    previous = subject.series[-2] if len(subject.series) > 1 else None
    old = previous.value(rule.metric) if previous else None
    fires = OPS[rule.op](value, rule.value)
    label, shown = metric_label(rule.metric), partial(format_value, rule.metric)
    if fires:
        summary = f"{label} {shown(value)} {rule.op} {shown(rule.value)} (threshold)"
    else:
        summary = f"{label} back to {shown(value)} ({NEGATED_OPS[rule.op]} {shown(rule.value)})"
    finding = Finding(
        summary=f"{summary} on {newest.date_key}",
        metric=rule.metric,
        value=value,
        baseline=old,
        change_abs=None if old is None else value - old,
        change_pct=None if not old else (value - old) / old * 100,
        newest_date=newest.date_key,
        baseline_date=previous.date_key if previous else None,
        details={
            "kind": "threshold",
            "op": rule.op,
            "threshold": rule.value,
            "rolling_median": rule.metric != FOLLOWER_METRIC,
        },
    )
    return _decide(subject, fires, finding)


def _baseline_point(rule: ChangeRule, series: tuple[SeriesPoint, ...]) -> SeriesPoint | None:
    newest = series[-1]
    if rule.baseline == "previous":
        return series[-2] if len(series) > 1 else None
    assert isinstance(rule.baseline, timedelta)
    # the series is daily: a sub-day remainder rounds up to a whole day back
    days = max(1, math.ceil(rule.baseline.total_seconds() / 86400))
    target = newest.date_key - timedelta(days=days)
    earlier = [p for p in series if p.date_key <= target]
    return earlier[-1] if earlier else None


def _days(delta: timedelta) -> str:
    return f"{delta.total_seconds() / 86400:g}d"


def _change(rule: ChangeRule, subject: Subject) -> Outcome:
    if not subject.series:
        return _unknown(subject, "no data")
    newest = subject.series[-1]
    base = _baseline_point(rule, subject.series)
    if base is None:
        return _unknown(subject, "no baseline point in the stored series")
    new, old = newest.value(rule.metric), base.value(rule.metric)
    if new is None or old is None:
        return _unknown(subject, f"{rule.metric} missing on {base.date_key} or {newest.date_key}")
    if rule.pct is not None and old == 0:
        return _unknown(subject, f"{rule.metric} baseline is 0; a percentage is undefined")
    change_abs = new - old
    change_pct = None if old == 0 else change_abs / old * 100
    limit = rule.pct if rule.pct is not None else rule.abs_
    measured = change_pct if rule.pct is not None else change_abs
    assert limit is not None
    assert measured is not None
    # round away float noise so that exactly -30 % meets pct = -30
    measured = round(measured, 9)
    fires = measured <= limit if limit < 0 else measured >= limit
    pct_text = "" if change_pct is None else f" ({change_pct:+.1f} %)"
    shown = partial(format_value, rule.metric)
    finding = Finding(
        # the rolling-median note is the surfaces' to say once (details["rolling_median"])
        summary=(
            f"{metric_label(rule.metric)} {shown(old)} → {shown(new)}{pct_text} "
            f"from {base.date_key} to {newest.date_key}"
        ),
        metric=rule.metric,
        value=new,
        baseline=old,
        change_abs=change_abs,
        change_pct=change_pct,
        newest_date=newest.date_key,
        baseline_date=base.date_key,
        details={
            "kind": "change",
            "baseline": rule.baseline if rule.baseline == "previous" else _days(rule.baseline),
            "limit": limit,
            "unit": "pct" if rule.pct is not None else "abs",
            # follower counts are daily totals; core_data's values are rolling medians
            "rolling_median": rule.metric != FOLLOWER_METRIC,
        },
    )
    return _decide(subject, fires, finding)


def _stale(rule: StaleRule, subject: Subject) -> Outcome:
    since = subject.last_success_at or subject.tracked_since
    if since is None:
        return _unknown(subject, "never fetched and no tracking start known")
    age = subject.now - since
    what = "last success" if subject.last_success_at else "tracked since"
    finding = Finding(
        summary=f"no fresh data for {age} ({what} {since.isoformat()})",
        details={
            "kind": "stale",
            "age_s": age.total_seconds(),
            "after_s": rule.after.total_seconds(),
            "last_success_at": None if subject.last_success_at is None else since.isoformat(),
        },
    )
    return _decide(subject, age >= rule.after, finding)


def _api_error(rule: ApiErrorRule, subject: Subject) -> Outcome:
    failures = subject.consecutive_failures
    # code 0 on a failed call: paid for, but this version could not read it (kept for reparse);
    # ``codes = [0]`` matches exactly that, never a success
    unreadable = subject.last_code == UNREADABLE_CODE and failures > 0
    by_code = (
        subject.last_code is not None
        and subject.last_code in rule.codes
        and (subject.last_code != UNREADABLE_CODE or unreadable)
    )
    by_count = rule.consecutive is not None and failures >= rule.consecutive
    last = "got no answer" if subject.last_code is None else f"answered code {subject.last_code}"
    if unreadable:
        last = (
            "was paid for (code 0) but could not be read by this version; the answer is kept "
            "whole for `creator-monitor reparse`"
        )
    finding = Finding(
        summary=(
            f"{failures} consecutive failed call{'s' if failures != 1 else ''}, the last {last}"
            if failures
            else "calls succeed"
        ),
        details={
            "kind": "api_error",
            "code": subject.last_code,
            "unreadable": unreadable,
            "consecutive_failures": subject.consecutive_failures,
            "recent_codes": list(subject.recent_codes),
        },
    )
    return _decide(subject, by_code or by_count, finding)


def _account_error(rule: ApiErrorRule, subject: AccountSubject) -> Outcome:
    code = subject.pause_code
    fires = code is not None and code in ACCOUNT_WIDE_CODES and code in rule.codes
    since = subject.paused_since.isoformat() if subject.paused_since else None
    summary = f"account-wide error {code}: all calls paused" if fires else "account calls resumed"
    finding = Finding(
        summary=summary,
        details={
            "kind": "api_error",
            "code": code,
            "reason": subject.pause_reason,
            "paused_since": since,
        },
    )
    return _decide(subject, fires, finding)


def _robust_scale(values: list[float], center: float) -> float:
    """MAD * 1.4826; if over half the window ties, the mean absolute deviation * 1.2533; if the
    window is flat, 1 % of the median (at least 1 unit), so that a flat series is not an alarm on
    every wobble yet a real jump still stands out.
    """
    deviations = [abs(v - center) for v in values]
    mad = statistics.median(deviations) * MAD_SCALE
    if mad > 0:
        return mad
    mean_ad = statistics.fmean(deviations) * MEAN_AD_SCALE
    if mean_ad > 0:
        return mean_ad
    return max(abs(center) * FLAT_SCALE_SHARE, 1.0 if abs(center) >= 1 else FLAT_SCALE_SHARE)


def _anomaly(rule: AnomalyRule, subject: Subject) -> Outcome:
    if not subject.series:
        return _unknown(subject, "no data")
    newest = subject.series[-1]
    value = newest.value(rule.metric)
    window = [p.value(rule.metric) for p in subject.series[-1 - rule.window : -1]]
    trailing = [v for v in window if v is not None]
    if value is None or len(trailing) < rule.min_points:
        return _unknown(subject, f"{len(trailing)} of {rule.min_points} points needed")
    center = statistics.median(trailing)
    scale = _robust_scale(trailing, center)
    score = (value - center) / scale
    shown = partial(format_value, rule.metric)
    finding = Finding(
        summary=(
            f"{metric_label(rule.metric)} {shown(value)} is {score:+.1f} robust deviations "
            f"from the median {shown(center)} of {len(trailing)} points"
        ),
        metric=rule.metric,
        value=value,
        baseline=center,
        change_abs=value - center,
        change_pct=None if center == 0 else (value - center) / center * 100,
        newest_date=newest.date_key,
        details={
            "kind": "anomaly",
            "score": round(score, 3),
            "k": rule.k,
            "scale": scale,
            # follower counts are daily totals; core_data's values are rolling medians
            "rolling_median": rule.metric != FOLLOWER_METRIC,
        },
    )
    return _decide(subject, abs(score) > rule.k, finding)


_CREATOR_KINDS: dict[str, Callable[[Any, Subject], Outcome]] = {
    "threshold": _threshold,
    "change": _change,
    "stale": _stale,
    "api_error": _api_error,
    "anomaly": _anomaly,
}


def _budget(rule: BudgetRule, subject: AccountSubject) -> Outcome:
    if subject.daily_calls <= 0:
        return _unknown(subject, "no daily call budget")
    share = subject.used_today / subject.daily_calls * 100
    finding = Finding(
        summary=(
            f"{format_number(subject.used_today)} of {format_number(subject.daily_calls)} "
            f"daily calls used ({share:.1f} %)"
        ),
        value=float(subject.used_today),
        baseline=float(subject.daily_calls),
        details={"kind": "budget", "share_pct": round(share, 3), "level_pct": rule.level_pct},
    )
    return _decide(subject, share >= rule.level_pct, finding)


def _balance(rule: BalanceRule, subject: AccountSubject) -> Outcome:
    """Fires while the balance is below ``below`` or fewer than ``days_left`` days are left;
    clears when every condition given is read and holds no more (money was added)."""
    balance = subject.balance
    if balance is None:
        return _unknown(subject, "no balance reading yet")
    low = rule.below is not None and balance < Decimal(str(rule.below))
    left = subject.days_left
    short = rule.days_left is not None and left is not None and left < rule.days_left
    if not (low or short) and rule.days_left is not None and left is None:
        return _unknown(subject, "no spend rate yet: the days left are unknown")
    money = format_money(balance)
    parts = [f"balance {money}"]
    if rule.below is not None:
        parts[0] += f" < {format_money(rule.below)}" if low else f" (≥ {format_money(rule.below)})"
    if left is not None:
        limit = "" if rule.days_left is None else f" {'<' if short else '≥'} {rule.days_left:g}"
        parts.append(f"{left:.1f} days left{limit}")
    finding = Finding(
        summary=", ".join(parts),
        value=float(balance),
        baseline=rule.below,
        details={
            "kind": "balance",
            "balance": str(balance),
            "below": rule.below,
            "days_left": None if left is None else round(left, 3),
            "days_left_limit": rule.days_left,
            "price_per_call": None
            if subject.price_per_call is None
            else str(subject.price_per_call),
            "read_at": None
            if subject.balance_read_at is None
            else subject.balance_read_at.isoformat(),
            "low": low,
            "short": short,
        },
    )
    return _decide(subject, low or short, finding)
