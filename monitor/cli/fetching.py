"""``fetch``: one creator now, or every configured creator and variant once, through the same
gate, budget and spill as the daemon (``--dry-run`` stores nothing). Listed in
``monitor.cli.commands.HANDLERS``, where the CLI looks handlers up."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from monitor import app
from monitor.app import BudgetGate, Ending, Fetcher, Run, Slot, SlotFate, Spill, Store, fetch_parts
from monitor.cli import arguments, history_output, output, source_output
from monitor.config import Config, CreatorConfig
from monitor.display import labelled_time
from monitor.errors import BudgetError, ConfigError, MonitorError, StoreError, WritesRefused
from monitor.model import CORE, FANS, NOTES, Creator, DateType, Variant
from monitor.policy import cadence
from monitor.policy.budget_state import RATE_LIMITED

#: the notes ``fetch --source notes`` shows: one page's worth
NOTES_PAGE = 8

#: what ``_run_slot`` says of a run the interrupt stopped (or never started)
_NOT_RUN = Run(SlotFate.KEEP, Ending.REFUSED, "interrupted")


def _now() -> datetime:
    return datetime.now(UTC)


def fetch(args: argparse.Namespace, config: Config) -> int:
    if bool(args.user_id) == bool(args.all):
        raise ConfigError("fetch", "give either a CREATOR (user id or configured name) or --all")
    if args.user_id:  # checked before any call: a name becomes its id, a bad id costs nothing
        ref = arguments.resolve_creator(config, args.user_id, arg="CREATOR")
        if not args.adhoc:  # an id configured nowhere is a typo until --adhoc says otherwise
            arguments.refuse_unconfigured(config, ref, arg="CREATOR")
        args.user_id = ref.user_id
    if args.dry_run and args.source not in (None, CORE):
        raise ConfigError(
            "--dry-run", "prints core metrics only; fetch --source fans or notes stores them"
        )
    with _pause_said_once():
        if args.all:
            return asyncio.run(_fetch_all(config, args.source))
        return asyncio.run(_fetch(args, config))


@contextlib.contextmanager
def _pause_said_once() -> Iterator[None]:
    """The command's own error line says a pause its call began (every error is one line);
    the gate's log line of the transition, meant for the daemon's log, would be a second."""

    def said_by_the_command(record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("calls paused")

    logger = logging.getLogger("monitor.service.fetching.gate")
    logger.addFilter(said_by_the_command)
    try:
        yield
    finally:
        logger.removeFilter(said_by_the_command)


class Interrupt:
    """SIGTERM or Ctrl-C while a command fetches. No new call goes; a call already paid for is
    waited for, so its answer is stored (or spilled); a second signal stops that wait."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.first = asyncio.Event()
        self.again = asyncio.Event()
        #: a paid call whose answer the second signal gave up on
        self.abandoned = False

    def __call__(self, signum: int) -> None:
        if self.signum is None:
            self.signum = signum
            self.first.set()
        else:
            self.again.set()

    @property
    def code(self) -> int:
        """The shell's code for death by this signal: 143 for SIGTERM, 130 for Ctrl-C."""
        return 128 + (self.signum or 0)

    def line(self, kept: str) -> str:
        name = signal.Signals(self.signum or signal.SIGTERM).name
        lost = (
            "; the answer of the call on the wire was given up at the second signal"
            if self.abandoned
            else ""
        )
        return f"interrupted by {name}: {kept}{lost}"


@contextlib.contextmanager
def _trapped() -> Iterator[Interrupt]:
    interrupt = Interrupt()
    if threading.current_thread() is not threading.main_thread():
        # signals reach the main thread only: a command run from another one (a test's
        # ``asyncio.to_thread``, an embedding) has none to trap, and asyncio refuses to try
        yield interrupt
        return
    loop = asyncio.get_running_loop()
    signals = (signal.SIGTERM, signal.SIGINT)
    for signum in signals:
        loop.add_signal_handler(signum, interrupt, signum)
    try:
        yield interrupt
    finally:
        for signum in signals:
            loop.remove_signal_handler(signum)


