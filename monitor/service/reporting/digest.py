"""The daily digest: top movers week over week, the week's follower moves and new notes, alerts
fired and resolved, the budget, the account's money (balance, price per call, days left),
failing creators; rendered per channel and queued once per channel per local day through the
outbox. Reads the store and writes outbox rows only; sends nothing and evaluates no rule.

When: at ``notify.digest_at`` (local time in ``budget.timezone``), or at the first check after it
when the daemon was down then; never twice on one local day for a channel, across restarts and
instances (the outbox row of event 'digest' is the marker). It covers the 24 h before it is built
and is named after the local day holding most of those hours (a 09:00 digest reports yesterday's
budget; a 21:00 one today's).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from monitor.config import ChannelConfig, Config
from monitor.model import EVENT_KINDS, Creator, DailyPoint
from monitor.notify.digest_sources import FollowerMove, NewNote
from monitor.notify.message import (
    AlertLine,
    Digest,
    FailingCreator,
    Language,
    Message,
    MessageContext,
    Mover,
)
from monitor.notify.rendering import Renderer
from monitor.notify.summary import describe
from monitor.service.fetching.balance import funds_of
from monitor.store import Store
from monitor.store.alerts import AlertRow
from monitor.store.outbox import NewMessage

log = logging.getLogger(__name__)

DIGEST_EVENT = "digest"
#: metrics whose week-over-week moves the digest ranks (the counts people watch)
DIGEST_METRICS: tuple[str, ...] = ("imp", "read", "engage")
WEEK = timedelta(days=7)
PERIOD = timedelta(hours=24)
#: a series whose newest point is older than this has not moved "this week"
FRESH = timedelta(days=7)
#: how much of a series the movers read (a week back from the newest point, with slack for gaps)
SERIES_WINDOW = timedelta(days=21)


def due_day(config: Config, now: datetime) -> date | None:
    """The local day whose digest is due at ``now``; None when digests are off or it is early."""
    at = config.notify.digest_at
    if at is None:
        return None
    local = now.astimezone(config.budget.zone)
    return local.date() if local.time().replace(tzinfo=None) >= at else None


def day_bounds(day: date, zone: ZoneInfo) -> tuple[datetime, datetime]:
    """The UTC instants where the local ``day`` starts and ends."""
    start = datetime.combine(day, time(0), tzinfo=zone)
    end = datetime.combine(day + timedelta(days=1), time(0), tzinfo=zone)
    return start.astimezone(UTC), end.astimezone(UTC)


def covered_day(now: datetime, zone: ZoneInfo) -> date:
    """The local day holding most of the ``PERIOD`` before ``now``: the digest's name."""
    return (now - PERIOD / 2).astimezone(zone).date()


def digest_channels(config: Config) -> list[ChannelConfig]:
    return [c for c in config.channels if c.digest]


def week_movers(creator: Creator, points: Sequence[DailyPoint], today: date) -> list[Mover]:
    """The newest point against the last one at least a week older, per digest metric (PURE).

    Nothing when the newest point is older than ``FRESH`` or no point is a week older.
    """
    if not points or points[-1].date_key < today - FRESH:
        return []
    newest = points[-1]
    earlier = [p for p in points if p.date_key <= newest.date_key - WEEK]
    if not earlier:
        return []
    base = earlier[-1]
    movers = []
    for metric in DIGEST_METRICS:
        old, new = base.value(metric), newest.value(metric)
        if old is not None and new is not None:
            movers.append(Mover(creator=creator, metric=metric, old=old, new=new))
    return movers


async def build_digest(config: Config, store: Store, now: datetime) -> Digest:
    """Everything the digest shows, read from the store."""
    zone = config.budget.zone
    day = covered_day(now, zone)
    creators = {c.user_id: c.creator() for c in config.creators}
    since = now - PERIOD
    activity = await store.alert_activity(since, now)
    fired = tuple(
        _line(a, a.fired_at, creators)
        for a in activity
        if a.fired_at is not None and since <= a.fired_at < now
    )
    resolved = tuple(
        _line(a, a.resolved_at, creators)
        for a in activity
        if a.resolved_at is not None
        and since <= a.resolved_at < now
        # an event (a note) was told when it fired; its quiet end is no news
        and a.details.get("kind") not in EVENT_KINDS
    )
    funds = await funds_of(config, store, now)
    return Digest(
        day=day,
        movers=tuple(await _movers(config, store, now)),
        fired=tuple(sorted(fired, key=lambda a: a.at)),
        resolved=tuple(sorted(resolved, key=lambda a: a.at)),
        budget_used=(await store.ledger_label(day.isoformat()))[0],
        daily_calls=config.budget.daily_calls,
        failing=tuple(await _failing(store, creators)),
        followers=tuple(await _followers(config, store, now)),
        new_notes=tuple(await _new_notes(store, creators, now)),
        balance=funds.balance,
        currency=funds.currency,
        price_per_call=funds.price,
        days_left=funds.days_left,
    )


