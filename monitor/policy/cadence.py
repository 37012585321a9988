"""When each creator x variant is due: stable slots inside its cadence, catch-up after downtime,
the fetch window, most-overdue-first picking, and the call plan that ``check`` prints.
Pure: time is passed in; no clock reads, no I/O, no database.
"""

from __future__ import annotations

import hashlib
import heapq
import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Literal, Protocol, TypeVar
from zoneinfo import ZoneInfo

from monitor.config import Config
from monitor.display import format_duration
from monitor.model import Variant
from monitor.policy.concurrency import AUTO_CAP, INITIAL_LATENCY, needed_in_flight

#: the grid every cadence is laid on; any fixed instant works, the hash gives the phase
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
DAY = timedelta(days=1)
UNTAGGED = "(untagged)"
#: above this share of the budget, retries and probes have little room left
TIGHT_SHARE = 0.8


def slot_key(user_id: str, variant: Variant) -> str:
    """The stable name of one series: what the slot offset is hashed from."""
    return f"{user_id}/{variant.label}"


def first_due_micros(key: str, every_us: int, now_us: int) -> int:
    """The slot for a series with no schedule yet: its latest slot at or before ``now_us``,
    in integer microseconds since ``EPOCH`` (what the live timetable holds, for 100,000 new
    series at a first start without a datetime made per series).

    It is due at once (a new creator gets data on the first dispatch), and how far the slot
    lies behind now orders a crowd of new series by their place in the cadence.

    The key's slots fall at the same offset inside each cadence, in whole seconds: blake2b of
    the key rather than ``hash()``, as Python salts str hashes per process and the offsets must
    survive restarts and agree between instances; hash values are uniform, so N keys with one
    cadence spread evenly across it. (One function, no helper: 100,000 calls at a first start.)
    """
    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest()
    phase = int.from_bytes(digest, "big") % max(1, every_us // 1_000_000) * 1_000_000
    return phase + (now_us - phase) // every_us * every_us


def next_due(previous_due: datetime, every: timedelta, now: datetime) -> datetime:
    """The next slot on ``previous_due``'s grid strictly after ``now`` (at least one step on).

    After downtime this skips the missed slots instead of bursting them: the history backfills
    itself because every call returns the whole 30/90-day window.
    """
    if now < previous_due:
        return previous_due + every
    return previous_due + ((now - previous_due) // every + 1) * every


def apply_window(slot: datetime, fetch_after: time | None, zone: ZoneInfo) -> datetime:
    """The time a slot actually runs: a slot earlier in its local day than ``fetch_after``
    moves to ``fetch_after`` that same day. Keep storing the slot itself, so the grid never
    drifts; several early slots of one day all land on ``fetch_after`` and ``next_due`` then
    skips the ones already passed.
    """
    if fetch_after is None:
        return slot
    local = slot.astimezone(zone)
    if local.time() >= fetch_after:
        return slot
    return datetime.combine(local.date(), fetch_after, tzinfo=zone).astimezone(UTC)


class Due(Protocol):
    """Anything with a stable key and a due time can be picked."""

    @property
    def key(self) -> str: ...

    @property
    def due_at(self) -> datetime: ...


DueT = TypeVar("DueT", bound=Due)


def pick_due(entries: Iterable[DueT], now: datetime, available: int) -> list[DueT]:
    """Up to ``available`` entries due at ``now``, most overdue first, ties by key.

    Nobody starves: an entry left out keeps its due time and only grows more overdue, while
    rescheduled entries get due times after ``now``, so it reaches the front in finite time.
    """
    # a partial sort of a stream: with 100,000 series due only ``available`` are ever held
    due = (entry for entry in entries if entry.due_at <= now)
    return heapq.nsmallest(max(0, available), due, key=lambda entry: (entry.due_at, entry.key))


@dataclass(frozen=True, slots=True)
class Plan:
    """Calls per day the config needs against what the budget allows."""

    calls_per_day: float
    series: int  # creator x variant pairs fetched
    rate_capacity: int  # calls_per_minute x 1440
    daily_calls: int
    by_tag: tuple[tuple[str, float], ...]  # calls/day per tag, largest first
    advice: tuple[str, ...]
    #: calls/day per source (core, fans, notes, balance), in that order, those in use only
    by_source: tuple[tuple[str, float, int], ...] = ()
    #: note-list pages a visit may read at most (the plan counts page 1 of each visit)
    notes_pages: int = 1
    #: fetches in flight that keep calls_per_minute going at ``concurrency.INITIAL_LATENCY``
    needed_in_flight: int = 1
    max_in_flight: int | Literal["auto"] = "auto"
    calls_per_minute: int = 30

    @property
    def capacity(self) -> int:
        return min(self.rate_capacity, self.daily_calls)

    @property
    def fits(self) -> bool:
        return self.calls_per_day <= self.capacity

    def lines(self) -> list[str]:
        """The plan as ``check`` prints it."""
        verdict = "fits" if self.fits else "DOES NOT FIT"
        balance = " and the balance" if any(s == "balance" for s, *_ in self.by_source) else ""
        out = [
            f"call plan: {self.calls_per_day:.1f} calls/day for {self.series} series{balance}; "
            f"budget allows {self.capacity} (daily_calls {self.daily_calls}, "
            f"calls_per_minute x 1440 = {self.rate_capacity}): {verdict}",
        ]
        if len(self.by_source) > 1 or (self.by_source and self.by_source[0][0] != "core"):
            out.extend(self._source_line(*entry) for entry in self.by_source)
        out.extend(f"  tag {tag}: {calls:.1f} calls/day" for tag, calls in self.by_tag)
        out.append(self._concurrency_line())
        out.extend(f"  advice: {line}" for line in self.advice)
        if self.max_in_flight != "auto" and self.max_in_flight < self.needed_in_flight:
            most = self.max_in_flight / INITIAL_LATENCY * 60
            out.append(
                f"  advice: max_in_flight = {self.max_in_flight} lets at most {most:.0f} "
                f"calls/min through at {INITIAL_LATENCY:.0f} s per call, under calls_per_minute "
                f'{self.calls_per_minute}: set schedule.max_in_flight = "auto"'
            )
        return out

    def _source_line(self, source: str, calls: float, series: int) -> str:
        if source == "balance":
            return f"  source balance: {calls:.1f} calls/day (the account, [account] balance_every)"
        line = f"  source {source}: {calls:.1f} calls/day for {series} series"
        if source == "notes" and self.notes_pages > 1:
            line += (
                f" (page 1 per visit; up to {self.notes_pages} pages when a creator posted "
                "more than a page since the last visit)"
            )
        return line

    def _concurrency_line(self) -> str:
        needs = (
            f"concurrency: {self.needed_in_flight} calls in flight keep "
            f"{self.calls_per_minute} calls/min going at {INITIAL_LATENCY:.0f} s per call"
        )
        if self.max_in_flight == "auto":
            return (
                f'{needs}; max_in_flight = "auto" follows the observed latency (at most {AUTO_CAP})'
            )
        return f"{needs}; max_in_flight = {self.max_in_flight}"


class _Cost:
    """What one creator's series cost a day (``each``: per series, by source), and how many
    creators share it; ``kept`` holds the objects its key names by identity."""

    __slots__ = ("calls", "creators", "each", "kept")

    def __init__(self, kept: object, each: list[tuple[str, float]]) -> None:
        self.kept = kept
        self.each = each
        self.calls = sum(calls for _, calls in each)
        self.creators = 0


def call_plan(config: Config) -> Plan:
    """Sum ``86400 / every`` over every series of every source (and the balance readings) and
    compare with the budget."""
    total = 0.0
    series = 0
    tag_calls: dict[str, float] = {}
    tag_series: dict[str, int] = {}
    source_calls: dict[str, float] = {}
    source_series: dict[str, int] = {}
    # a creator's calls a day per series follow from its variants, sources and cadences:
    # creators without overrides share them, so theirs are worked out once, not 100,000
    # times at start-up (keyed by the tuples' identity, kept in the value so that no id is
    # reused while the loop runs), and each is counted once with the creators that share it
    costs: dict[tuple[int, int, object, object], _Cost] = {}
    # that of a creator that sets nothing of its own (most of them): found without a key
    shared: _Cost | None = None
    follows_defaults = config.follows_defaults
    for creator in config.creators:
        plain = follows_defaults(creator)
        cost = shared if plain else None
        if cost is None:
            variants, sources = config.variants_of(creator), config.sources_of(creator)
            key = (id(variants), id(sources), creator.every, creator.every_source)
            cost = costs.get(key)
            if cost is None:
                each = [
                    (source, DAY / config.every_source_of(creator, source))
                    for source, _variant in config.series_of(creator)
                ]
                cost = costs[key] = _Cost((variants, sources), each)
            if plain:
                shared = cost
        cost.creators += 1
        for tag in creator.tags or (UNTAGGED,):
            tag_calls[tag] = tag_calls.get(tag, 0.0) + cost.calls
            tag_series[tag] = tag_series.get(tag, 0) + len(cost.each)
    for cost in costs.values():
        total += cost.calls * cost.creators
        series += len(cost.each) * cost.creators
        for source, calls in cost.each:
            source_calls[source] = source_calls.get(source, 0.0) + calls * cost.creators
            source_series[source] = source_series.get(source, 0) + cost.creators
    balance_every = config.account.balance_every
    if balance_every is not None:
        source_calls["balance"] = DAY / balance_every
        total += source_calls["balance"]
    by_source = tuple(
        (name, source_calls[name], source_series.get(name, 0))
        for name in ("core", "fans", "notes", "balance")
        if name in source_calls
    )
    by_tag = tuple(sorted(tag_calls.items(), key=lambda kv: (-kv[1], kv[0])))
    budget = config.budget
    rate_capacity = budget.calls_per_minute * 1440
    advice = _advice(
        total,
        series,
        rate_capacity=rate_capacity,
        daily_calls=budget.daily_calls,
        by_tag=by_tag,
        tag_series=tag_series,
    )
    return Plan(
        total,
        series,
        rate_capacity,
        budget.daily_calls,
        by_tag,
        advice,
        needed_in_flight=needed_in_flight(budget.calls_per_minute, INITIAL_LATENCY),
        max_in_flight=config.schedule.max_in_flight,
        calls_per_minute=budget.calls_per_minute,
        by_source=by_source,
        notes_pages=config.defaults.notes_pages,
    )


def _advice(
    total: float,
    series: int,
    *,
    rate_capacity: int,
    daily_calls: int,
    by_tag: tuple[tuple[str, float], ...],
    tag_series: dict[str, int],
) -> tuple[str, ...]:
    capacity = min(rate_capacity, daily_calls)
    if total <= capacity:
        if total > TIGHT_SHARE * capacity:
            return (
                f"the plan uses {total / capacity:.0%} of the budget; retries, probes and "
                "`fetch` draw from it too",
            )
        return ()
    needed = math.ceil(total)
    raise_it = f"raise budget.daily_calls to {needed}" if total > daily_calls else ""
    if total > rate_capacity:
        per_minute = f"budget.calls_per_minute to {math.ceil(total / 1440)}"
        raise_it = f"{raise_it} and {per_minute}" if raise_it else f"raise {per_minute}"
    out = [raise_it]
    excess = total - capacity
    for tag, calls in by_tag:
        if calls > excess:
            every = _every_for(tag_series[tag], calls - excess)
            who = "the untagged creators" if tag == UNTAGGED else f"tag {tag!r}"
            out.append(f"or set every = {format_duration(every)} for {who}")
            break
    out.append(f"or set every = {format_duration(_every_for(series, capacity))} for every creator")
    return tuple(out)


def _every_for(series: int, calls_per_day: float) -> timedelta:
    """The shortest readable cadence at which ``series`` series need at most ``calls_per_day``."""
    seconds = series * DAY.total_seconds() / calls_per_day
    unit = 60 if seconds <= 3600 else 3600 if seconds <= 60 * 3600 else 86400
    return timedelta(seconds=math.ceil(seconds / unit) * unit)