async def _run_slot(fetcher: Fetcher, slot: Slot, interrupt: Interrupt) -> tuple[bool, Run]:
    """``fetcher.run(slot)`` unless interrupted, and how it ended; False when the interrupt
    came first: before the call was paid for it is cancelled (nothing spent), after it its
    answer is waited for (stored or spilled), up to a second signal. A run that sent no call
    because the database refuses writes is the command's error (``WritesRefused``)."""
    if interrupt.signum is not None:
        return False, _NOT_RUN
    run = asyncio.ensure_future(fetcher.run(slot))
    for stop in (interrupt.first, interrupt.again):
        waiting = asyncio.ensure_future(stop.wait())
        await asyncio.wait({run, waiting}, return_when=asyncio.FIRST_COMPLETED)
        waiting.cancel()
        if run.done():
            ended = run.result()  # its errors are the caller's
            if ended.ending is Ending.REFUSED:
                raise WritesRefused(ended.reason)
            if ended.ending is Ending.RULES_OWED:
                raise StoreError(ended.reason)
            return interrupt.signum is None, ended
        if not fetcher.sending(slot.key):  # not paid for yet: nothing is lost
            break
    interrupt.abandoned = fetcher.sending(slot.key)
    run.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await run
    return False, _NOT_RUN


class RateLimitNotice:
    """The gate's sleep for a command: a call held by the upstream's rate limit (a 302 and
    its Retry-After, up to an hour) says so once, with when the hold ends, instead of waiting
    silently. A signal ends the wait without spending anything (``_run_slot``)."""

    def __init__(self, config: Config) -> None:
        self.gate: BudgetGate | None = None
        self._zone = ZoneInfo(config.budget.timezone)
        self._said: datetime | None = None

    async def __call__(self, seconds: float) -> None:
        state = None if self.gate is None else self.gate.state
        now = _now()
        if (
            state is not None
            and state.pause_code == RATE_LIMITED
            and state.paused_until is not None
            and state.paused_until > now + timedelta(seconds=2)
            and state.paused_until != self._said
        ):
            self._said = state.paused_until
            until = labelled_time(state.paused_until, self._zone)
            print(
                f"waiting: {state.pause_reason or 'upstream rate limit (302)'}; every call is "
                f"held until {until} (Ctrl-C stops; nothing is spent)",
                file=sys.stderr,
            )
        await asyncio.sleep(seconds)


def _default_variant(config: Config) -> Variant:
    d = config.defaults
    return Variant(d.business, d.note_type, d.date_type, d.advertise)


async def _fetch(args: argparse.Namespace, config: Config) -> int:
    """One call now, through the same gate as the daemon; ``--dry-run`` spends inside the caps
    like any call but stores nothing."""
    entry = next((c for c in config.creators if c.user_id == args.user_id), None)
    source = args.source or CORE
    variant = _series(config, entry, source)
    creator = entry.creator() if entry else Creator(user_id=args.user_id)
    notice = RateLimitNotice(config)
    async with fetch_parts(
        config, clock=_now, sleep=notice, create_schema=True, strict_spill=True, retries=False
    ) as parts:
        notice.gate = parts.gate
        store, fetcher = parts.store, parts.fetcher
        if args.dry_run:
            slot = _slot(config, creator, 0, variant)
            slot.failure_said()  # the command's own error line says it, once
            if (run := await fetcher.run(slot, dry_run=True)).ending is Ending.REFUSED:
                raise WritesRefused(run.reason)
            reading = await parts.gate.reading()
            if slot.consecutive_failures or fetcher.last_result is None:
                raise MonitorError(output.plain_error(slot.last_error or "failed"))
            history_output.print_points(fetcher.last_result.data.daily, sys.stdout)
            print(
                f"dry run: {fetcher.calls} call(s) spent inside the budget "
                f"({reading.calls_today} of {reading.daily_calls} used today); nothing stored",
                file=sys.stderr,
            )
            return 0
        # sync every configured creator: syncing only this one would mark the rest inactive
        configured = [c.creator() for c in config.creators]
        extra = [] if entry else [creator]
        ids = await store.sync_creators([*configured, *extra])
        if extra:  # an --adhoc creator gets an id for its history, then is not tracked again
            await store.sync_creators(configured)
        slot = _slot(config, creator, ids[args.user_id], variant)
        slot.failure_said()  # the command's own error line says it, once
        with _trapped() as interrupt:
            finished, run = await _run_slot(fetcher, slot, interrupt)
            if run.held is not None:  # paid for: show it, say where it waits, exit 1
                if run.held.data is not None:
                    history_output.print_points(run.held.data.daily, sys.stdout)
                print(_held_line(parts.spill), file=sys.stderr)
                return interrupt.code if interrupt.signum else 1
        if not finished:
            if fetcher.calls and not interrupt.abandoned:
                await _print_stored(config, store, args.user_id, variant)
                kept = "the answer already paid for is stored"
            else:
                kept = "no call was sent" if not fetcher.calls else "nothing stored"
            print(interrupt.line(kept), file=sys.stderr)
            return interrupt.code
        if slot.consecutive_failures:
            error = output.plain_error(slot.last_error or "failed")
            pause = parts.gate.hard_pause(_now())
            raise MonitorError(error if pause is None else f"{error}; calls paused: {pause}")
        await _print_stored(config, store, args.user_id, variant)
    return 0


