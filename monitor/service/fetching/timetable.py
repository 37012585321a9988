"""The live schedule of every tracked series, in flat arrays: one row per creator × variant.

100,000 creators are 100,000 rows. Held as one ``Slot`` object each, with its series name, its
due time as a ``datetime`` and a dict entry, they cost about 350 bytes a row (35 MB); here a row
is about 50 bytes of arrays (times as integer microseconds since the epoch, the creator as an
index into the config's own list, the variant and cadence as indexes into tables of the few
distinct ones). A ``Slot`` exists only while a series is being fetched: the dispatcher checks
one out (``slot``, then ``check_out``) and the finished fetch writes it back (``release``). A series
is always in exactly one place: its row, or the one live ``Slot`` that the fetcher updates.

The dispatcher asks for the rows due first on every round (``due_first``): a list of the few
hundred idle rows due first, made by one pass over the table and kept until a due time written
into its span makes it wrong, answers most rounds without looking at 100,000 rows again.

Read-only, the table is a ``Mapping`` from series name (``cadence.slot_key``) to a snapshot
``Slot``: for tests and tools, not for the dispatcher's hot paths.
"""

from __future__ import annotations

import heapq
from array import array
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from monitor.model import Creator, Variant
from monitor.ops.wallclock import micros, moment
from monitor.policy import cadence
from monitor.service.fetching.slot import Slot
from monitor.store.schedule import SlotState

_MICROSECOND = timedelta(microseconds=1)
#: no value (no success yet, no code): the smallest 64-bit integer
_NONE = -(2**63)
#: rows ``due_first`` lists per pass over the table (a round takes one or a few of them)
SHORTLIST = 256
#: after every row (rows are numbered in 32 bits); ``_NO_LIST``: before every row
_LAST_ROW = 2**32
_NO_LIST = (_NONE, -1)


def _optional(us: int) -> datetime | None:
    return None if us == _NONE else moment(us)


@dataclass(frozen=True, slots=True)
class _Due:
    """A ready row as ``cadence.pick_due`` orders it: when it runs, then its series name."""

    key: str
    due_at: datetime
    row: int


