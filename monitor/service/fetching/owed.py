"""Rules owed: series whose answer is stored but whose creator's rules the database refused to
run. One queue, owned by the fetcher (the one that runs rules); tried again after the store
probe, at most once per the dispatcher's longest store backoff (a minute), and at a stop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta

from monitor.errors import MonitorError, StoreError
from monitor.service.fetching.slot import Slot

log = logging.getLogger(__name__)


class OwedRules:
    """The slots whose rules wait for the database, in the order they came."""

    def __init__(self, clock: Callable[[], datetime]) -> None:
        self._clock = clock
        self._slots: list[Slot] = []
        #: when the owed rules are next tried (``due``)
        self._retry = datetime.min.replace(tzinfo=UTC)

    def add(self, slot: Slot) -> None:
        self._slots.append(slot)

    def __bool__(self) -> bool:
        return bool(self._slots)

    def creators(self) -> int:
        """How many creators have stored answers whose rules have not run yet."""
        return len({slot.creator_id for slot in self._slots})

    def due(self) -> bool:
        """Rules are owed and their retry time (``run``'s ``retry`` after the last try) came."""
        return bool(self._slots) and self._clock() >= self._retry

    async def run(
        self,
        evaluate: Callable[[Slot], Awaitable[None]],
        stored: Sequence[Slot] = (),
        *,
        retry: timedelta,
    ) -> None:
        """The owed rules, then those of ``stored``, once per creator. What the database
        refuses again stays owed and is tried ``retry`` later; fetching goes on meanwhile (a
        rules write that fails must not stop the calls whose answers can be stored)."""
        self._retry = self._clock() + retry
        pending, self._slots = [*self._slots, *stored], []
        seen: set[int] = set()
        for at, slot in enumerate(pending):
            if slot.creator_id in seen:
                continue
            seen.add(slot.creator_id)
            try:
                await evaluate(slot)
            except asyncio.CancelledError:  # a stop's deadline: still owed, and counted
                self._slots.extend(pending[at:])
                raise
            except StoreError as exc:
                log.error("rules of %s wait for the database: %s", slot.creator.user_id, exc)
                self._slots.extend(pending[at:])
                return
            except MonitorError as exc:
                log.error("rules of %s not evaluated: %s", slot.creator.user_id, exc)
