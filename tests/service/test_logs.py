"""The daemon's log stays one line per event an operator cares about: APScheduler's note that a
still-running job skipped an interval (by design: max_instances=1, coalesce) is not one."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

import pytest
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from monitor.ops.logs import configure_logging


@pytest.fixture
def restored_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    named = {n: logging.getLogger(n).level for n in ("apscheduler", "apscheduler.scheduler")}
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, was in named.items():
        logging.getLogger(name).setLevel(was)


async def test_a_slow_job_does_not_log_every_skipped_interval(
    restored_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging(debug=False)
    ran: list[int] = []

    async def slow_drain() -> None:
        ran.append(1)
        await asyncio.sleep(0.5)

    scheduler = AsyncIOScheduler()
    scheduler.add_job(slow_drain, "interval", seconds=0.05, max_instances=1, coalesce=True)
    scheduler.start()
    try:
        await asyncio.sleep(1.2)
    finally:
        scheduler.shutdown(wait=False)
    assert 2 <= len(ran) <= 3  # it ran, and skipped many intervals while running
    assert "skipped" not in capsys.readouterr().err
    logging.getLogger("monitor.daemon").error("still heard")
    assert "still heard" in capsys.readouterr().err