class Timetable(Mapping[str, Slot]):
    """Every series of the config: who, which variant, how often, when next, how it went."""

    def __init__(self, creators: Sequence[Creator], tracked_since: datetime) -> None:
        self._creators = creators  # the config's own list: rows index into it
        self.tracked_since = tracked_since  # the load's time, shared by every row
        self._creator = array("I")  # index into ``creators``; a creator's rows are adjacent
        self._creator_id = array("q")
        self._variant = array("B")  # index into ``_variants``
        self._variants: list[Variant] = []
        self._labels: list[str] = []  # each variant's label, made once
        self._every = array("I")  # index into ``_everies``
        self._everies: list[timedelta] = []
        self._numbers: dict[Variant | timedelta, int] = {}  # a variant's or cadence's index
        self._due = array("q")
        self._success = array("q")
        self._failures = array("l")
        self._code = array("q")
        self._broken = bytearray()
        self._logged = bytearray()  # "failing" was logged; "recovered" is owed
        self._errors: dict[int, str] = {}  # only rows whose last call failed
        self._live: dict[int, Slot] = {}  # rows being fetched: their state is the Slot's
        self._keys: dict[str, int] | None = None  # series name -> row, built when first asked
        self._unwritten = array("I")  # rows placed but not in the store's schedule yet
        # ``due_first``'s list: (due, row) of idle rows in that order, every idle row not in
        # it after ``_short_last``; None when none is made or a due time broke it
        self._short: list[tuple[int, int]] | None = None
        self._short_last = _NO_LIST

    # --- building (``slot_loading.load_slots``) -----------------------------------------------

    def variant_index(self, variant: Variant) -> int:
        """``variant``'s number in this table (the few distinct variants are kept once)."""
        at = self._numbers.get(variant)
        if at is None:
            at = self._numbers[variant] = len(self._variants)
            self._variants.append(variant)
            self._labels.append(variant.label)
        return at

    def every_index(self, every: timedelta) -> int:
        """``every``'s number in this table (each distinct cadence is kept once)."""
        at = self._numbers.get(every)
        if at is None:
            at = self._numbers[every] = len(self._everies)
            self._everies.append(every)
        return at

    def add(self, creator: int, creator_id: int, variant: int, every: int) -> None:
        """Append a row for ``creators[creator]`` (``variant`` and ``every`` as
        ``variant_index`` and ``every_index`` number them); ``seal`` once all are added."""
        self._creator.append(creator)
        self._creator_id.append(creator_id)
        self._variant.append(variant)
        self._every.append(every)

    def add_series(self, creator: int, creator_id: int, series: Sequence[tuple[int, int]]) -> int:
        """``add`` for each (variant, every) of ``series``: a creator's rows; returns the
        first one's number."""
        first = len(self._creator)
        for variant, every in series:
            self._creator.append(creator)
            self._creator_id.append(creator_id)
            self._variant.append(variant)
            self._every.append(every)
        return first

    def seal(self) -> None:
        """Every row is added: each starts unscheduled, with no call made yet."""
        rows = len(self._creator)
        self._due = array("q", [_NONE]) * rows
        self._success = array("q", [_NONE]) * rows
        self._failures = array("l", [0]) * rows
        self._code = array("q", [_NONE]) * rows
        self._broken = bytearray(rows)
        self._logged = bytearray(rows)
        self._short, self._short_last = None, _NO_LIST

    def restore(self, page: Sequence[SlotState], first_rows: Mapping[str, int]) -> None:
        """The stored state of known series (a restart keeps their due times): ``page`` as
        ``Store.slot_states`` reads it, ``first_rows`` each creator's first row by user_id.
        A stored series the config no longer names is skipped."""
        creator_ids, labels, variant = self._creator_id, self._labels, self._variant
        # ``_put`` written out: 100,000 rows at a restart, before READY
        dues, successes, failures_of = self._due, self._success, self._failures
        codes, broken_of = self._code, self._broken
        end = len(creator_ids)
        for user_id, label, creator_id, due, success, failures, code, broken in page:
            row = first_rows.get(user_id)
            if row is None:
                continue
            while row < end and creator_ids[row] == creator_id:
                if labels[variant[row]] == label:
                    dues[row] = due
                    successes[row] = _NONE if success is None else success
                    failures_of[row] = failures
                    codes[row] = _NONE if code is None else code
                    broken_of[row] = broken
                    break
                row += 1
        # what ``_set_due`` would have done for a due time inside ``due_first``'s list
        self._short, self._short_last = None, _NO_LIST

    def any_unscheduled(self) -> bool:
        return _NONE in self._due

    def place_unscheduled(self, now: datetime) -> int:
        """Give each unscheduled row its first slot in its cadence (``cadence.first_due_micros``);
        they are ``unwritten`` until the store has them. Returns how many were placed."""
        dues, creators, creator_of = self._due, self._creators, self._creator
        labels, variant_of, every_of = self._labels, self._variant, self._every
        every_us = [every // _MICROSECOND for every in self._everies]
        now_us = micros(now)
        first_due = cadence.first_due_micros
        placed = array("I")
        for row, at in enumerate(dues):
            if at != _NONE:
                continue
            name = creators[creator_of[row]].user_id + "/" + labels[variant_of[row]]
            dues[row] = first_due(name, every_us[every_of[row]], now_us)
            placed.append(row)
        self._unwritten = placed
        self._short, self._short_last = None, _NO_LIST
        return len(placed)

    def unwritten(self) -> Iterator[tuple[int, Variant, datetime]]:
        """The rows ``place_unscheduled`` placed, as the store's new schedule rows
        (creators.id, variant, first due), then forgotten: a row fetched meanwhile has its
        stored row already, which ``Store.schedule_new`` leaves as it is."""
        rows, self._unwritten = self._unwritten, array("I")
        creator_ids, variants, variant_of = self._creator_id, self._variants, self._variant
        for row in rows:
            live = self._live.get(row)
            due = live.due_at if live is not None else moment(self._due[row])
            yield creator_ids[row], variants[variant_of[row]], due

    def schedule(self, row: int, due: datetime) -> None:
        self._set_due(row, micros(due))

    # --- reading a row ------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._creator)

    def creator(self, row: int) -> Creator:
        return self._creators[self._creator[row]]

    def creator_id(self, row: int) -> int:
        return self._creator_id[row]

    def variant(self, row: int) -> Variant:
        return self._variants[self._variant[row]]

    def every(self, row: int) -> timedelta:
        return self._everies[self._every[row]]

    def label(self, row: int) -> str:
        return self._labels[self._variant[row]]

    def key(self, row: int) -> str:
        """The series name, as ``cadence.slot_key`` makes it."""
        return self.creator(row).user_id + "/" + self.label(row)

    def due_at(self, row: int) -> datetime:
        live = self._live.get(row)
        return live.due_at if live is not None else moment(self._due[row])

    def find(self, creator_id: int, variant: Variant) -> int | None:
        """The row of one series (a scan at C speed: for the few records of a claim or a
        stored backlog, not for every series)."""
        try:
            first = self._creator_id.index(creator_id)
        except ValueError:
            return None
        return next((r for r in range(*self._group(first)) if self.variant(r) == variant), None)

    # --- what the dispatcher asks on every round ----------------------------------------------

    def earliest(self) -> datetime | None:
        """The earliest stored due time of a row neither broken nor being fetched."""
        broken, live = self._broken, self._live
        idle = (due for row, due in enumerate(self._due) if not broken[row] and row not in live)
        found = min(idle, default=None)
        return None if found is None else moment(found)

    def due_first(self, bound: datetime) -> Iterator[int]:
        """Rows neither broken nor being fetched whose stored due time is at or before
        ``bound`` (``cluster.ready_bound``: what is ready under ``fetch_after``), most overdue
        first: by stored due time, then by row. Lazy; most rounds read their few rows from
        the list an earlier pass over the table made (``SHORTLIST`` rows) instead of passing
        over 100,000 rows again."""
        limit = micros(bound)
        dues, broken, live = self._due, self._broken, self._live
        short = self._short
        if short is None:
            short = self._shortlist(limit, SHORTLIST)
        else:  # rows handed out since, or moved: never valid again while the list lasts
            stale = 0
            for due, row in short:
                if dues[row] == due and not broken[row] and row not in live:
                    break
                stale += 1
            del short[:stale]
        handed: set[int] = set()
        while True:
            for due, row in short:
                if due > limit:
                    return
                valid = dues[row] == due and not broken[row] and row not in live
                if valid and row not in handed:
                    handed.add(row)
                    yield row
            if self._short is not short or self._short_last >= (limit, _LAST_ROW):
                return  # every ready row was in the list (or a due time broke it)
            # the caller wants more than the list holds: a longer one (twice as long, so that
            # reading every row costs a few passes), after the rows handed out
            short = self._shortlist(limit, max(len(handed) + SHORTLIST, 2 * len(short)))

    def _shortlist(self, limit: int, size: int) -> list[tuple[int, int]]:
        """One pass over the table: the ``size`` idle rows due first by ``limit``."""
        dues, broken, live = self._due, self._broken, self._live
        ready = (
            (due, row)
            for row, due in enumerate(dues)
            if due <= limit and not broken[row] and row not in live
        )
        short = heapq.nsmallest(size, ready)
        # every idle row not in the list comes after its last: the list is whole until a
        # row's due time is written at or before that (``_set_due``)
        self._short = short
        self._short_last = short[-1] if len(short) == size else (limit, _LAST_ROW)
        return short

    def pick(
        self,
        bound: datetime,
        now: datetime,
        count: int,
        effective: Callable[[datetime], datetime],
    ) -> list[int]:
        """The ``count`` rows ``cadence.pick_due`` picks from every row ready by ``bound``,
        ``effective`` being when a stored due time runs (``apply_window``: it keeps order),
        read from the front of ``due_first`` alone: the first ``count`` rows and every row
        that ties with the last of them when it runs (``fetch_after`` moves early slots onto
        one time, and the series name orders a tie). A round costs a few rows, not one per
        series."""
        entries: list[_Due] = []
        last: datetime | None = None
        if count <= 0:
            return []
        for row in self.due_first(bound):
            due = effective(self.due_at(row))
            if last is not None and due > last:
                break
            entries.append(_Due(self.key(row), due, row))
            if len(entries) == count:
                last = due
        return [entry.row for entry in cadence.pick_due(entries, now, count)]

    # --- checking a row out for a fetch, and back in ------------------------------------------

    def slot(self, row: int) -> Slot:
        """The row as a ``Slot``: the live one while it is fetched, else a new snapshot (with
        its siblings, the creator's other variants, live or snapshots too)."""
        live = self._live.get(row)
        if live is not None:
            return live
        slot = self._snapshot(row)
        first, end = self._group(row)
        if end - first > 1:  # a lone slot is its own sibling (``Slot.siblings`` stays empty)
            slot.join(
                [
                    slot if r == row else (self._live.get(r) or self._snapshot(r))
                    for r in range(first, end)
                ]
            )
        return slot

    def check_out(self, slot: Slot) -> None:
        """``slot`` is being fetched: until ``release``, the row's state is the Slot's."""
        if slot.row >= 0:
            self._live[slot.row] = slot

    def release(self, slot: Slot) -> None:
        """The fetch ended: write what it changed back into the row."""
        row = slot.row
        if row < 0 or self._live.get(row) is not slot:
            return  # not this table's (the config was reloaded while it ran)
        del self._live[row]
        self._put(
            row,
            slot.due_at,
            slot.last_success_at,
            slot.consecutive_failures,
            slot.last_code,
            slot.broken,
        )
        self._logged[row] = slot.failure_logged
        if slot.last_error is None:
            self._errors.pop(row, None)
        else:
            self._errors[row] = slot.last_error

    def adopt(self, slots: Sequence[Slot]) -> None:
        """Series still being fetched under the config this one replaces: they stay live here,
        and their ``release`` writes into this table."""
        for slot in slots:
            row = self.find(slot.creator_id, slot.variant)
            slot.place(-1 if row is None else row)
            if row is not None:
                self._live[row] = slot

    def live(self) -> list[Slot]:
        return list(self._live.values())

    # --- Mapping: series name -> snapshot ------------------------------------------------------

    def __iter__(self) -> Iterator[str]:
        return (self.key(row) for row in range(len(self)))

    def __getitem__(self, key: str) -> Slot:
        if self._keys is None:
            self._keys = {self.key(row): row for row in range(len(self))}
        return self.slot(self._keys[key])

    # --- internals ----------------------------------------------------------------------------

    def _group(self, row: int) -> tuple[int, int]:
        """The rows of ``row``'s creator: [first, end)."""
        creator, first, end = self._creator[row], row, row + 1
        while first > 0 and self._creator[first - 1] == creator:
            first -= 1
        while end < len(self) and self._creator[end] == creator:
            end += 1
        return first, end

    def _set_due(self, row: int, due: int) -> None:
        """The one writer of a row's due time: one written into ``due_first``'s list's span
        makes the list wrong (the row may belong before its end), so the list goes."""
        self._due[row] = due
        if (due, row) <= self._short_last:
            self._short, self._short_last = None, _NO_LIST

    def _put(
        self,
        row: int,
        due: datetime,
        success: datetime | None,
        failures: int,
        code: int | None,
        broken: bool,
    ) -> None:
        """A row's state, as the store keeps it and a fetch leaves it."""
        self._set_due(row, micros(due))
        self._success[row] = _NONE if success is None else micros(success)
        self._failures[row] = failures
        self._code[row] = _NONE if code is None else code
        self._broken[row] = broken

    def _snapshot(self, row: int) -> Slot:
        code = self._code[row]
        return Slot(
            self.key(row),
            self._creator_id[row],
            self.creator(row),
            self.variant(row),
            self.every(row),
            moment(self._due[row]),
            last_success_at=_optional(self._success[row]),
            consecutive_failures=self._failures[row],
            last_code=None if code == _NONE else code,
            last_error=self._errors.get(row),
            broken=bool(self._broken[row]),
            tracked_since=self.tracked_since,
            failure_logged=bool(self._logged[row]),
            row=row,
        )
