"""PURE alert grouping, as Alertmanager does it: which group an alert's message joins (the
rule's ``group_by``), how bad an entry is (worst first), and one message from many entries.

No I/O and no clock: the notifier decides when a group is due (group_wait, group_interval).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

#: how a label of ``group_by`` reads its value off an alert
_LABELS = ("rule", "creator", "variant", "severity")


class Grouped(Protocol):
    """What an alert exposes to grouping (``model.AlertState`` fits)."""

    @property
    def rule(self) -> str: ...
    @property
    def scope(self) -> str: ...
    @property
    def variant(self) -> str: ...
    @property
    def severity(self) -> str: ...
    @property
    def value(self) -> float | None: ...
    @property
    def details(self) -> Mapping[str, Any]: ...


def group_key(event: str, alert: Grouped, group_by: Sequence[str]) -> str:
    """The group one event of ``alert`` joins: the event and each ``group_by`` label's value."""
    values = {
        "rule": alert.rule,
        "creator": alert.scope,
        "variant": alert.variant,
        "severity": str(alert.severity),
    }
    parts = [f"{label}={values[label]}" for label in _LABELS if label in group_by]
    return "|".join([event, *parts])


def rank(alert: Grouped) -> float:
    """How far the alert is from normal, in percent, for 'worst first' (0 when unknown)."""
    details = alert.details
    pct = details.get("change_pct")
    threshold = details.get("threshold")
    compared = details.get("kind") in ("threshold", "note")  # a value against a line
    if compared and alert.value is not None and threshold is not None:
        gap = abs(alert.value - float(threshold))
        return gap / abs(float(threshold)) * 100 if threshold else gap
    if isinstance(pct, int | float):
        return abs(float(pct))
    score = details.get("score")
    return abs(float(score)) if isinstance(score, int | float) else 0.0


def compose(entries: Sequence[Mapping[str, Any]], limit: int) -> tuple[str, str]:
    """(title, Markdown body) of one message listing ``entries`` (each a ``grouping`` dict:
    rank, line, title, more) worst first, up to ``limit``, then "and K more" with the command."""
    ordered = sorted(entries, key=lambda e: -float(e.get("rank") or 0.0))
    first = ordered[0]
    title = str(first["title"]).replace("{n}", str(len(ordered)))
    lines = [f"- {e['line']}" for e in ordered[:limit]]
    rest = len(ordered) - limit
    if rest > 0:
        lines += ["", str(first["more"]).replace("{k}", str(rest))]
    return title, "\n".join(lines) + "\n"
