"""The history store: the only place in creator-monitor that speaks SQL.

``Store`` gathers one mixin per concern (creators, metrics, schedule, ledger); each opens its own
short transactions through ``StoreBase``. Alerts, the outbox and silences join the same way.
"""

from __future__ import annotations

from monitor.model import NoteObservation, NoteRecord
from monitor.store.account import AccountStore, BalanceReading, KeptAnswer
from monitor.store.alerts import AlertStore
from monitor.store.cluster import ClusterStore
from monitor.store.console import ConsoleStore
from monitor.store.creators import CreatorStore
from monitor.store.engine import StoreBase
from monitor.store.groups import GroupStore
from monitor.store.ledger import BudgetRow, BudgetStore
from monitor.store.metrics import FetchRecord, MetricsStore
from monitor.store.outbox import OutboxStore
from monitor.store.overview import OverviewStore
from monitor.store.reports import ReportStore
from monitor.store.rule_inputs import RuleInputStore
from monitor.store.schedule import ScheduleStore, StatusRow
from monitor.store.silences import SilenceStore
from monitor.store.source_reads import SourceReadStore
from monitor.store.sources import SourceStore


class Store(
    CreatorStore,
    MetricsStore,
    ScheduleStore,
    BudgetStore,
    GroupStore,
    ReportStore,
    AlertStore,
    RuleInputStore,
    OutboxStore,
    SilenceStore,
    ClusterStore,
    ConsoleStore,
    OverviewStore,
    SourceStore,
    SourceReadStore,
    AccountStore,
):
    """``Store.open(url)``; use as ``async with Store.open(url) as store: ...``."""


__all__ = [
    "BalanceReading",
    "BudgetRow",
    "FetchRecord",
    "KeptAnswer",
    "NoteObservation",
    "NoteRecord",
    "StatusRow",
    "Store",
    "StoreBase",
]
