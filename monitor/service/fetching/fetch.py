"""One series (a creator's core variant, followers or notes), one due time: budget → client →
store → rules → alerts → outbox.

The only place the leaves meet. Retries what the budget module calls retryable, within the
budget; logs a creator's failure once when it starts and once when it ends, never per retry.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from monitor.config import ApiErrorRule, Config
from monitor.errors import (
    AccountBlocked,
    BudgetError,
    InvalidRequest,
    QuotaExceeded,
    RateLimited,
    StoreError,
    TransportError,
    Unreached,
    UnreadableAnswer,
    UpstreamError,
)
from monitor.model import Answer, FetchResult, NotePage
from monitor.ops.wallclock import Clock
from monitor.policy import budget as budget_rules
from monitor.policy import cadence
from monitor.service.alerting.evaluation import Alerting
from monitor.service.fetching.attempt import error_text, record_of
from monitor.service.fetching.budget_view import Ticket
from monitor.service.fetching.gate import BudgetGate
from monitor.service.fetching.owed import OwedRules
from monitor.service.fetching.slot import Ending, Run, Slot, SlotFate
from monitor.service.fetching.spill import Spill
from monitor.store import FetchRecord, Store
from monitor.store.ledger import LedgerDay
from monitor.upstream.client import JustOneClient
from monitor.upstream.notes import PAGE_SIZE as NOTES_PAGE_SIZE
from monitor.upstream.sources import Reading, read_source

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]
#: told about every answered call: (code or failure kind, billed); telemetry counts them
Observe = Callable[[int | str, bool], None]


@dataclass(frozen=True, slots=True)
class _How:
    """How one ``Fetcher.run`` calls, handed down to each attempt."""

    probe: bool
    keep_raw: bool
    reschedule: bool
    dry_run: bool


def fate_of(error: UpstreamError | None) -> SlotFate:
    """What the last attempt of a due time means for the slot."""
    if isinstance(error, InvalidRequest):
        return SlotFate.BROKEN
    if isinstance(error, AccountBlocked | QuotaExceeded):
        return SlotFate.KEEP
    return SlotFate.DONE


def _code_label(result: Reading | None, error: UpstreamError | None) -> int | str:
    if result is not None:
        return result.code
    assert error is not None
    if error.code is not None:
        return error.code
    # no envelope: a gateway body or an HTML page (HTTP status), or no answer at all
    return "transport" if error.http_status is None else f"http_{error.http_status}"


class Fetcher:
    """Runs one slot through a full fetch; shared by the daemon, ``fetch`` and the demo."""

    def __init__(
        self,
        config: Config,
        client: JustOneClient,
        store: Store,
        gate: BudgetGate,
        alerting: Alerting | None,
        *,
        clock: Clock,
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
        observe: Observe | None = None,
        on_latency: Callable[[float], None] | None = None,
        spill: Spill | None = None,
    ) -> None:
        self._config = config
        self._client = client
        self._store = store
        self._gate = gate
        self._alerting = alerting
        self._clock = clock
        self._sleep = sleep
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self._observe = observe
        #: told each call's latency in seconds (the "auto" in-flight sizer)
        self.on_latency = on_latency
        self.calls = 0
        #: retry what may succeed later (the daemon); a command makes one call and says how it went
        self.retries = True
        #: the last answer of a ``dry_run`` (not stored)
        self.last_result: FetchResult | None = None
        #: answers the database refused wait here; while any do, no call is sent
        self._hold = spill if spill is not None else Spill(None)
        #: slot keys whose call is on the wire, being recorded or having its rules run: a stop
        #: lets these finish (``sending``)
        self._sending: set[str] = set()
        #: slots whose answer was stored but whose rules the database refused to run
        self._owed = OwedRules(clock)
        #: the last call never reached a server (``fetch --all`` stops trying then)
        self.unreached = False
        #: note-list visits whose next page is to be read (every note on the last was new)
        self._more_pages: dict[str, bool] = {}
        #: sources whose unreadable answer was logged (once each per process)
        self._unreadable_told: set[str] = set()

    def reconfigure(self, config: Config) -> None:
        """A reloaded config: its retries, cadence and rules apply from the next attempt."""
        self._config = config

    def sending(self, key: str) -> bool:
        """Whether the series ``key`` has a call on the wire, being recorded or having its
        rules run (a stop lets it finish; before that, nothing is paid for yet)."""
        return key in self._sending

    async def run(
        self,
        slot: Slot,
        *,
        probe: bool = False,
        keep_raw: bool = True,
        reschedule: bool = False,
        dry_run: bool = False,
    ) -> Run:
        """Fetch until this due time is served or must wait; raises BudgetError when the
        budget will not allow the first call (the slot stays due), StoreError when a write
        other than the answer's own failed (the ledger's: no call goes until one succeeds).

        With ``reschedule`` (the daemon), the attempt that serves the due time also moves the
        slot to its next due time, in the same transaction as its fetch record. A ``dry_run``
        spends and calls like any other run but stores nothing (``last_result`` has the answer).
        """
        how = _How(probe=probe, keep_raw=keep_raw, reschedule=reschedule, dry_run=dry_run)
        try:
            attempt = 0
            while True:
                # a refused write (of any call) stops the retries: no call is bought whose
                # answer could not be stored
                sent = await self._call_once(slot, attempt, how)
                if isinstance(sent, Run):
                    return sent
                error = sent
                if error is None or not self._should_retry(error, attempt, probe):
                    break
                if not dry_run and self._count_reached(slot):
                    await self._evaluate_between(slot)
                self._sending.discard(slot.key)  # a stop may cancel the wait for a retry
                attempt += 1
                cfg = self._config.schedule
                await self._sleep(
                    budget_rules.retry_delay(attempt, cfg.retry_base, cfg.retry_max, self._rng)
                )
            if error is None and not dry_run:
                error = await self._follow_pages(slot, how)
            if not dry_run:
                try:
                    await self._evaluate(slot)
                except StoreError as exc:
                    self._owe(slot)  # stored; its rules run once writes go again
                    why = f"the rules of {_who(slot)} wait: {exc}"
                    self._hold.refused(StoreError(why))  # no call goes until a write goes
                    return Run(fate_of(error), Ending.RULES_OWED, why)
        except StoreError as exc:
            self._hold.refused(exc)  # no call goes until a write goes through again
            raise
        finally:
            self._sending.discard(slot.key)
        return Run(fate_of(error))

    async def _follow_pages(self, slot: Slot, how: _How) -> UpstreamError | None:
        """The note list's next pages while every note on the last one was new to the monitor
        (a creator who posted more than a page since the last visit), up to ``notes_pages``
        per visit; each page is a call through the gate like any other, never retried (the
        next visit reads on). A page the budget will not allow waits for the next visit."""
        page = 2
        while self._more_pages.pop(slot.key, None) and page <= self._config.defaults.notes_pages:
            try:
                sent = await self._call_once(slot, 0, how, page)
            except BudgetError:
                return None
            if isinstance(sent, Run):
                return None  # refused or held: the visit ends here, the hold says why
            if sent is not None:
                return sent
            page += 1
        self._more_pages.pop(slot.key, None)
        return None

    async def _source_facts(
        self, slot: Slot, page: int, result: Reading | None, error: UpstreamError | None
    ) -> None:
        """What an answer means beyond its record: an unreadable one is said, a note page
        decides whether the visit reads the next."""
        if isinstance(error, UnreadableAnswer):
            self._unreadable(slot, error)
        if page == 1 or error is not None:
            self._more_pages.pop(slot.key, None)
        if isinstance(result, Answer) and isinstance(result.data, NotePage):
            await self._plan_next_page(slot, result.data)

    async def _plan_next_page(self, slot: Slot, page: NotePage) -> None:
        """Whether the visit reads the next page: only when this one was full and every note
        on it new, and the creator's notes were listed before (a first visit reads one page:
        its notes are the baseline, not a back catalogue to buy)."""
        if len(page.notes) < NOTES_PAGE_SIZE or page.page >= self._config.defaults.notes_pages:
            return
        try:
            known, visited = await self._store.note_visit(
                slot.creator_id, [entry.note.note_id for entry in page.notes]
            )
        except StoreError:
            return  # the next visit reads on
        if visited and not known:
            self._more_pages[slot.key] = True

    def _unreadable(self, slot: Slot, error: UnreadableAnswer) -> None:
        """A paid answer this version cannot read: kept whole with its fetch (``reparse``
        reads it again); said once per source and process, not once per creator."""
        if error.source in self._unreadable_told:
            return
        self._unreadable_told.add(error.source)
        log.warning(
            "a paid %s answer for %s could not be read (%s); it is kept whole: after an "
            "upgrade, `creator-monitor reparse` stores what it holds",
            error.source,
            _who(slot),
            error,
        )

    def _count_reached(self, slot: Slot) -> bool:
        """Whether this failure brought the creator's count to an ``api_error`` rule's
        ``consecutive``: the rule fires at that count, not at the end of the retries."""
        return any(
            isinstance(rule, ApiErrorRule)
            and rule.consecutive == slot.consecutive_failures
            and rule.applies_to(slot.creator)
            for rule in self._config.rules
        )

    async def _evaluate_between(self, slot: Slot) -> None:
        """The rules between two attempts; a refused rules write is owed, the retries go on."""
        try:
            await self._evaluate(slot)
        except StoreError:
            self._owe(slot)

    def _owe(self, slot: Slot) -> None:
        """The slot's answer is stored, its creator's rules refused: owed, and on file (the
        spill's) so that a restart after a kill runs them."""
        self._owed.add(slot)
        self._hold.owe(slot.creator_id, slot.variant)

    def _should_retry(self, error: UpstreamError, attempt: int, probe: bool) -> bool:
        if probe or not self.retries or attempt >= self._config.schedule.retry_attempts:
            return False
        return budget_rules.is_retryable(error) or isinstance(error, RateLimited)

    def _refused(self) -> Run:
        """No call goes: answers wait for the database, or its last write failed."""
        return Run(SlotFate.KEEP, Ending.REFUSED, str(self._hold.refusal()))

    async def _call_once(
        self, slot: Slot, attempt: int, how: _How, page: int = 1
    ) -> UpstreamError | Run | None:
        """One attempt: its error (None: a success), or the run's end when no call may go or
        the database refused its answer."""
        if self._hold.waiting:  # answers wait for the database: no new call
            return self._refused()
        ticket = await self._gate.acquire(probe=how.probe)
        # from here a stop lets the fetch finish: the call, its record and the creator's rules
        # (``run`` takes the key out again before it waits for a retry, and at its end)
        self._sending.add(slot.key)
        return await self._send(slot, attempt, how, ticket, page)

    async def _send(
        self, slot: Slot, attempt: int, how: _How, ticket: Ticket, page: int = 1
    ) -> UpstreamError | Run | None:
        """The call the gate just allowed, its feedback and its record."""
        if self._hold.waiting:  # a write failed while this call waited for the budget
            self._gate.answered()  # ``acquire`` counted it; it never goes on the wire
            return self._refused()
        self.calls += 1
        started = self._clock()
        error: UpstreamError | None = None
        result: Reading | None = None
        try:
            result = await read_source(self._client, slot.creator.user_id, slot.variant, page)
        except UpstreamError as exc:
            error = exc
        finally:
            self._gate.answered()
            if self.on_latency is not None:
                self.on_latency((self._clock() - started).total_seconds())
        billed = result.billed if result is not None else bool(error and error.billed)
        if self._observe is not None:
            self._observe(_code_label(result, error), billed)
        self.unreached = isinstance(error, Unreached)
        if self.unreached:
            await self._release(ticket)
        owed = await self._feedback(
            error, billed=billed, dry_run=how.dry_run, sent_at=ticket.sent_at
        )
        if how.dry_run:
            self.last_result = result if isinstance(result, FetchResult) else None
            if error is not None:
                slot.failed(error.code, error_text(error))
            return error
        await self._source_facts(slot, page, result, error)
        next_due: datetime | None = None
        final = error is None or not self._should_retry(error, attempt, how.probe)
        if how.reschedule and final and fate_of(error) is SlotFate.DONE and page == 1:
            # the next slot on the grid at least half a cadence away: a slot served very late
            # (new creators, catch-up after downtime) must not be fetched again minutes later
            later = self._clock() + slot.every / 2
            next_due = cadence.next_due(slot.due_at, slot.every, later)
        held = await self._record(
            slot, started, result, error, keep_raw=how.keep_raw, next_due=next_due, owed=owed
        )
        if next_due is not None:  # served: a held answer moves the stored slot on too
            slot.move_to(next_due)
        if held is not None:
            return Run(fate_of(error), Ending.HELD, held[1], held[0])
        return error

    async def _release(self, ticket: Ticket) -> None:
        """The call never reached a server: its count in ``daily_calls`` goes back."""
        try:
            await self._gate.release(ticket)
        except StoreError as exc:  # over-counted by one: the safe side; no call goes meanwhile
            self._hold.refused(exc)

    async def _feedback(
        self,
        error: UpstreamError | None,
        *,
        billed: bool,
        dry_run: bool,
        sent_at: datetime | None = None,
    ) -> LedgerDay | None:
        """Tell the gate how the call went; returns the ledger day of a billed count it did
        not write, which then goes with the stored answer (in its transaction)."""
        try:
            if billed and not dry_run and self._gate.changes_nothing(error):
                return self._gate.billed_day()  # one transaction less per fetch
            await self._gate.feedback(error, billed=billed, sent_at=sent_at)
        except StoreError as exc:
            self._hold.refused(exc)
            return self._gate.billed_day() if billed else None
        return None

    async def _record(
        self,
        slot: Slot,
        started: datetime,
        result: Reading | None,
        error: UpstreamError | None,
        *,
        keep_raw: bool,
        next_due: datetime | None,
        owed: LedgerDay | None = None,
    ) -> tuple[FetchRecord, str] | None:
        """Store the attempt and update the slot; when the database refuses it (or answers
        before it still wait), hold it and return it with the line that says so."""
        record = record_of(slot, started, result, error, keep_raw, next_due, owed)
        held: str | None = None
        if self._hold.waiting:  # behind the answers already held: they are stored in order
            held = self._hold.keep(record)
        else:
            try:
                await self._store.record_fetch(record)  # with others: one commit
            except StoreError as exc:
                held = self._hold.keep(record, exc)
        if result is not None:
            streak = slot.succeeded(started)
            if streak:
                log.info("%s recovered after %d failed calls", _who(slot), streak)
        else:
            assert error is not None
            # one line when a creator starts failing, one when it recovers; account-wide pauses
            # are the gate's to log (once for everyone), and calls that got no answer at all the
            # upstream's reachability (once for everyone, not once per creator of thousands)
            quiet = AccountBlocked | QuotaExceeded | TransportError
            if not slot.failure_logged and not isinstance(error, quiet):
                log.warning("%s failing: %s", _who(slot), error)
                slot.failure_said()
            slot.failed(error.code, error_text(error))
        return None if held is None else (record, held)

    async def evaluate(self, slot: Slot) -> None:
        """Run the creator's rules (after held answers were stored at last)."""
        await self._evaluate(slot)

    async def evaluate_owed(self, stored: Sequence[Slot] = (), *, retry: timedelta) -> None:
        """The rules owed since a refused write, and those of ``stored`` (series whose held
        answers were just stored); what the database refuses again stays owed, tried again
        ``retry`` later (``owed_due``). Once none is owed, their lines leave the spill file."""
        await self._owed.run(self._evaluate, stored, retry=retry)
        if not self._owed:
            self._hold.rules_ran()

    def owed_due(self) -> bool:
        """Rules are owed and their retry is due."""
        return self._owed.due()

    def owed_creators(self) -> int:
        """How many creators have stored answers whose rules have not run yet."""
        return self._owed.creators()

    async def _evaluate(self, slot: Slot) -> None:
        if self._alerting is None:
            return
        account = await self._gate.account()
        siblings: Sequence[Slot] = slot.siblings or [slot]
        # only the rules on this series' source: the others' data did not change (``stale``
        # and ``api_error`` run on every series whatever its source)
        await self._alerting.evaluate_creator(
            slot.creator_id,
            slot.creator,
            [s.facts() for s in siblings],
            account,
            fresh=(slot.variant.source,),
        )


def _who(slot: Slot) -> str:
    name = f"{slot.creator.name} " if slot.creator.name else ""
    return f"creator {name}({slot.creator.user_id}, {slot.variant.label})"
