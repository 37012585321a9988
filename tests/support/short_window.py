"""The ``creator-monitor`` command line with the budget's rate window shortened, for process tests
that must see calls on both sides of a window without waiting out the upstream's minute.

The child runs the installed code unchanged except for one parameter of the pure budget policy,
``Budget.window`` (60 s by default, unit-tested in tests/service/test_gate.py and
tests/store/test_budget.py): every process started this way shares the shorter window through the
same stored state, exactly as the real ones share the 60 s one.
"""

from __future__ import annotations

import sys

#: run by ``python -c``: argv[1] is the window in seconds, the rest is the command line
_BOOT = """
import sys
from dataclasses import replace
from datetime import timedelta

from monitor.policy.budget import Budget

window = timedelta(seconds=float(sys.argv.pop(1)))
sys.argv[0] = "creator-monitor"
from_config = Budget.from_config.__func__


def shortened(cls, config):
    return replace(from_config(cls, config), window=window)


Budget.from_config = classmethod(shortened)

from monitor.cli.main import main

sys.exit(main())
"""


def cli(window_seconds: float) -> list[str]:
    """argv to start ``creator-monitor ARGS...`` (append them) with a ``window_seconds`` window."""
    return [sys.executable, "-c", _BOOT, f"{window_seconds:g}"]
