"""``fetch``: one creator now, or every configured creator and variant once, through the same
gate, budget and spill as the daemon (``--dry-run`` stores nothing). Re-exported by
``monitor.cli.commands``, where the CLI looks handlers up."""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import UTC, datetime

from monitor.app import fetch_parts
from monitor.cli import arguments, output
from monitor.config import Config
from monitor.errors import BudgetError, ConfigError, MonitorError
from monitor.model import Creator, Variant
from monitor.policy import cadence
from monitor.service.fetch import Slot
from monitor.service.spill import AnswerHeld, Hold


def _now() -> datetime:
    return datetime.now(UTC)


def fetch(args: argparse.Namespace, config: Config) -> int:
    if bool(args.user_id) == bool(args.all):
        raise ConfigError("fetch", "give either a CREATOR (user id or configured name) or --all")
    if args.user_id:  # checked before any call: a name becomes its id, a bad id costs nothing
        args.user_id = arguments.resolve_creator(config, args.user_id, arg="CREATOR").user_id
    if args.all:
        return asyncio.run(_fetch_all(config))
    return asyncio.run(_fetch(args, config))


def _default_variant(config: Config) -> Variant:
    d = config.defaults
    return Variant(d.business, d.note_type, d.date_type, d.advertise)


async def _fetch(args: argparse.Namespace, config: Config) -> int:
    """One call now, through the same gate as the daemon; ``--dry-run`` spends inside the caps
    like any call but stores nothing."""
    entry = next((c for c in config.creators if c.user_id == args.user_id), None)
    variant = config.variants_of(entry)[0] if entry else _default_variant(config)
    creator = entry.creator() if entry else Creator(user_id=args.user_id)
    async with fetch_parts(
        config, clock=_now, create_schema=True, strict_hold=True, retries=False
    ) as parts:
        store, fetcher = parts.store, parts.fetcher
        if args.dry_run:
            slot = _slot(config, creator, 0, variant)
            slot.failure_logged = True  # the command's own error line says it, once
            await fetcher.run(slot, dry_run=True)
            gauge = await parts.meter.gauge()
            if slot.consecutive_failures or fetcher.last_result is None:
                raise MonitorError(output.plain_error(slot.last_error or "failed"))
            output.print_points(fetcher.last_result.data.daily, sys.stdout)
            print(
                f"dry run: {fetcher.calls} call(s) spent inside the budget "
                f"({gauge.calls_today} of {gauge.daily_calls} used today); nothing stored",
                file=sys.stderr,
            )
            return 0
        # sync every configured creator: syncing only this one would mark the rest inactive
        extra = [] if entry else [creator]
        ids = await store.sync_creators([*(c.creator() for c in config.creators), *extra])
        slot = _slot(config, creator, ids[args.user_id], variant)
        slot.failure_logged = True  # the command's own error line says it, once
        try:
            await fetcher.run(slot)
        except AnswerHeld as exc:  # paid for: show it, say where it waits, exit 1
            if exc.record.data is not None:
                output.print_points(exc.record.data.daily, sys.stdout)
            print(_held_line(parts.hold), file=sys.stderr)
            return 1
        if slot.consecutive_failures:
            raise MonitorError(output.plain_error(slot.last_error or "failed"))
        rows = await store.history_rows(args.user_id, variant=variant)
        output.print_history(rows, None, "table", sys.stdout)
    return 0


def _slot(config: Config, creator: Creator, creator_id: int, variant: Variant) -> Slot:
    return Slot(
        key=cadence.slot_key(creator.user_id, variant),
        creator_id=creator_id,
        creator=creator,
        variant=variant,
        every=config.defaults.every,
        due_at=_now(),
    )


async def _fetch_all(config: Config) -> int:
    """Every configured creator and variant once, paced by the budget; stops when it is spent."""
    creators = [entry.creator() for entry in config.creators]
    slots = [(e.creator(), v) for e in config.creators for v in config.variants_of(e)]
    if not slots:
        raise ConfigError("creators", "no creators configured; nothing to fetch")
    done: list[Slot] = []
    stopped: str | None = None
    async with fetch_parts(
        config, clock=_now, create_schema=True, strict_hold=True, retries=False
    ) as parts:
        store, fetcher, hold = parts.store, parts.fetcher, parts.hold
        gauge = await parts.meter.gauge()
        left = gauge.daily_calls - gauge.calls_today
        if left < len(slots):
            print(f"note: {left} calls left today for {len(slots)} series", file=sys.stderr)
        ids = await store.sync_creators(creators)
        with output.progress(len(slots), "fetch") as bar:
            for creator, variant in slots:
                slot = _slot(config, creator, ids[creator.user_id], variant)
                try:
                    await fetcher.run(slot)
                except BudgetError as exc:
                    stopped = str(exc)
                    break
                except AnswerHeld:  # paid for but not stored: no further call goes
                    done.append(slot)
                    stopped = "the database refuses writes"
                    break
                done.append(slot)
                bar.update(1)
    output.print_fetched(done, fetcher.calls, len(slots), stopped, sys.stdout)
    if hold.waiting:
        print(_held_line(hold), file=sys.stderr)
        return 1
    return 0 if len(done) == len(slots) and not any(s.consecutive_failures for s in done) else 1


def _held_line(hold: Hold) -> str:
    return (
        f"the database refuses writes: {hold.held} paid answers kept in {hold.where()}; "
        "they are stored when the database takes writes (the next fetch or run does it)"
    )
