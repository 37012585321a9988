"""Alert outcomes the lifecycle tests feed: a change rule, a firing read, a clear, an unknown."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from monitor.config import Rule, parse_config
from monitor.model import Finding, Outcome, Verdict

UID = "5c3bf7f7000000000602fd63"
T0 = datetime(2025, 12, 11, 2, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


def rule(**fields: Any) -> Rule:
    base = {"name": "reads-down", "kind": "change", "metric": "read", "pct": -30}
    return parse_config({"rules": [{**base, **fields}]}).rules[0]


def firing(value: float = 4260, summary: str = "read 7100 → 4260") -> Outcome:
    finding = Finding(
        summary=summary,
        metric="read",
        value=value,
        baseline=7100,
        change_abs=value - 7100,
        change_pct=(value - 7100) / 7100 * 100,
        details={"kind": "change"},
    )
    return Outcome(Verdict.FIRING, UID, finding)


CLEAR = Outcome(Verdict.CLEAR, UID, Finding(summary="read 6900", metric="read", value=6900))
UNKNOWN = Outcome(Verdict.UNKNOWN, UID, reason="no data")
