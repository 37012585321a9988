"""The ``alerts``, ``notifications`` (the outbox) and ``silences`` tables.

Stores alert state changes together with the messages they owe, in one transaction, and hands
messages out one claim at a time. Decides nothing about whether or when to notify.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, and_, delete, func, insert, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection

from monitor.model import AlertState
from monitor.store.alert_rows import OpenAlert, creator_of, state_of, still_as_read, values_of
from monitor.store.engine import StoreBase
from monitor.store.schema import alerts, creators, notifications, schedule, silences

PENDING, SENT, DEAD, SUPPRESSED = "pending", "sent", "dead", "suppressed"
#: PostgreSQL advisory lock key serialising "queue once per period" checks across instances
_ONCE_LOCK = 0x636D_6F6E  # "cmon"


@dataclass(frozen=True, slots=True)
class NewMessage:
    """A rendered message for one channel; ``not_before`` holds it (quiet hours, silences)."""

    channel: str
    event: str  # firing | repeat | resolved | digest | test | account
    severity: str
    title: str
    body: str
    not_before: datetime | None = None
    group_key: str | None = None  # None: sent on its own (digests, tests, account alerts)
    grouping: Mapping[str, Any] | None = None  # rank, line, title, more (see notify)
    attachment: Mapping[str, Any] | None = None  # a stored report to attach (report, period)


@dataclass(frozen=True, slots=True)
class QueuedMessage:
    """A claimed outbox row and what a delivery gate needs to know about its alert."""

    id: int
    channel: str
    event: str
    severity: str
    title: str
    body: str
    attempts: int
    created_at: datetime
    not_before: datetime | None
    alert_id: int | None
    rule: str | None  # None: not about an alert (digest, test)
    scope: str | None  # the creator's user_id or 'account'
    tags: tuple[str, ...]
    alert_state: str | None  # the alert's state now: pending | firing | resolved
    firing_status: str | None  # for a resolution: its firing's status on this channel
    group_key: str | None = None
    grouping: Mapping[str, Any] | None = None
    attachment: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class SilenceRow:
    id: int
    user_id: str | None  # a creator's user_id, or 'account'
    rule: str | None
    tag: str | None
    starts_at: datetime
    ends_at: datetime
    reason: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class AlertRow:
    """One line of ``alerts [--open]``; ``variants``: how many series its creator tracks (the
    variant is worth naming only when there are several)."""

    id: int
    rule: str
    scope: str
    name: str  # the creator's name, '' for account-wide alerts
    severity: str
    state: str
    summary: str
    pending_since: datetime | None
    fired_at: datetime | None
    resolved_at: datetime | None
    data_day: str | None = None  # the data day the firing reading is from ('YYYY-MM-DD')
    clear_day: str | None = None  # the data day of the reading that resolved it
    variant: str = ""  # the series' label ('' for account-wide alerts)
    variants: int = 1


def _silence_row(row: Any) -> SilenceRow:
    return SilenceRow(
        id=int(row.id),
        user_id=row.user_id,
        rule=row.rule,
        tag=row.tag,
        starts_at=row.starts_at,
        ends_at=row.ends_at,
        reason=row.reason,
        created_at=row.created_at,
    )


_UNCLAIMED = {"claimed_by": None, "claimed_until": None}


class OutboxStore(StoreBase):
    """Alerts, their outbox and silences; every method is one short transaction."""

    async def load_alert(self, rule: str, scope: str, variant: str = "") -> AlertState | None:
        """The open alert for (rule, scope, variant), else the newest resolved one, else None."""
        open_first = (alerts.c.state == "resolved").asc()
        query = (
            select(alerts)
            .where(alerts.c.rule == rule, alerts.c.scope == scope, alerts.c.variant == variant)
            .order_by(open_first, alerts.c.id.desc())
            .limit(1)
        )
        async with self._read() as conn:
            row = (await conn.execute(query)).mappings().first()
        return None if row is None else state_of(row)

    @staticmethod
    async def _insert_messages(
        conn: AsyncConnection, messages: Sequence[NewMessage], alert_id: int | None, now: datetime
    ) -> list[int]:
        ids = []
        for m in messages:
            row = await conn.execute(
                insert(notifications)
                .values(
                    alert_id=alert_id,
                    channel=m.channel,
                    event=m.event,
                    severity=m.severity,
                    title=m.title,
                    body=m.body,
                    status=PENDING,
                    attempts=0,
                    not_before=m.not_before,
                    next_attempt_at=now,
                    created_at=now,
                    group_key=m.group_key,
                    grouping=None if m.grouping is None else dict(m.grouping),
                    attachment=None if m.attachment is None else dict(m.attachment),
                )
                .returning(notifications.c.id)
            )
            ids.append(int(row.scalar_one()))
        return ids

    async def list_alerts(self, *, open_only: bool = False, limit: int = 200) -> list[AlertRow]:
        """Newest first; ``open_only``: pending and firing ones."""
        query = _alert_lines().order_by(alerts.c.id.desc()).limit(limit)
        if open_only:
            query = query.where(alerts.c.state != "resolved")
        return await self._alert_rows(query)

    async def _alert_rows(self, query: Select[Any]) -> list[AlertRow]:
        """Run a query made by ``_alert_lines``."""
        async with self._read() as conn:
            rows = (await conn.execute(query)).all()
        return [
            AlertRow(
                id=int(r.id),
                rule=r.rule,
                scope=r.scope,
                variant=r.variant,
                variants=int(r.variants or 0),
                name=r.creator_name,
                severity=r.severity,
                state=r.state,
                summary=r.summary,
                pending_since=r.pending_since,
                fired_at=r.fired_at,
                resolved_at=r.resolved_at,
                data_day=(r.details or {}).get("date"),
                clear_day=(r.details or {}).get("clear_date"),
            )
            for r in rows
        ]

    async def add_silence(
        self,
        *,
        now: datetime,
        ends_at: datetime,
        starts_at: datetime | None = None,
        user_id: str | None = None,
        rule: str | None = None,
        tag: str | None = None,
        reason: str = "",
    ) -> int:
        """A silence from ``starts_at`` (default now) until ``ends_at``; returns its id."""
        if ends_at <= (starts_at or now):
            raise ValueError("a silence must end after it starts")
        async with self._write() as conn:
            row = await conn.execute(
                insert(silences)
                .values(
                    user_id=user_id,
                    rule=rule,
                    tag=tag,
                    starts_at=starts_at or now,
                    ends_at=ends_at,
                    reason=reason,
                    created_at=now,
                )
                .returning(silences.c.id)
            )
            return int(row.scalar_one())

    async def list_silences(self, now: datetime, *, expired: bool = False) -> list[SilenceRow]:
        """Silences not yet over (``expired=True``: all of them), soonest end first."""
        query = select(silences).order_by(silences.c.ends_at, silences.c.id)
        if not expired:
            query = query.where(silences.c.ends_at > now)
        async with self._read() as conn:
            return [_silence_row(r) for r in (await conn.execute(query)).all()]

    async def active_silences(self, now: datetime) -> list[SilenceRow]:
        """Silences in force at ``now``."""
        return [s for s in await self.list_silences(now) if s.starts_at <= now]

    async def remove_silence(self, silence_id: int) -> bool:
        """``unsilence ID``; False when there was no such silence.

        Messages it may have been holding are handed back to the delivery gate at the next
        drain (their ``not_before`` is cleared); the gate holds again what still must wait.
        """
        async with self._write() as conn:
            ends_at = await conn.scalar(
                delete(silences).where(silences.c.id == silence_id).returning(silences.c.ends_at)
            )
            if ends_at is None:
                return False
            n = notifications
            await conn.execute(
                update(n)
                .where(n.c.status == PENDING, n.c.not_before <= ends_at)
                .values(not_before=None)
            )
        return True

    async def outbox_counts(self, *, channel: str | None = None) -> dict[str, int]:
        """Messages per status (pending, sent, dead, suppressed), for status and metrics."""
        query = select(notifications.c.status, func.count()).group_by(notifications.c.status)
        if channel is not None:
            query = query.where(notifications.c.channel == channel)
        async with self._read() as conn:
            rows = (await conn.execute(query)).all()
        counts = dict.fromkeys((PENDING, SENT, DEAD, SUPPRESSED), 0)
        counts.update({status: int(count) for status, count in rows})
        return counts

    async def claim_next(
        self, now: datetime, *, channel: str, owner: str, lease: timedelta, after_id: int = 0
    ) -> QueuedMessage | None:
        """Claim the oldest due message of ``channel`` with an id above ``after_id``.

        Due: pending, ``next_attempt_at`` and ``not_before`` reached, no live claim. The claim
        lasts ``lease``; on PostgreSQL ``SKIP LOCKED`` lets other instances take the next one,
        and the conditions repeated in the UPDATE make a lost race claim nothing.
        """
        n = notifications
        due = and_(
            n.c.channel == channel,
            n.c.status == PENDING,
            n.c.next_attempt_at <= now,
            or_(n.c.not_before.is_(None), n.c.not_before <= now),
            or_(n.c.claimed_until.is_(None), n.c.claimed_until <= now),
            n.c.id > after_id,
        )
        pick = select(n.c.id).where(due).order_by(n.c.id).limit(1).with_for_update(skip_locked=True)
        claim = (
            update(n)
            .where(n.c.id == pick.scalar_subquery(), due)
            .values(claimed_by=owner, claimed_until=now + lease)
            .returning(n.c.id)
        )
        async with self._write() as conn:
            message_id = (await conn.execute(claim)).scalar_one_or_none()
            if message_id is None:
                return None
            return await self._queued(conn, int(message_id))

    @staticmethod
    async def _queued(conn: AsyncConnection, message_id: int) -> QueuedMessage:
        n = notifications
        query = (
            select(n, alerts.c.rule, alerts.c.scope, alerts.c.state, creators.c.tags)
            .outerjoin(alerts, alerts.c.id == n.c.alert_id)
            .outerjoin(creators, creators.c.id == alerts.c.creator_id)
            .where(n.c.id == message_id)
        )
        row = (await conn.execute(query)).one()
        firing_status = None
        if row.event == "resolved" and row.alert_id is not None:
            firing_status = await conn.scalar(
                select(n.c.status)
                .where(n.c.alert_id == row.alert_id, n.c.channel == row.channel)
                .where(n.c.event == "firing")
                .order_by(n.c.id.desc())
                .limit(1)
            )
        return QueuedMessage(
            id=int(row.id),
            channel=row.channel,
            event=row.event,
            severity=row.severity,
            title=row.title,
            body=row.body,
            attempts=int(row.attempts),
            created_at=row.created_at,
            not_before=row.not_before,
            alert_id=row.alert_id,
            rule=row.rule,
            scope=row.scope,
            tags=tuple(row.tags or ()),
            alert_state=row.state,
            firing_status=firing_status,
            group_key=row.group_key,
            grouping=row.grouping,
            attachment=row.attachment,
        )

    async def mark_sent(self, message_id: int, *, now: datetime) -> bool:
        """Record a delivery apprise confirmed; False when the row was no longer pending."""
        async with self._write() as conn:
            done = await conn.execute(
                update(notifications)
                .where(notifications.c.id == message_id, notifications.c.status == PENDING)
                .values(
                    status=SENT,
                    sent_at=now,
                    attempts=notifications.c.attempts + 1,
                    **_UNCLAIMED,
                )
            )
        return bool(done.rowcount)

    async def mark_failed(
        self, message_id: int, *, error: str, next_attempt_at: datetime, dead: bool
    ) -> None:
        """Record a failed attempt (``error`` already redacted): retry later, or dead-letter."""
        async with self._write() as conn:
            await conn.execute(
                update(notifications)
                .where(notifications.c.id == message_id, notifications.c.status == PENDING)
                .values(
                    status=DEAD if dead else PENDING,
                    attempts=notifications.c.attempts + 1,
                    last_error=error,
                    next_attempt_at=next_attempt_at,
                    **_UNCLAIMED,
                )
            )

    async def hold(self, message_id: int, *, until: datetime | None, reason: str) -> None:
        """Give a claimed message back, not to be sent before ``until`` (None: next drain)."""
        values: dict[str, Any] = dict(_UNCLAIMED)
        if until is not None:
            values["not_before"] = until
        async with self._write() as conn:
            await conn.execute(
                update(notifications).where(notifications.c.id == message_id).values(values)
            )

    async def suppress(self, message_id: int, *, reason: str) -> None:
        """Never send this message; the row stays, with ``reason`` in last_error, as the record."""
        async with self._write() as conn:
            await conn.execute(
                update(notifications)
                .where(notifications.c.id == message_id, notifications.c.status == PENDING)
                .values(status=SUPPRESSED, last_error=reason, **_UNCLAIMED)
            )

    async def retry_dead(self, now: datetime, *, channel: str | None = None) -> int:
        """Dead letters back to pending with a fresh attempt count, due now; how many."""
        query = update(notifications).where(notifications.c.status == DEAD)
        if channel is not None:
            query = query.where(notifications.c.channel == channel)
        async with self._write() as conn:
            # not_before = now restarts the max_age clock the notifier measures from
            moved = await conn.execute(
                query.values(
                    status=PENDING, attempts=0, next_attempt_at=now, not_before=now, **_UNCLAIMED
                )
            )
        return int(moved.rowcount)

    async def bury_orphans(self, known: Sequence[str], *, reason: str) -> int:
        """Dead-letter pending messages whose channel is no longer configured; how many."""
        async with self._write() as conn:
            buried = await conn.execute(
                update(notifications)
                .where(notifications.c.status == PENDING)
                .where(notifications.c.channel.not_in(list(known)))
                .values(status=DEAD, last_error=reason, **_UNCLAIMED)
            )
        return int(buried.rowcount)

    # --- guarded alert writes for several instances, orphan lookups and the digest's queries

    async def commit_transition(
        self,
        alert: AlertState | None,
        messages: Sequence[NewMessage],
        *,
        now: datetime,
        expect: AlertState | None,
        drop_id: int | None = None,
    ) -> bool:
        """Write an alert state change and the messages it owes in ONE transaction.

        ``alert`` with id None is inserted, else updated; ``drop_id`` deletes a pending alert
        that cleared before it fired. False (and nothing written) when the row no longer holds
        ``expect`` (the version columns an evaluation read; None: no check), or when a new alert
        would be a second open one for its (rule, scope, variant). Another instance won.
        """
        async with self._write() as conn:
            if drop_id is not None:
                dropped = await conn.execute(
                    delete(alerts).where(
                        alerts.c.id == drop_id, alerts.c.state == "pending", *still_as_read(expect)
                    )
                )
                if not dropped.rowcount:
                    return False
            alert_id = None
            if alert is not None:
                alert_id = await self._guarded_save(conn, alert, expect)
                if alert_id is None:
                    return False
            await self._insert_messages(conn, messages, alert_id, now)
        return True

    async def _guarded_save(
        self, conn: AsyncConnection, alert: AlertState, expect: AlertState | None
    ) -> int | None:
        values = values_of(alert)
        if alert.id is None:
            stmt = self._upsert(alerts).values(values)
            stmt = stmt.on_conflict_do_nothing(
                index_elements=[alerts.c.rule, alerts.c.scope, alerts.c.variant],
                index_where=text("state != 'resolved'"),
            )
            inserted = await conn.execute(stmt.returning(alerts.c.id))
            found = inserted.scalar_one_or_none()
            return None if found is None else int(found)
        alert_id = alert.id
        updated = await conn.execute(
            update(alerts).where(alerts.c.id == alert_id, *still_as_read(expect)).values(values)
        )
        return alert_id if updated.rowcount else None

    async def open_alerts(self) -> list[OpenAlert]:
        """Every pending or firing alert, with its creator as the database remembers it."""
        query = (
            select(
                alerts,
                creators.c.name.label("creator_name"),
                creators.c.tags.label("creator_tags"),
            )
            .outerjoin(creators, creators.c.id == alerts.c.creator_id)
            .where(alerts.c.state != "resolved")
            .order_by(alerts.c.id)
        )
        async with self._read() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [OpenAlert(state_of(r), creator_of(r)) for r in rows]

    async def firing_channels(self, alert_id: int) -> list[str]:
        """The channels this alert's firing was queued for (whatever became of it)."""
        n = notifications
        query = (
            select(n.c.channel)
            .where(n.c.alert_id == alert_id, n.c.event == "firing")
            .group_by(n.c.channel)
            .order_by(func.min(n.c.id))
        )
        async with self._read() as conn:
            return [str(c) for c in (await conn.execute(query)).scalars()]

    async def alert_activity(self, since: datetime, until: datetime) -> list[AlertRow]:
        """Alerts that fired or resolved in ``[since, until)``, oldest first."""
        fired = and_(alerts.c.fired_at >= since, alerts.c.fired_at < until)
        resolved = and_(alerts.c.resolved_at >= since, alerts.c.resolved_at < until)
        query = _alert_lines().where(or_(fired, resolved)).order_by(alerts.c.id)
        return await self._alert_rows(query)

    async def queued_channels(self, event: str, since: datetime, until: datetime) -> set[str]:
        """Channels with a message of ``event`` created in ``[since, until)`` (any status)."""
        n = notifications
        query = select(n.c.channel).where(
            n.c.event == event, n.c.created_at >= since, n.c.created_at < until
        )
        async with self._read() as conn:
            return {str(c) for c in (await conn.execute(query)).scalars()}

    async def enqueue_once(
        self,
        messages: Sequence[NewMessage],
        *,
        now: datetime,
        since: datetime,
        until: datetime,
    ) -> list[int]:
        """Queue each message unless its channel already has one of the same event created in
        ``[since, until)`` (a digest per day); check and insert are one transaction, serialised
        across instances (SQLite: the write lock; PostgreSQL: an advisory lock). Returns the ids
        of the rows inserted.
        """
        async with self._write() as conn:
            if self.dialect == "postgresql":
                await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _ONCE_LOCK})
            n = notifications
            wanted = []
            for m in messages:
                taken = await conn.scalar(
                    select(func.count())
                    .select_from(n)
                    .where(n.c.channel == m.channel, n.c.event == m.event)
                    .where(n.c.created_at >= since, n.c.created_at < until)
                )
                if not taken:
                    wanted.append(m)
            return await self._insert_messages(conn, wanted, None, now)


def _alert_lines() -> Select[Any]:
    """``alerts`` with the creator's name and how many series the creator tracks."""
    tracked = (
        select(func.count())
        .select_from(schedule)
        .where(schedule.c.creator_id == alerts.c.creator_id)
        .scalar_subquery()
    )
    return select(
        alerts,
        func.coalesce(creators.c.name, "").label("creator_name"),
        tracked.label("variants"),
    ).outerjoin(creators, creators.c.id == alerts.c.creator_id)
