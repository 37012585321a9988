"""The live schedule loaded at start-up and on reload: the configured creators synced into the
store and every series (each core variant, and the ``fans`` and ``notes`` series of the sources a
creator is tracked with) placed in a ``Timetable``, a known one at its stored due time;
the rows of new ones stored at once or, on a database of its own, after READY in batches."""

from __future__ import annotations

import itertools
from datetime import datetime

from monitor.config import Config, CreatorConfig, collector_paused
from monitor.service.fetching.timetable import Timetable
from monitor.store import Store


async def load_slots(
    config: Config, store: Store, now: datetime, *, write_new: bool = True
) -> Timetable:
    """Sync the configured creators into the store and build the live schedule from it.

    A new slot is first due at its stable offset inside its cadence (spread, no herd at start);
    a known slot keeps its persisted due time, so a restart re-fetches nothing already served.
    Runs for every creator at start-up and on reload (100,000 of them): per creator it only
    looks up and appends to flat arrays, and the stored schedule is read a page at a time
    into the rows already built.
    """
    with collector_paused():  # 100,000 rows: no collector walks while they are built
        ids = await store.sync_creators([c.creator() for c in config.creators])
        table = Timetable(config.creators, now)
        # ``ids`` (user_id -> creators.id) turns into user_id -> the creator's first row as
        # the rows are added: the schedule is built without a second map of 100,000 creators
        first_row: dict[str, int] = ids
        # (variants, sources) tuples (shared by every creator without overrides) -> the
        # series' numbers, by source; keyed by identity, the tuples themselves kept in the
        # value so their ids cannot be reused
        plans: dict[tuple[int, int], tuple[object, list[tuple[str, int]]]] = {}
        # the rows of a creator that sets nothing of its own (most of them), made once
        shared: list[tuple[int, int]] | None = None
        follows_defaults, add_series = config.follows_defaults, table.add_series
        for index, entry in enumerate(config.creators):
            if not follows_defaults(entry):
                series = _series(config, table, plans, entry)
            elif shared is None:
                series = shared = _series(config, table, plans, entry)
            else:
                series = shared
            user_id = entry.user_id
            first_row[user_id] = add_series(index, ids[user_id], series)
        del ids
        table.seal()
        # most stored rows are the core variant of a creator that sets none of its own
        async for page in store.slot_states(common=config.default_variant):
            table.restore(page, first_row)
            del page  # not kept while the next one is read
        del first_row
        if table.any_unscheduled() and table.place_unscheduled(now) and write_new:
            await store.schedule_new(table.unwritten())  # one transaction, however many
    return table


def _series(
    config: Config,
    table: Timetable,
    plans: dict[tuple[int, int], tuple[object, list[tuple[str, int]]]],
    entry: CreatorConfig,
) -> list[tuple[int, int]]:
    """``entry``'s rows as ``Timetable.add_series`` takes them: (variant, every) numbers."""
    variants, sources = config.variants_of(entry), config.sources_of(entry)
    plan = plans.get((id(variants), id(sources)))
    if plan is None:
        series = [
            (source, table.variant_index(variant)) for source, variant in config.series_of(entry)
        ]
        plan = plans[(id(variants), id(sources))] = ((variants, sources), series)
    everies: dict[str, int] = {}
    rows = []
    for source, variant in plan[1]:
        every = everies.get(source)
        if every is None:
            every = everies[source] = table.every_index(config.every_source_of(entry, source))
        rows.append((variant, every))
    return rows


async def write_new_slots(table: Timetable, store: Store, *, batch: int = 5_000) -> int:
    """Store the schedule rows ``load_slots(write_new=False)`` left to write, ``batch`` rows a
    transaction so that fetches' own writes get in between. The daemon does this after READY
    on a database of its own: a first start with 100,000 new creators need not wait for it.
    Should it not finish (a stop, a refused write), nothing is lost: a fetch stores its own
    row, and the next start places the rest again on the same grid, still due. Returns how
    many rows were written."""
    rows = table.unwritten()
    written = 0
    while chunk := list(itertools.islice(rows, batch)):
        await store.schedule_new(chunk)
        written += len(chunk)
    return written
