"""Acknowledgements: an acknowledged alert stops repeating until it resolves (the pure step),
the next firing after a resolution is a new, unacknowledged alert, and an evaluation that read
the alert before an acknowledgement cannot write the acknowledgement away (the version check).
"""

from __future__ import annotations

from dataclasses import replace

from support.outcomes import CLEAR, HOUR, T0, firing, rule

from monitor.model import Creator
from monitor.policy.lifecycle import AlertState, Event, step
from monitor.store import Store, migrate


def test_acknowledged_alert_stops_repeating_until_it_resolves() -> None:
    r = rule(repeat="1h")
    fired = step(None, firing(), r, T0, creator_id=7)
    assert fired.events == (Event.FIRING,)
    assert fired.after is not None
    state: AlertState = replace(fired.after, id=1)
    repeat = step(state, firing(), r, T0 + HOUR)
    assert repeat.events == (Event.REPEAT,)

    acked = replace(state, acked_at=T0 + HOUR / 2, acked_by="console")
    for hours in range(1, 6):
        quiet = step(acked, firing(), r, T0 + hours * HOUR)
        assert quiet.events == ()
        assert quiet.after is not None
        acked = quiet.after
    assert acked.acked_by == "console"

    resolved = step(acked, CLEAR, r, T0 + 6 * HOUR)
    assert resolved.events == (Event.RESOLVED,)
    assert resolved.after is not None
    again = step(resolved.after, firing(), r, T0 + 7 * HOUR, creator_id=7)
    assert again.events == (Event.FIRING,)
    assert again.after is not None
    assert (again.after.id, again.after.acked_at) == (None, None)
    later = step(replace(again.after, id=2), firing(), r, T0 + 8 * HOUR)
    assert later.events == (Event.REPEAT,)


async def test_an_evaluation_read_before_an_ack_does_not_overwrite_it(db_url: str) -> None:
    await migrate.upgrade(db_url)
    async with Store.open(db_url, clock=lambda: T0) as store:
        ids = await store.sync_creators([Creator("5c3bf7f7000000000602fd63", "Lily")])
        r = rule(repeat="1h")
        fired = step(None, firing(), r, T0, creator_id=ids["5c3bf7f7000000000602fd63"])
        assert fired.after is not None
        assert await store.commit_transition(fired.after, [], now=T0, expect=None)
        read = await store.load_alert(r.name, fired.after.scope)
        assert read is not None
        alert_id = read.id
        assert await store.ack_alert(alert_id or 0, now=T0, by="console") == "acked"
        stale = replace(fired.after, id=alert_id, hits=2, last_seen_at=T0 + HOUR)
        assert not await store.commit_transition(stale, [], now=T0, expect=read)
        after = await store.load_alert(r.name, fired.after.scope)
        assert after is not None
        assert (after.acked_at, after.acked_by) == (T0, "console")
