"""The ``notifications`` table (the outbox): queues messages and hands them out one claim at a
time to the notifier, which records each delivery. Decides nothing about whether or when to notify.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, insert, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection

from monitor.store.engine import StoreBase
from monitor.store.schema import alerts, creators, notifications

PENDING, SENT, DEAD, SUPPRESSED = "pending", "sent", "dead", "suppressed"
#: PostgreSQL advisory lock key serialising "queue once per period" checks across instances
_ONCE_LOCK = 0x636D_6F6E  # "cmon"


@dataclass(frozen=True, slots=True)
class NewMessage:
    """A message for one channel; ``not_before`` holds it (quiet hours, silences).

    ``title`` and ``body`` are the text as queued. An alert's message also carries ``facts``
    (what its template reads), and the notifier renders those again when it sends, so a template
    fixed meanwhile reaches it; a row without facts (digests, reports, rows queued before facts
    were kept) goes out as queued.
    """

    channel: str
    event: str  # firing | repeat | resolved | digest | test | account
    severity: str
    title: str
    body: str
    not_before: datetime | None = None
    group_key: str | None = None  # None: sent on its own (digests, tests, account alerts)
    grouping: Mapping[str, Any] | None = None  # rank, line, title, more (see notify)
    attachment: Mapping[str, Any] | None = None  # a stored report to attach (report, period)
    facts: Mapping[str, Any] | None = None  # an alert's message: what rendering reads


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
    facts: Mapping[str, Any] | None = None


_UNCLAIMED = {"claimed_by": None, "claimed_until": None}


async def insert_messages(
    conn: AsyncConnection, messages: Sequence[NewMessage], alert_id: int | None, now: datetime
) -> list[int]:
    """Queue ``messages`` (owed by ``alert_id``, None: by no alert) inside ``conn``'s
    transaction; returns their ids."""
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
                facts=None if m.facts is None else dict(m.facts),
            )
            .returning(notifications.c.id)
        )
        ids.append(int(row.scalar_one()))
    return ids


async def queued_message(conn: AsyncConnection, message_id: int) -> QueuedMessage:
    """Outbox row ``message_id`` with its alert's rule, scope, state and creator tags, read in
    ``conn``'s transaction (the claim that just took it)."""
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
        facts=row.facts,
    )


class OutboxStore(StoreBase):
    """The outbox: queue, claim, record; every method is one short transaction."""

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
        self,
        now: datetime,
        *,
        channel: str,
        owner: str,
        lease: timedelta,
        after_id: int = 0,
        held_groups: bool = False,
    ) -> QueuedMessage | None:
        """Claim the oldest due message of ``channel`` with an id above ``after_id``.

        Due: pending, ``next_attempt_at`` and ``not_before`` reached, no live claim. The claim
        lasts ``lease``; on PostgreSQL ``SKIP LOCKED`` lets other instances take the next one,
        and the conditions repeated in the UPDATE make a lost race claim nothing.
        ``held_groups`` (the stop's flush): a grouped message is due whatever its
        ``not_before`` (the notifier's gate holds a silenced one again).
        """
        n = notifications
        reached = or_(n.c.not_before.is_(None), n.c.not_before <= now)
        due = and_(
            n.c.channel == channel,
            n.c.status == PENDING,
            n.c.next_attempt_at <= now,
            or_(reached, n.c.group_key.is_not(None)) if held_groups else reached,
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
            return await queued_message(conn, int(message_id))

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

    async def mark_group_sent(self, ids: Sequence[int], *, now: datetime) -> int:
        """Record one delivery (of a group, or of a lone message: a group of one) for every
        message it carried; how many were still pending."""
        n = notifications
        async with self._write() as conn:
            done = await conn.execute(
                update(n)
                .where(n.c.id.in_(list(ids)), n.c.status == PENDING)
                .values(status=SENT, sent_at=now, attempts=n.c.attempts + 1, **_UNCLAIMED)
            )
        return int(done.rowcount)

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
            return await insert_messages(conn, wanted, None, now)
