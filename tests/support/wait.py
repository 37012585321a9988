"""The one polling helper of the tests: wait, in real time, until a condition holds.

Everything a test waits for in another process (a log line, a row, a status code, a call seen by
the simulator) is polled with :func:`until`; a test never sleeps a fixed time hoping it is
enough. The default timeout is generous: it only runs out when something is wrong, and a
loaded host (the suite runs on more workers than cores) may take a while to start a process.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any


async def until(
    predicate: Callable[[], Any | Awaitable[Any]],
    timeout: float = 60.0,
    what: str = "the condition",
    *,
    every: float = 0.05,
    ended: Callable[[], str | None] | None = None,
) -> float:
    """Poll ``predicate`` (plain or async) every ``every`` seconds until it returns something
    true; return the ``time.monotonic()`` at which it first held.

    ``ended`` is asked after each miss: a non-empty answer (say, a process that exited and its
    log) fails the wait at once instead of at the timeout.
    """
    deadline = time.monotonic() + timeout
    while True:
        held = predicate()
        if inspect.isawaitable(held):
            held = await held
        if held:
            return time.monotonic()
        why = ended() if ended is not None else None
        if why:
            raise AssertionError(f"{what}: gave up: {why}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        await asyncio.sleep(every)


def until_blocking(
    predicate: Callable[[], Any],
    timeout: float = 60.0,
    what: str = "the condition",
    *,
    every: float = 0.05,
    ended: Callable[[], str | None] | None = None,
    ignore: tuple[type[BaseException], ...] = (),
) -> float:
    """:func:`until` for code without an event loop (a sync fixture, a thread); exceptions of the
    ``ignore`` types count as "not yet" (a server still starting refuses connections)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if predicate():
                return time.monotonic()
        except ignore:
            pass
        why = ended() if ended is not None else None
        if why:
            raise AssertionError(f"{what}: gave up: {why}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(every)
