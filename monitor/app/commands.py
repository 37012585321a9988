"""The parts a command works with beside its store: the budget's reading and the account's money
(``status``, the console), a notifier (``notify test``/``retry``), the backtest, ``reparse``, the
HTML report, and the follower and note listings (``history --source``, ``notes``, ``export
--source``, which the console API shares). Each is built from the config and the command's
store, as the daemon builds its own."""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from monitor.config import Config
from monitor.notify.sender import Notifier
from monitor.ops.wallclock import Clock
from monitor.policy.budget import BudgetPolicy
from monitor.policy.spend import Funds
from monitor.service.alerting.backtest import BacktestLine, run_backtest
from monitor.service.alerting.evaluation import Alerting
from monitor.service.fetching.balance import funds_of
from monitor.service.fetching.budget_view import BudgetReading, ledger_day
from monitor.service.fetching.gate import BudgetGate
from monitor.service.fetching.reach import UNREACHABLE_AFTER
from monitor.service.fetching.reparse import ReparseReport, reparse
from monitor.service.fetching.reparse import report_lines as reparse_lines
from monitor.service.reporting.source_view import (
    NOTE_METRICS,
    FollowerDay,
    Named,
    NoteLine,
    creator_followers,
    creator_notes,
)
from monitor.service.reporting.source_view import export_rows as export_source
from monitor.store import Store
from monitor.store.engine import system_clock

if TYPE_CHECKING:  # plotly: only ``report`` loads it
    from monitor.service.reporting.report import Written

__all__ = [
    "NOTE_METRICS",
    "UNREACHABLE_AFTER",
    "BacktestLine",
    "BudgetReading",
    "FollowerDay",
    "Funds",
    "Named",
    "NoteLine",
    "ReparseReport",
    "account_funds",
    "budget_reading",
    "command_notifier",
    "creator_followers",
    "creator_notes",
    "export_source",
    "ledger_day",
    "reparse_lines",
    "run_backtest",
    "run_reparse",
    "write_report",
]


async def budget_reading(config: Config, store: Store, clock: Clock) -> BudgetReading:
    """The budget as the gate sees it now (a read: nothing is spent)."""
    gate = await BudgetGate.open(BudgetPolicy.from_config(config), store, clock=clock)
    return await gate.reading()


async def run_reparse(
    config: Config, store: Store, *, source: str | None, dry_run: bool, clock: Clock = system_clock
) -> tuple[int, ReparseReport]:
    """``reparse`` with the rules the daemon runs (their messages wait in the outbox for the
    daemon's notifier); returns how many answers were kept before, and what it did."""
    kept = len(await store.unreparsed_answers(source))
    gate = await BudgetGate.open(BudgetPolicy.from_config(config), store, clock=clock)
    account = await gate.account()
    alerting = Alerting(config, store, clock=clock)
    done = await reparse(
        config, store, alerting, lambda: account, source=source, dry_run=dry_run, clock=clock
    )
    return kept, done


async def account_funds(config: Config, store: Store, clock: Clock) -> Funds:
    """The account's money as stored: the newest balance reading, the derived price per call
    and the days left at the config's plan (a read: nothing is spent)."""
    return await funds_of(config, store, clock())


def command_notifier(config: Config, store: Store) -> Notifier:
    """A command's notifier (its deliveries are owned by ``cli``); use as a context manager."""
    return Notifier.from_config(store, config, owner="cli")


async def write_report(
    store: Store,
    out: Path,
    *,
    since: date,
    now: datetime,
    daily_calls: int,
    zone: ZoneInfo,
) -> Written:
    """``service.reporting.report.write_report``, loaded when called (plotly is heavy)."""
    from monitor.service.reporting.report import write_report as write

    return await write(store, out, since=since, now=now, daily_calls=daily_calls, zone=zone)
