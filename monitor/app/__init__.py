"""The only wiring: every part the program runs with is built here from the config, for the
daemon, for each command and for the console. Nothing above (``cli``, ``web``, ``daemon``)
opens a store, a client, a gate or a notifier itself, and ``cli`` and ``web`` see the service,
store and client layers only through the names this package hands out.

- ``stores``: every store, one function per kind (the one ``Store.open``);
- ``fetching``: the fetch path (store, client, gate, fetcher, hold) on an exit stack;
- ``commands``: what a command works with beside its store;
- ``running``: the daemon's parts (notifier, heartbeat, dispatcher, telemetry's gauges);
- ``upkeep``: the daemon's housekeeping jobs (digest, scheduled reports, pruning).
"""

from monitor.app.commands import (
    NOTE_METRICS,
    UNREACHABLE_AFTER,
    BacktestLine,
    BudgetReading,
    FollowerDay,
    Named,
    NoteLine,
    ReparseReport,
    budget_reading,
    command_notifier,
    creator_followers,
    creator_notes,
    export_source,
    ledger_day,
    reparse_lines,
    run_backtest,
    run_reparse,
    write_report,
)
from monitor.app.fetching import (
    BudgetGate,
    Ending,
    Fetcher,
    FetchParts,
    Run,
    Slot,
    SlotFate,
    Spill,
    fetch_parts,
    held_answers,
)
from monitor.app.stores import (
    FetchRecord,
    OverviewQuery,
    Sort,
    Store,
    command_store,
    console_store,
    current_schema,
    fetch_store,
    head_schema,
    health_store,
    schema_store,
    sqlite_folder,
    upgrade_schema,
)

__all__ = [
    "NOTE_METRICS",
    "UNREACHABLE_AFTER",
    "BacktestLine",
    "BudgetGate",
    "BudgetReading",
    "Ending",
    "FetchParts",
    "FetchRecord",
    "Fetcher",
    "FollowerDay",
    "Named",
    "NoteLine",
    "OverviewQuery",
    "ReparseReport",
    "Run",
    "Slot",
    "SlotFate",
    "Sort",
    "Spill",
    "Store",
    "budget_reading",
    "command_notifier",
    "command_store",
    "console_store",
    "creator_followers",
    "creator_notes",
    "current_schema",
    "export_source",
    "fetch_parts",
    "fetch_store",
    "head_schema",
    "health_store",
    "held_answers",
    "ledger_day",
    "reparse_lines",
    "run_backtest",
    "run_reparse",
    "schema_store",
    "sqlite_folder",
    "upgrade_schema",
    "write_report",
]
