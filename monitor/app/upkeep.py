"""The daemon's housekeeping jobs, run by its scheduler: the daily digest and the scheduled
reports queued when due, and old raw bodies and report HTML pruned. Each logs its failure and
lets the next run retry."""

from __future__ import annotations

import contextlib
import logging

from monitor.config import Config
from monitor.errors import MonitorError
from monitor.ops.wallclock import Clock
from monitor.service.reporting.digest import queue_due_digest
from monitor.store import Store

#: the daemon's lines keep the one logger name they are known by
log = logging.getLogger("monitor.daemon")


async def queue_digest(config: Config, store: Store, clock: Clock) -> None:
    # checked every evaluate_every: a digest missed while the daemon was down still goes
    try:
        await queue_due_digest(config, store, clock())
    except MonitorError as exc:
        log.error("daily digest not queued: %s", exc)


async def queue_reports(config: Config, store: Store, clock: Clock, owner: str) -> None:
    """Scheduled reports whose period ended: queued once (a claim in the database)."""
    if not config.reports:
        return
    from monitor.service.reporting.scheduled import (
        queue_due_reports,  # plotly: only when reports are set
    )

    try:
        await queue_due_reports(config, store, clock(), owner=owner)
    except MonitorError as exc:
        log.error("scheduled reports not queued: %s", exc)


async def start_new_reports(
    running: Config, config: Config, store: Store, clock: Clock, owner: str
) -> None:
    """Before a reload switches from ``running`` to ``config``: a ``[[reports]]`` entry it adds
    does not report a period that ended before it existed."""
    known = {r.name for r in running.reports}
    added = [r for r in config.reports if r.name not in known]
    if not added:
        return
    from monitor.service.reporting.scheduled import skip_ended_periods  # plotly: only when needed

    try:
        await skip_ended_periods(added, config, store, clock(), owner=owner)
    except MonitorError as exc:
        log.error("new reports not started: %s", exc)


async def prune(config: Config, store: Store, clock: Clock) -> None:
    now = clock()
    cutoff = now - config.storage.raw_retention
    with contextlib.suppress(MonitorError):
        pruned = await store.prune_raw(cutoff)
        if pruned:
            log.info("pruned %d raw response bodies older than %s", pruned, cutoff.date())
    # a queued report message may still be retried until notify.max_age: its HTML stays
    keep = max(config.storage.report_html_retention, config.notify.max_age)
    with contextlib.suppress(MonitorError):
        dropped = await store.prune_report_html(now - keep)
        if dropped:
            log.info(
                "dropped the HTML of %d scheduled reports older than %s (%d days kept)",
                dropped,
                (now - keep).date(),
                keep.days,
            )
