"""Typed ``alerts`` rows: the conversions between a stored row and ``model.AlertState``.

Owns no query; the outbox store reads and writes through these so no dict of columns leaves it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import ColumnElement

from monitor.model import AlertState, Creator, Phase, Severity
from monitor.store.schema import alerts

#: columns whose stored values must still match what an evaluation read (optimistic check)
#: (``acked_at``: an evaluation read before an acknowledgement must not write it away)
VERSION_COLUMNS = (
    "state",
    "hits",
    "clears",
    "last_seen_at",
    "repeats_sent",
    "last_notified_at",
    "acked_at",
)
_FIELDS = frozenset(AlertState.__dataclass_fields__)


@dataclass(frozen=True, slots=True)
class OpenAlert:
    """An open alert with its creator as the database remembers it (None: account-wide)."""

    alert: AlertState
    creator: Creator | None


def state_of(row: Any) -> AlertState:
    """A row of ``alerts`` (a SQLAlchemy mapping) as the typed state."""
    values = {k: v for k, v in dict(row).items() if k in _FIELDS}
    values["severity"] = Severity(values["severity"])
    values["state"] = Phase(values["state"])
    values["details"] = values.get("details") or {}
    values["variant"] = values.get("variant") or ""
    return AlertState(**values)


def values_of(state: AlertState) -> dict[str, Any]:
    """The columns to write for ``state`` (without ``id``)."""
    values = asdict(state)
    values.pop("id")
    values["severity"] = state.severity.value
    values["state"] = state.state.value
    values["details"] = dict(state.details)
    return values


def creator_of(row: Any) -> Creator | None:
    """The creator joined as ``creator_name`` / ``creator_tags`` (None: account-wide)."""
    if row["creator_id"] is None:
        return None
    tags = tuple(row["creator_tags"] or ())
    return Creator(user_id=row["scope"], name=row["creator_name"] or "", tags=tags)


def still_as_read(expect: AlertState | None) -> list[ColumnElement[bool]]:
    """WHERE clauses: each version column still holds the value read (NULL-safe)."""
    if expect is None:
        return []
    read = values_of(expect)
    return [alerts.c[name].is_not_distinct_from(read[name]) for name in VERSION_COLUMNS]
