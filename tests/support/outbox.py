"""Fixtures for the outbox and notifier tests: a migrated store on SQLite and PostgreSQL,
a creator and an alert row to hang messages on, and a moment to start the clock at.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from monitor.model import AlertState, Creator, Phase, Severity
from monitor.store import migrate
from monitor.store.alerts import AlertStore
from monitor.store.creators import CreatorStore
from monitor.store.outbox import NewMessage, OutboxStore
from monitor.store.schema import notifications
from monitor.store.silences import SilenceStore

T0 = datetime(2025, 12, 11, 2, 0, tzinfo=UTC)
USER_ID = "5c3bf7f7000000000602fd63"


class OutboxDb(AlertStore, OutboxStore, SilenceStore, CreatorStore):
    """The store mixins these tests need (the lead's ``Store`` gathers them all)."""


async def open_db(url: str) -> OutboxDb:
    await migrate.upgrade(url)
    return OutboxDb.open(url, clock=lambda: T0)


def firing_alert(
    creator_id: int | None, *, rule: str = "reads-down", state: str = "firing"
) -> AlertState:
    return AlertState(
        rule=rule,
        creator_id=creator_id,
        scope=USER_ID if creator_id is not None else "account",
        severity=Severity.WARNING,
        state=Phase(state),
        metric="read",
        value=4260.0,
        baseline=7100.0,
        pending_since=T0,
        fired_at=T0 if state == "firing" else None,
        hits=1,
        firing_sent=state == "firing",
        last_notified_at=T0,
        summary="read 7,100 → 4,260 (-40.0 %)",
        details={"change_pct": -40.0},
    )


def message(
    channel: str,
    *,
    event: str = "firing",
    title: str = "reads down",
    body: str = "**read** 7,100 → 4,260",
) -> NewMessage:
    return NewMessage(channel=channel, event=event, severity="warning", title=title, body=body)


async def fire(store: OutboxDb, *channels: str, tags: tuple[str, ...] = ("fitness",)) -> int:
    """A creator, a firing alert and one firing message per channel; returns the alert id."""
    ids = await store.sync_creators([Creator(USER_ID, "Lilyy", tags)])
    alert = firing_alert(ids[USER_ID])
    assert await store.commit_transition(alert, [message(c) for c in channels], now=T0, expect=None)
    stored = await store.load_alert(alert.rule, alert.scope)
    assert stored is not None
    assert stored.id is not None
    return stored.id


async def rows(store: OutboxDb) -> list[dict[str, Any]]:
    """Every outbox row as stored, oldest first."""
    async with store._read() as conn:
        result = await conn.execute(select(notifications).order_by(notifications.c.id))
        return [dict(r) for r in result.mappings()]