async def queue_due_digest(
    config: Config, store: Store, now: datetime, *, renderer: Renderer | None = None
) -> list[int]:
    """Queue today's digest for every digest channel that has none yet, if it is due; returns
    the outbox ids queued (empty when not due, or already queued by us or another instance)."""
    day = due_day(config, now)
    channels = digest_channels(config)
    if day is None or not channels:
        return []
    start, end = day_bounds(day, config.budget.zone)
    done = await store.queued_channels(DIGEST_EVENT, start, end)
    todo = [c for c in channels if c.name not in done]
    if not todo:
        return []
    digest = await build_digest(config, store, now)
    messages = render_digest(
        config, digest, todo, now, renderer or Renderer(config.notify.templates_dir)
    )
    ids = await store.enqueue_once(messages, now=now, since=start, until=end)
    if ids:
        log.info("daily digest %s queued for %d channel(s)", digest.day, len(ids))
    return ids


def render_digest(
    config: Config,
    digest: Digest,
    channels: Sequence[ChannelConfig],
    now: datetime,
    renderer: Renderer,
) -> list[NewMessage]:
    """One digest message per channel, in the channel's language (rendered once per language)."""
    context = MessageContext(now=now, zone=config.budget.zone)
    rendered: dict[Language, Message] = {}
    out = []
    for channel in channels:
        language: Language = channel.language or config.notify.language
        if language not in rendered:
            rendered[language] = renderer.render_digest(digest, context, language)
            if rendered[language].error:
                log.warning(
                    "digest template fell back to the built-in one: %s", rendered[language].error
                )
        message = rendered[language]
        out.append(
            NewMessage(
                channel=channel.name,
                event=DIGEST_EVENT,
                severity="info",
                title=message.title,
                body=message.body,
            )
        )
    return out


def _line(row: AlertRow, at: datetime, creators: dict[str, Creator]) -> AlertLine:
    creator = creators.get(row.scope)
    if creator is None and row.name:
        creator = Creator(user_id=row.scope, name=row.name)
    return AlertLine(
        rule=row.rule,
        scope=row.scope,
        severity=row.severity,
        summary=row.summary,
        at=at,
        creator=creator,
        variant=row.variant if row.variant and row.variants > 1 else None,
        summaries={language: describe(row, language) for language in ("en", "zh")},
    )


async def _movers(config: Config, store: Store, now: datetime) -> list[Mover]:
    """Each tracked creator's first variant (the one ``[defaults]`` or its own keys name), so
    a creator with several variants appears once per metric."""
    today = now.astimezone(config.budget.zone).date()
    movers: list[Mover] = []
    for entry in config.creators:
        creator_id = await store.find_creator(entry.user_id)
        if creator_id is None:
            continue
        variant = config.variants_of(entry)[0]
        series = await store.series(creator_id, variant, today - SERIES_WINDOW)
        movers += week_movers(entry.creator(), [p for _, p in series], today)
    return movers


async def _followers(config: Config, store: Store, now: datetime) -> list[FollowerMove]:
    """Each tracked creator's follower counts from a week before its newest day to that day
    (one streamed read of every creator's recent counts); none for a creator whose newest
    count is older than ``FRESH`` or with no count a week before it."""
    today = now.astimezone(config.budget.zone).date()
    creators = {c.user_id: c.creator() for c in config.creators}
    counts: dict[str, list[tuple[date, int]]] = {}
    stream = store.export_followers(today - SERIES_WINDOW)
    async with contextlib.aclosing(stream) as rows:
        async for row in rows:
            if row["user_id"] in creators:
                day = date.fromisoformat(row["date_key"])
                counts.setdefault(row["user_id"], []).append((day, int(row["fans"])))
    moves = []
    for user_id, days in counts.items():
        newest = days[-1][0]
        if newest < today - FRESH or days[0][0] > newest - WEEK:
            continue
        week = [fans for day, fans in days if day >= newest - WEEK]
        moves.append(FollowerMove(creators[user_id], tuple(week)))
    return moves


async def _new_notes(store: Store, creators: dict[str, Creator], now: datetime) -> list[NewNote]:
    """The tracked creators' notes first seen in the week before ``now``, newest first (a
    first visit's are the baseline, never among them)."""
    found = await store.new_notes(now - WEEK)
    names = await store.creator_names([cid for cid, _ in found])
    out = []
    for cid, record in reversed(found):
        creator = creators.get(names.get(cid, ("", ""))[0])
        if creator is None:
            continue
        note = record.note
        out.append(
            NewNote(
                creator=creator,
                note_id=note.note_id,
                title=note.title,
                published=note.published,
                video=note.video,
                cooperation=note.cooperation,
                brand=note.brand,
                reads=record.latest.stats.reads,
                first_seen_at=record.first_seen_at,
                url=note.url,
            )
        )
    return out


async def _failing(store: Store, creators: dict[str, Creator]) -> list[FailingCreator]:
    """Tracked creators whose newest attempt failed (or that are marked broken), worst first."""
    worst: dict[str, FailingCreator] = {}
    for row in await store.status_rows():
        creator = creators.get(row.user_id)
        if creator is None or (row.consecutive_failures == 0 and row.broken_at is None):
            continue
        seen = worst.get(row.user_id)
        if seen is None or row.consecutive_failures > seen.failures:
            worst[row.user_id] = FailingCreator(
                creator=creator,
                failures=row.consecutive_failures,
                last_code=row.last_code,
                last_success_at=row.last_success_at,
            )
    return sorted(worst.values(), key=lambda f: (-f.failures, f.creator.user_id))
