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

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from monitor.app.commands import (
        NOTE_METRICS,
        UNREACHABLE_AFTER,
        BacktestLine,
        BudgetReading,
        FollowerDay,
        Funds,
        Named,
        NoteLine,
        ReparseReport,
        account_funds,
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
        KNOWN_REVISIONS,
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
        sqlite_file,
        sqlite_folder,
        upgrade_schema,
    )

#: where each name lives: a submodule is imported when one of its names is first used, so
#: that ``run`` does not load what only the commands use (backtest, reparse, exports)
_HOME = {
    "BacktestLine": "monitor.app.commands",
    "BudgetGate": "monitor.app.fetching",
    "BudgetReading": "monitor.app.commands",
    "Ending": "monitor.app.fetching",
    "FetchParts": "monitor.app.fetching",
    "FetchRecord": "monitor.app.stores",
    "Fetcher": "monitor.app.fetching",
    "FollowerDay": "monitor.app.commands",
    "Funds": "monitor.app.commands",
    "KNOWN_REVISIONS": "monitor.app.stores",
    "NOTE_METRICS": "monitor.app.commands",
    "Named": "monitor.app.commands",
    "NoteLine": "monitor.app.commands",
    "OverviewQuery": "monitor.app.stores",
    "ReparseReport": "monitor.app.commands",
    "Run": "monitor.app.fetching",
    "Slot": "monitor.app.fetching",
    "SlotFate": "monitor.app.fetching",
    "Sort": "monitor.app.stores",
    "Spill": "monitor.app.fetching",
    "Store": "monitor.app.stores",
    "UNREACHABLE_AFTER": "monitor.app.commands",
    "account_funds": "monitor.app.commands",
    "budget_reading": "monitor.app.commands",
    "command_notifier": "monitor.app.commands",
    "command_store": "monitor.app.stores",
    "console_store": "monitor.app.stores",
    "creator_followers": "monitor.app.commands",
    "creator_notes": "monitor.app.commands",
    "current_schema": "monitor.app.stores",
    "export_source": "monitor.app.commands",
    "fetch_parts": "monitor.app.fetching",
    "fetch_store": "monitor.app.stores",
    "head_schema": "monitor.app.stores",
    "health_store": "monitor.app.stores",
    "held_answers": "monitor.app.fetching",
    "ledger_day": "monitor.app.commands",
    "reparse_lines": "monitor.app.commands",
    "run_backtest": "monitor.app.commands",
    "run_reparse": "monitor.app.commands",
    "schema_store": "monitor.app.stores",
    "sqlite_file": "monitor.app.stores",
    "sqlite_folder": "monitor.app.stores",
    "upgrade_schema": "monitor.app.stores",
    "write_report": "monitor.app.commands",
}

__all__ = [
    "KNOWN_REVISIONS",
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
    "Funds",
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
    "account_funds",
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
    "sqlite_file",
    "sqlite_folder",
    "upgrade_schema",
    "write_report",
]


def __getattr__(name: str) -> object:
    """A name of ``__all__``, from its submodule (imported on first use)."""
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value
