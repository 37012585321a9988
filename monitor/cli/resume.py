"""``resume``: one probe now, through the same gate as the daemon, and what the account answered.
Exit 0 when it answers normally (an account pause ends), 1 when it still refuses. Listed in
``monitor.cli.commands.HANDLERS``, where the CLI looks handlers up."""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import UTC, datetime

from monitor.app import Slot, fetch_parts
from monitor.config import Config
from monitor.errors import BudgetError, ConfigError, StoreError
from monitor.policy import cadence
from monitor.policy.budget import ACCOUNT_OK_CODES


def _now() -> datetime:
    return datetime.now(UTC)


def resume(args: argparse.Namespace, config: Config) -> int:
    if not config.creators:
        raise ConfigError("creators", "no creators configured: the probe asks for the first one")
    return asyncio.run(_resume(config))


async def _resume(config: Config) -> int:
    entry = config.creators[0]
    creator, variant = entry.creator(), config.variants_of(entry)[0]
    async with fetch_parts(
        config, clock=_now, create_schema=True, strict_spill=True, retries=False
    ) as parts:
        gate = parts.gate
        was = gate.hard_pause(_now())
        await gate.probe_now()  # an account pause: its probe is due now, not in 15 minutes
        ids = await parts.store.sync_creators([c.creator() for c in config.creators])
        slot = Slot(
            key=cadence.slot_key(creator.user_id, variant),
            creator_id=ids[creator.user_id],
            creator=creator,
            variant=variant,
            every=config.defaults.every,
            due_at=_now(),
        )
        slot.failure_said()  # this command's own line says how it went
        try:
            run = await parts.fetcher.run(slot, probe=True)
        except BudgetError as exc:
            print(f"no probe sent: {exc}", file=sys.stderr)
            return 1
        if not run.stored:  # the database refused the answer (held) or any call (none sent)
            raise StoreError(run.reason)
        now = gate.hard_pause(_now())
    code = slot.last_code
    if code in ACCOUNT_OK_CODES:
        ended = f"; calls resume now (was: {was})" if was else "; no pause was on"
        print(f"probe for {creator.user_id}: the account answered normally (code {code}){ended}")
        return 0
    answer = slot.last_error or "no answer"
    if now is not None:
        print(f"probe for {creator.user_id}: the account still refuses: {now}", file=sys.stderr)
    else:
        print(f"probe for {creator.user_id}: {answer}", file=sys.stderr)
    return 1
