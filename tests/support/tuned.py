"""The ``creator-monitor`` command line with a few of the product's waits shortened, for process
tests that must see what happens after a wait without sitting through it in real time.

The child runs the installed code unchanged except for the values named in :func:`cli`:

- ``window``: ``BudgetPolicy.window``, the rate window ``calls_per_minute`` caps (60 s, the
  upstream's minute; a parameter of the pure budget policy, its default pinned in
  tests/store/test_budget.py). Every process started this way shares the shorter window through
  the stored state, exactly as real ones share the 60 s one.
- ``store_backoff``: the dispatcher's pause while the database refuses writes, ``(first, cap)``
  seconds (``(1, 60)``): a call the refusal stopped goes to the back of the queue by ``cap``, and
  rules owed since the refusal are tried again after it.

A value that is no longer where this module looks for it fails the child at start-up, loudly.
"""

from __future__ import annotations

import json
import sys

from support.zygote import FORKABLE_CODE

#: run by ``python -c``: argv[1] holds the knobs (JSON), the rest is the command line
_BOOT = """
import json
import sys
from dataclasses import replace
from datetime import timedelta

knobs = json.loads(sys.argv.pop(1))
sys.argv[0] = "creator-monitor"

if knobs["window"] is not None:
    from monitor.policy.budget import BudgetPolicy

    window = timedelta(seconds=knobs["window"])
    from_config = BudgetPolicy.from_config.__func__
    assert "window" in BudgetPolicy.__dataclass_fields__, "the window moved: see support/tuned.py"

    def shortened(cls, config):
        return replace(from_config(cls, config), window=window)

    BudgetPolicy.from_config = classmethod(shortened)

if knobs["store_backoff"] is not None:
    from monitor.service.fetching import dispatch

    assert hasattr(dispatch, "_STORE_BACKOFF"), "the backoff moved: see support/tuned.py"
    dispatch._STORE_BACKOFF = tuple(knobs["store_backoff"])

from monitor.cli.main import main

sys.exit(main())
"""

FORKABLE_CODE.add(_BOOT)  # it patches the package after importing it: a forked zygote may run it


def cli(
    *, window: float | None = None, store_backoff: tuple[float, float] | None = None
) -> list[str]:
    """argv to start ``creator-monitor ARGS...`` (append them) with the named waits shortened:
    ``window`` seconds of rate window, a ``store_backoff`` of ``(first, cap)`` seconds."""
    knobs = {"window": window, "store_backoff": store_backoff}
    return [sys.executable, "-c", _BOOT, json.dumps(knobs)]
