"""One attempt as the store records it: the ``fetches`` row and what the answer carries (core
data points, follower counts, a note page, or an unreadable body kept whole), and the one line
of its error. Pure: builds values, stores nothing."""

from __future__ import annotations

from datetime import datetime

from monitor.errors import UnreadableAnswer, UpstreamError
from monitor.model import CoreData, FollowerHistory, NotePage
from monitor.service.fetching.slot import Slot
from monitor.service.fetching.spill import new_attempt_id
from monitor.store import FetchRecord
from monitor.store.ledger import LedgerDay
from monitor.upstream.sources import Reading


def error_text(exc: UpstreamError) -> str:
    """The one line stored in ``fetches.error``, cut at 500 characters. Safe to cut: the client
    redacts every body and message whole before it raises (a cut first would split the token)."""
    return str(exc)[:500]


def record_of(
    slot: Slot,
    started: datetime,
    result: Reading | None,
    error: UpstreamError | None,
    keep_raw: bool,
    next_due: datetime | None,
    owed: LedgerDay | None,
) -> FetchRecord:
    """The ``fetches`` row (and points) of one attempt, with its own attempt id."""
    latency: int | None
    status: int | None
    code: int | None
    text: str | None
    raw: str | None
    data: object
    if result is not None:
        latency, status, code, billed = (
            result.latency_ms,
            result.http_status,
            result.code,
            result.billed,
        )
        text, data, raw = None, result.data, result.raw_body
    else:
        assert error is not None
        latency, status, code, billed = (
            error.latency_ms,
            error.http_status,
            error.code,
            error.billed,
        )
        text, data, raw = error_text(error), None, error.raw_body
    core = data if isinstance(data, CoreData) else None
    followers = data.points if isinstance(data, FollowerHistory) else None
    note_page = data if isinstance(data, NotePage) else None
    kept = error.params if isinstance(error, UnreadableAnswer) else None
    return FetchRecord(
        creator_id=slot.creator_id,
        variant=slot.variant,
        started_at=started,
        due_at=slot.due_at,
        latency_ms=latency,
        http_status=status,
        code=code,
        billed=billed,
        error=text,
        data=core,
        followers=followers,
        note_page=note_page,
        unreadable_params=kept,
        raw_body=raw,
        keep_raw=keep_raw,
        next_due_at=next_due,
        attempt_id=new_attempt_id(started),
        billed_day=None if owed is None else owed.label,
        billed_slot=None if owed is None else owed.slot,
    )