def _series(config: Config, entry: CreatorConfig | None, source: str) -> Variant:
    """The series ``fetch`` reads for a creator: its first core variant, or its follower or
    note series as the daemon tracks it (an untracked source: as it would be tracked)."""
    if source == CORE:
        return config.variants_of(entry)[0] if entry else _default_variant(config)
    if entry is not None:
        tracked = config.series_of(entry)
        found = next((v for s, v in tracked if s == source), None)
        if found is not None:
            return found
        widest = max((v.date_type for v in config.variants_of(entry)), default=DateType.DAY_30)
        return Variant.for_source(source, widest)
    return Variant.for_source(source, config.defaults.date_type)


async def _print_stored(config: Config, store: Store, user_id: str, variant: Variant) -> None:
    """What the fetch stored, as ``history`` (``--source fans``) and ``notes`` show it."""
    if variant.source == FANS:
        _, days = await app.creator_followers(config, store, user_id, since=None, arg="CREATOR")
        source_output.print_followers(days, "table", sys.stdout)
    elif variant.source == NOTES:
        _, lines = await app.creator_notes(
            config, store, user_id, limit=NOTES_PAGE, since=None, arg="CREATOR"
        )
        source_output.print_notes(lines, "table", sys.stdout)
    else:
        rows = await store.history_rows(user_id, variant=variant)
        history_output.print_history(rows, None, "table", sys.stdout)


def _slot(config: Config, creator: Creator, creator_id: int, variant: Variant) -> Slot:
    return Slot(
        key=cadence.slot_key(creator.user_id, variant),
        creator_id=creator_id,
        creator=creator,
        variant=variant,
        every=config.defaults.every,
        due_at=_now(),
    )


async def _fetch_all(config: Config, source: str | None = None) -> int:
    """Every series of every configured creator once (each core variant, and its followers and
    notes where its ``sources`` ask for them; only ``source``'s when given), paced by the
    budget; stops when it is spent."""
    creators = [entry.creator() for entry in config.creators]
    slots = [
        (e.creator(), v)
        for e in config.creators
        for s, v in config.series_of(e)
        if source is None or s == source
    ]
    if not slots:
        raise ConfigError("creators", "no creators configured; nothing to fetch")
    done: list[Slot] = []
    stopped: str | None = None
    notice = RateLimitNotice(config)
    async with fetch_parts(
        config, clock=_now, sleep=notice, create_schema=True, strict_spill=True, retries=False
    ) as parts:
        notice.gate = parts.gate
        store, fetcher, spill = parts.store, parts.fetcher, parts.spill
        reading = await parts.gate.reading()
        left = reading.daily_calls - reading.calls_today
        if left < len(slots):
            print(f"note: {left} calls left today for {len(slots)} series", file=sys.stderr)
        ids = await store.sync_creators(creators)
        with output.progress(len(slots), "fetch") as bar, _trapped() as interrupt:
            for creator, variant in slots:
                slot = _slot(config, creator, ids[creator.user_id], variant)
                try:
                    finished, run = await _run_slot(fetcher, slot, interrupt)
                except BudgetError as exc:
                    stopped = str(exc)
                    break
                if run.ending is Ending.HELD:  # paid for but not stored: no further call goes
                    done.append(slot)
                    stopped = "the database refuses writes"
                    break
                if not finished:
                    if fetcher.calls > len(done) and not interrupt.abandoned:
                        done.append(slot)  # its answer came in after the signal: stored
                    break
                done.append(slot)
                bar.update(1)
                if fetcher.unreached:  # the next creator would only meet the same closed door
                    stopped = output.plain_error(slot.last_error or "the upstream is unreachable")
                    break
    if interrupt.signum is not None:
        stopped = f"interrupted by {signal.Signals(interrupt.signum).name}"
    output.print_fetched(done, fetcher.calls, len(slots), stopped, sys.stdout)
    if interrupt.signum is not None:
        held = f", {spill.held} kept in {spill.where()}" if spill.waiting else ""
        kept = (
            f"{len(done) - spill.held} answers stored{held}; "
            f"{len(slots) - len(done)} of {len(slots)} series not fetched "
            "(fetch --all again fetches every series once more)"
        )
        print(interrupt.line(kept), file=sys.stderr)
        return interrupt.code
    if spill.waiting:
        print(_held_line(spill), file=sys.stderr)
        return 1
    return 0 if len(done) == len(slots) and not any(s.consecutive_failures for s in done) else 1


def _held_line(spill: Spill) -> str:
    return (
        f"the database refuses writes: {spill.held} paid answers kept in {spill.where()}; "
        "they are stored when the database takes writes (the next fetch or run does it)"
    )
