"""One tracked series while it is fetched (``Slot``, changed only through its own methods) and
how a fetch of it ended (``Run``: the scheduler's ``SlotFate`` and the store's ``Ending``).
Every expected ending is a value; exceptions are for faults."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from monitor.model import Creator, Variant
from monitor.service.alerting.evaluation import SeriesFacts
from monitor.store import FetchRecord


class SlotFate(StrEnum):
    """What the scheduler does with the slot after a run."""

    DONE = "done"  # this due time is served (success, 201, exhausted retries, parse error …)
    KEEP = "keep"  # leave it due: the account or quota paused every call
    BROKEN = "broken"  # 400: do not fetch again until the config changes


@dataclass(slots=True)
class Slot:
    """One tracked series while it is fetched (mutable: the fetcher updates it as calls go).

    The daemon's schedule keeps series as rows of a ``Timetable`` and checks one out as a
    ``Slot`` for each fetch; ``fetch`` makes one of its own."""

    key: str
    creator_id: int
    creator: Creator
    variant: Variant
    every: timedelta
    due_at: datetime
    last_success_at: datetime | None = None
    consecutive_failures: int = 0
    last_code: int | None = None
    last_error: str | None = None
    broken: bool = False
    tracked_since: datetime | None = None
    failure_logged: bool = False  # "failing" was logged; "recovered" is owed
    #: every slot of this creator when it has several variants; empty for a lone slot (a
    #: shared empty tuple, not a list per slot: 100,000 slots)
    siblings: Sequence[Slot] = field(default=(), repr=False)
    #: its row in the daemon's ``Timetable`` (-1: a slot of its own, as ``fetch`` makes)
    row: int = field(default=-1, repr=False, compare=False)

    def facts(self) -> SeriesFacts:
        return SeriesFacts(
            variant=self.variant,
            last_success_at=self.last_success_at,
            consecutive_failures=self.consecutive_failures,
            last_code=self.last_code,
            tracked_since=self.tracked_since,
        )

    # --- the only ways a slot changes --------------------------------------------------------

    def succeeded(self, at: datetime) -> int:
        """A call answered: the failure streak ends; returns how long it was (a "recovered"
        line is owed when it was logged). The last error text stays until the next failure."""
        streak = self.consecutive_failures if self.failure_logged else 0
        self.failure_logged = False
        self.last_success_at, self.consecutive_failures, self.last_code = at, 0, 0
        return streak

    def failed(self, code: int | None, text: str) -> None:
        """A call failed: one more in the streak, with its code and error line."""
        self.consecutive_failures += 1
        self.last_code, self.last_error = code, text

    def failure_said(self) -> None:
        """Its failing is told already (logged, or a command's own error line says it)."""
        self.failure_logged = True

    def move_to(self, due: datetime) -> None:
        """Its next due time (the fetch that served it, a requeue, or the shared schedule)."""
        self.due_at = due

    def mark_broken(self) -> None:
        """400: not fetched again until the config changes."""
        self.broken = True

    def take_stored(
        self,
        due_at: datetime,
        last_success_at: datetime | None,
        consecutive_failures: int,
        last_code: int | None,
    ) -> None:
        """What a shared database holds of the series (another instance may have moved it)."""
        self.due_at, self.last_success_at = due_at, last_success_at
        self.consecutive_failures, self.last_code = consecutive_failures, last_code

    def join(self, siblings: Sequence[Slot]) -> None:
        """Every slot of its creator, itself among them (a creator with several variants)."""
        self.siblings = siblings

    def place(self, row: int) -> None:
        """Its row in a ``Timetable`` (-1: none, a series the new config dropped)."""
        self.row = row


class Ending(StrEnum):
    """How a run ended for the store: every expected ending is a value, not an exception."""

    STORED = "stored"  # each attempt is recorded (and its rules ran)
    HELD = "held"  # the database refused an answer: it is held (and spilled) until it takes it
    RULES_OWED = "rules owed"  # stored, but the database refused the creator's rules: owed
    REFUSED = "refused"  # no call went: answers wait for the database, or a write just failed


@dataclass(frozen=True, slots=True)
class Run:
    """What ``Fetcher.run`` did with a slot: the scheduler's verdict and the store's ending."""

    verdict: SlotFate
    ending: Ending = Ending.STORED
    #: the one line that says why, when the ending is not STORED
    reason: str = ""
    #: HELD: the answer kept for the database (a command shows its points)
    held: FetchRecord | None = None

    @property
    def stored(self) -> bool:
        return self.ending is Ending.STORED
