"""``reparse``: the paid answers an earlier version could not read, read again with this one.

Each kept body (``unreadable_answers``) goes through its source's parser with the query it
answered. What reads now is stored as the fetch would have stored it (core points, follower
counts, a note page seen when it was paid for) and the answer is marked read, in one
transaction (a balance reading is stored, then marked); then the rules of the creators it
touched run. What still does not read stays kept, untouched, for a later version. Makes no call
and spends nothing.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from monitor.config import Config, CreatorConfig
from monitor.errors import UpstreamError
from monitor.model import (
    CORE,
    FANS,
    NOTES,
    Advertise,
    Balance,
    Business,
    DateType,
    FetchResult,
    FollowerHistory,
    NotePage,
    NoteType,
    Variant,
)
from monitor.ops.wallclock import Clock
from monitor.policy.rules import AccountSubject
from monitor.service.alerting.evaluation import Alerting, SeriesFacts
from monitor.store import FetchRecord, KeptAnswer, Store
from monitor.store.engine import system_clock
from monitor.store.schedule import StatusRow
from monitor.upstream.parse import UPSTREAM_TZ
from monitor.upstream.sources import body_parser

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ReparseReport:
    """What one ``reparse`` did: answers read now (by source), still unreadable, and the
    creators whose rules ran on what was stored."""

    read: Mapping[str, int] = field(default_factory=dict)
    unreadable: int = 0
    creators: int = 0
    #: the first still-unreadable answer's reason (what a newer version must learn)
    first_reason: str = ""

    @property
    def total_read(self) -> int:
        return sum(self.read.values())


async def reparse(
    config: Config,
    store: Store,
    alerting: Alerting | None,
    account: Callable[[], AccountSubject],
    *,
    source: str | None = None,
    dry_run: bool = False,
    clock: Clock = system_clock,
) -> ReparseReport:
    """Read every kept answer (of ``source``, if given) again; with ``dry_run`` nothing is
    stored or marked, the report says what would be."""
    kept = await store.unreparsed_answers(source)
    read: Counter[str] = Counter()
    unreadable, reason = 0, ""
    touched: set[int] = set()
    for answer in kept:
        try:
            value = _parse(answer)
        except (UpstreamError, ValueError) as exc:  # ValueError: a query this version refuses
            unreadable += 1
            reason = reason or f"{answer.source}: {getattr(exc, 'message', exc)}"
            continue
        if dry_run:
            read[answer.source] += 1
            continue
        if isinstance(value, Balance):
            # stored, then marked: a reading stored twice (a crash between) replaces itself
            await store.store_balance(answer.fetched_at, value)
            await store.mark_reparsed([answer.id], clock())
        else:
            if answer.creator_id is None or not await store.store_reparsed(answer.id, value):
                continue  # another reparse took it first
            touched.add(answer.creator_id)
        read[answer.source] += 1
    if read and not dry_run:
        log.info("reparse stored %d kept answers (%s)", sum(read.values()), _by_source(read))
    ran = 0
    if alerting is not None and not dry_run:
        ran = await _run_rules(config, store, alerting, touched, account)
    return ReparseReport(dict(read), unreadable, ran, reason)


def _parse(answer: KeptAnswer) -> FetchRecord | Balance:
    """The kept body as this version reads it: the record ``store_reparsed`` takes, or a
    balance; raises the UpstreamError the parser raises when it still cannot."""
    today = answer.fetched_at.astimezone(UPSTREAM_TZ).date()
    parsed = body_parser(answer.source, answer.params)(answer.body, today=today)
    data = parsed.data
    if isinstance(data, Balance):
        return data
    if answer.creator_id is None:
        raise ValueError(f"a kept {answer.source} answer names no creator")
    cid, at = answer.creator_id, answer.fetched_at
    if isinstance(parsed, FetchResult):
        variant = _core_variant(answer.params)
        return FetchRecord(cid, variant, at, code=0, billed=True, data=parsed.data)
    if isinstance(data, FollowerHistory):
        date_type = DateType(answer.params.get("dateType", DateType.DAY_30.value))
        fans = Variant.for_source(FANS, date_type)
        return FetchRecord(cid, fans, at, code=0, billed=True, followers=data.points)
    assert isinstance(data, NotePage)
    notes = Variant.for_source(NOTES)
    return FetchRecord(cid, notes, at, code=0, billed=True, note_page=data)


def _core_variant(params: Mapping[str, str]) -> Variant:
    default = Variant()
    return Variant(
        business=Business(params.get("business", default.business.value)),
        note_type=NoteType(params.get("noteType", default.note_type.value)),
        date_type=DateType(params.get("dateType", default.date_type.value)),
        advertise=Advertise(params.get("advertiseSwitch", default.advertise.value)),
        source=CORE,
    )


async def _run_rules(
    config: Config,
    store: Store,
    alerting: Alerting,
    creator_ids: set[int],
    account: Callable[[], AccountSubject],
) -> int:
    """The rules of the tracked creators among ``creator_ids``: over each series the config
    gives them, with what the schedule stored of it (nothing yet, for a series never fetched)."""
    if not creator_ids:
        return 0
    stored: dict[tuple[int, str], StatusRow] = {}
    users: dict[int, str] = {}
    for found in await store.status_rows():
        if found.creator_id in creator_ids:
            users[found.creator_id] = found.user_id
            if found.variant is not None:
                stored[found.creator_id, found.variant.label] = found
    tracked: dict[str, CreatorConfig] = {c.user_id: c for c in config.creators}
    ran = 0
    for creator_id, user_id in users.items():
        entry = tracked.get(user_id)
        if entry is None:
            continue  # no longer tracked: its data is stored, no rule speaks for it
        facts = []
        for _source, variant in config.series_of(entry):
            state = stored.get((creator_id, variant.label))
            facts.append(
                SeriesFacts(
                    variant=variant,
                    last_success_at=None if state is None else state.last_success_at,
                    consecutive_failures=0 if state is None else state.consecutive_failures,
                    last_code=None if state is None else state.last_code,
                    tracked_since=None,
                )
            )
        await alerting.evaluate_creator(creator_id, entry.creator(), facts, account())
        ran += 1
    return ran


def _by_source(read: Mapping[str, int]) -> str:
    return ", ".join(f"{name} {count}" for name, count in sorted(read.items()))


def report_lines(report: ReparseReport, kept_before: int) -> Sequence[str]:
    """What ``reparse`` prints."""
    if kept_before == 0:
        return ["reparse: no kept answers wait to be read"]
    lines = [
        f"reparse: {report.total_read} of {kept_before} kept answers read"
        + (f" ({_by_source(report.read)})" if report.read else "")
        + (f"; rules ran for {report.creators} creators" if report.creators else "")
    ]
    if report.unreadable:
        lines.append(
            f"reparse: {report.unreadable} still unreadable by this version, kept "
            f"(first: {report.first_reason})"
        )
    return lines
