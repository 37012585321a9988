"""The alert lifecycle and the delivery decision: table tests plus hypothesis properties."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.outcomes import CLEAR, HOUR, T0, UID, UNKNOWN, firing, rule

from monitor.config import Rule
from monitor.model import Outcome, Severity, Verdict
from monitor.policy.delivery import (
    Action,
    FiringFate,
    Outgoing,
    QuietHours,
    Silence,
    should_deliver,
)
from monitor.policy.lifecycle import AlertState, Event, Phase, Transition, step

SHANGHAI = ZoneInfo("Asia/Shanghai")


def run(r: Rule, outcomes: list[Outcome], every: timedelta = HOUR) -> list[Transition]:
    """Feed outcomes one evaluation apart; ids are assigned as the glue would on insert."""
    state: AlertState | None = None
    out = []
    for i, outcome in enumerate(outcomes):
        t = step(state, outcome, r, T0 + i * every, creator_id=7)
        if t.after is not None and t.after.id is None:
            t = Transition(t.before, replace(t.after, id=i + 1), t.events)
        out.append(t)
        state = t.after
    return out


# --- lifecycle ------------------------------------------------------------------------------


def test_for_1_fires_at_once_with_the_finding() -> None:
    (t,) = run(rule(), [firing()])
    assert t.events == (Event.FIRING,)
    a = t.after
    assert a is not None
    assert (a.rule, a.scope, a.creator_id, a.severity) == ("reads-down", UID, 7, Severity.WARNING)
    assert (a.state, a.hits, a.clears, a.firing_sent) == (Phase.FIRING, 1, 0, True)
    assert (a.pending_since, a.fired_at, a.last_notified_at, a.last_seen_at) == (T0, T0, T0, T0)
    assert (a.metric, a.value, a.baseline, a.summary) == ("read", 4260, 7100, "read 7100 → 4260")
    assert a.details["change_abs"] == -2840
    assert a.details["change_pct"] == pytest.approx(-40.0)


def test_for_3_stays_pending_for_two_evaluations() -> None:
    ts = run(rule(**{"for": 3}), [firing(), firing(), firing()])
    assert [t.events for t in ts] == [(), (), (Event.FIRING,)]
    assert [t.after.state for t in ts if t.after] == [Phase.PENDING, Phase.PENDING, Phase.FIRING]
    assert ts[2].after is not None
    assert ts[2].after.pending_since == T0
    assert ts[2].after.fired_at == T0 + 2 * HOUR


def test_pending_is_dropped_on_a_clear_without_a_message() -> None:
    ts = run(rule(**{"for": 3}), [firing(), CLEAR])
    assert ts[1].after is None
    assert ts[1].dropped
    assert ts[1].events == ()


def test_unknown_changes_nothing() -> None:
    ts = run(rule(**{"for": 2}), [firing(), UNKNOWN, firing()])
    assert ts[1].after is ts[1].before
    assert not ts[1].changed
    assert ts[2].events == (Event.FIRING,)  # the pending hit survived the UNKNOWN
    assert step(None, UNKNOWN, rule(), T0) == Transition(None, None)


def test_resolve_for_is_hysteresis() -> None:
    ts = run(rule(resolve_for=2), [firing(), CLEAR, firing(), CLEAR, CLEAR])
    phases = [t.after.state for t in ts if t.after]
    assert phases == [Phase.FIRING, Phase.FIRING, Phase.FIRING, Phase.FIRING, Phase.RESOLVED]
    assert [t.after.clears for t in ts if t.after] == [0, 1, 0, 1, 2]
    assert [t.events for t in ts] == [(Event.FIRING,), (), (), (), (Event.RESOLVED,)]
    resolved = ts[4].after
    assert resolved is not None
    assert resolved.resolved_at == T0 + 4 * HOUR
    assert resolved.details["clear_value"] == 6900
    assert resolved.fired_at == T0


def test_resolved_only_when_the_firing_was_sent() -> None:
    ts = run(rule(), [firing()])
    unsent = replace(ts[0].after, firing_sent=False)  # type: ignore[type-var]
    t = step(unsent, CLEAR, rule(), T0 + HOUR)
    assert t.after is not None
    assert t.after.state is Phase.RESOLVED
    assert t.events == ()


def test_after_resolution_a_new_finding_opens_a_new_alert() -> None:
    ts = run(rule(), [firing(), CLEAR, CLEAR, firing(3000)])
    assert ts[2].after is ts[1].after  # a resolved alert ignores more clears
    new = ts[3]
    assert new.before is not None
    assert new.before.state is Phase.RESOLVED
    assert new.after is not None
    assert new.after.id == 4  # inserted as a new row, the resolved one stays as history
    assert (new.after.fired_at, new.after.value, new.after.hits) == (T0 + 3 * HOUR, 3000, 1)
    assert new.events == (Event.FIRING,)


def test_repeat_every_period_and_at_most_max_repeats() -> None:
    r = rule(repeat="3h", max_repeats=2)
    ts = run(r, [firing()] * 12)
    events = [(i, t.events) for i, t in enumerate(ts) if t.events]
    assert events == [(0, (Event.FIRING,)), (3, (Event.REPEAT,)), (6, (Event.REPEAT,))]
    last = ts[-1].after
    assert last is not None
    assert (last.repeats_sent, last.last_notified_at, last.hits) == (2, T0 + 6 * HOUR, 12)


def test_repeat_never_before_the_period_even_with_uneven_evaluations() -> None:
    r = rule(repeat="24h")
    state = run(r, [firing()])[0].after
    t = step(state, firing(), r, T0 + timedelta(hours=23, minutes=59))
    assert t.events == ()
    t = step(t.after, firing(), r, T0 + timedelta(hours=24))
    assert t.events == (Event.REPEAT,)


# --- lifecycle properties -------------------------------------------------------------------

verdicts = st.sampled_from([Verdict.FIRING, Verdict.CLEAR, Verdict.UNKNOWN])
gaps = st.integers(min_value=1, max_value=600)  # minutes between evaluations


@settings(max_examples=200, deadline=None)
@given(
    steps=st.lists(st.tuples(verdicts, gaps), min_size=1, max_size=60),
    for_=st.integers(1, 3),
    resolve_for=st.integers(1, 3),
    repeat_min=st.integers(30, 600),
    max_repeats=st.one_of(st.none(), st.integers(0, 3)),
)
def test_lifecycle_properties(
    steps: list[tuple[Verdict, int]],
    for_: int,
    resolve_for: int,
    repeat_min: int,
    max_repeats: int | None,
) -> None:
    fields: dict[str, Any] = {"for": for_, "resolve_for": resolve_for, "repeat": f"{repeat_min}m"}
    if max_repeats is not None:
        fields["max_repeats"] = max_repeats
    r = rule(**fields)
    by_verdict = {Verdict.FIRING: firing(), Verdict.CLEAR: CLEAR, Verdict.UNKNOWN: UNKNOWN}
    state: AlertState | None = None
    now = T0
    last_notice: datetime | None = None
    fired = resolved = repeats = 0
    for verdict, gap in steps:
        now += timedelta(minutes=gap)
        t = step(state, by_verdict[verdict], r, now)
        if verdict is Verdict.UNKNOWN:
            assert t.after is state
        for event in t.events:
            if event is Event.FIRING:
                assert fired == resolved  # one firing per alert instance
                fired, repeats, last_notice = fired + 1, 0, now
            elif event is Event.REPEAT:
                assert last_notice is not None
                assert now - last_notice >= timedelta(minutes=repeat_min)
                repeats += 1
                assert max_repeats is None or repeats <= max_repeats
                last_notice = now
            else:
                assert fired == resolved + 1  # a resolution only after a sent firing
                resolved += 1
        state = t.after


# --- delivery -------------------------------------------------------------------------------


def msg(**kw: Any) -> Outgoing:
    base: dict[str, Any] = {
        "event": Event.FIRING,
        "rule": "reads-down",
        "scope": UID,
        "severity": Severity.WARNING,
        "tags": ("fitness",),
    }
    return Outgoing(**{**base, **kw})


def test_no_silence_no_quiet_sends() -> None:
    assert should_deliver(msg(), [], None, T0).action is Action.SEND


@pytest.mark.parametrize(
    ("silence", "held"),
    [
        (Silence(ends_at=T0 + HOUR), True),  # no matcher: everything
        (Silence(ends_at=T0 + HOUR, rule="reads-down"), True),
        (Silence(ends_at=T0 + HOUR, rule="other"), False),
        (Silence(ends_at=T0 + HOUR, creator=UID), True),
        (Silence(ends_at=T0 + HOUR, creator="account"), False),
        (Silence(ends_at=T0 + HOUR, tag="fitness"), True),
        (Silence(ends_at=T0 + HOUR, tag="food"), False),
        (Silence(ends_at=T0 + HOUR, rule="reads-down", tag="food"), False),  # all must match
        (Silence(ends_at=T0), False),  # expired exactly now
        (Silence(starts_at=T0 + HOUR, ends_at=T0 + 2 * HOUR), False),  # not begun
    ],
)
def test_silence_holds_until_it_ends(silence: Silence, held: bool) -> None:
    decision = should_deliver(msg(severity=Severity.CRITICAL), [silence], None, T0)
    if held:
        assert (decision.action, decision.until) == (Action.HOLD, silence.ends_at)
        assert decision.reason == "silenced"
    else:
        assert decision.action is Action.SEND


def test_overlapping_silences_chain() -> None:
    silences = [
        Silence(ends_at=T0 + HOUR, rule="reads-down"),
        Silence(starts_at=T0 + HOUR / 2, ends_at=T0 + 3 * HOUR, tag="fitness"),
        Silence(ends_at=T0 + 9 * HOUR, rule="other"),
    ]
    assert should_deliver(msg(), silences, None, T0).until == T0 + 3 * HOUR


# 22:00-08:00 Asia/Shanghai is 14:00-00:00 UTC
NIGHT = QuietHours(time(22, 0), time(8, 0), SHANGHAI)


@pytest.mark.parametrize(
    ("now", "until"),
    [
        (datetime(2025, 12, 11, 14, 0, tzinfo=UTC), datetime(2025, 12, 12, 0, 0, tzinfo=UTC)),
        (datetime(2025, 12, 11, 23, 59, tzinfo=UTC), datetime(2025, 12, 12, 0, 0, tzinfo=UTC)),
        (datetime(2025, 12, 11, 20, 0, tzinfo=UTC), datetime(2025, 12, 12, 0, 0, tzinfo=UTC)),
        (datetime(2025, 12, 11, 13, 59, tzinfo=UTC), None),
        (datetime(2025, 12, 12, 0, 0, tzinfo=UTC), None),
        (datetime(2025, 12, 12, 5, 0, tzinfo=UTC), None),
    ],
)
def test_quiet_hours_wrapping_midnight(now: datetime, until: datetime | None) -> None:
    decision = should_deliver(msg(), [], NIGHT, now)
    if until is None:
        assert decision.action is Action.SEND
    else:
        assert (decision.action, decision.until, decision.reason) == (
            Action.HOLD,
            until,
            "quiet hours",
        )
        assert should_deliver(msg(severity=Severity.CRITICAL), [], NIGHT, now).action is (
            Action.SEND
        )


def test_quiet_hours_inside_one_day() -> None:
    lunch = QuietHours(time(12, 0), time(13, 30), ZoneInfo("UTC"))
    noon = datetime(2025, 12, 11, 12, 15, tzinfo=UTC)
    assert should_deliver(msg(), [], lunch, noon).until == datetime(
        2025, 12, 11, 13, 30, tzinfo=UTC
    )
    assert should_deliver(msg(), [], lunch, noon - HOUR).action is Action.SEND


def test_a_silence_ending_inside_quiet_hours_waits_for_the_window_end() -> None:
    evening = datetime(2025, 12, 11, 12, 0, tzinfo=UTC)  # 20:00 in Shanghai
    silence = Silence(ends_at=evening + 3 * HOUR)  # ends 23:00 Shanghai, inside the window
    decision = should_deliver(msg(), [silence], NIGHT, evening)
    assert (decision.action, decision.until) == (Action.HOLD, datetime(2025, 12, 12, tzinfo=UTC))
    assert decision.reason == "silenced"


def test_resolution_follows_the_fate_of_its_firing() -> None:
    silence = Silence(ends_at=T0 + HOUR)
    sent = msg(event=Event.RESOLVED, firing=FiringFate.SENT)
    assert should_deliver(sent, [], None, T0).action is Action.SEND
    assert should_deliver(sent, [silence], None, T0).until == T0 + HOUR  # held, never dropped
    queued = should_deliver(msg(event=Event.RESOLVED, firing=FiringFate.QUEUED), [], None, T0)
    assert (queued.action, queued.until) == (Action.HOLD, None)
    gone = msg(event=Event.RESOLVED, firing=FiringFate.SUPPRESSED)
    assert should_deliver(gone, [], None, T0).action is Action.SUPPRESS


def test_firing_under_silence_then_resolved_before_it_ends_sends_neither() -> None:
    silence = Silence(ends_at=T0 + 4 * HOUR, creator=UID, reason="campaign pause")
    first = should_deliver(msg(), [silence], None, T0)
    assert first.action is Action.HOLD
    # the alert resolves at T0+2h; at the silence's end the held firing is checked again
    firing_now = should_deliver(msg(alert_resolved=True), [silence], None, T0 + 4 * HOUR)
    assert firing_now.action is Action.SUPPRESS
    resolution = msg(event=Event.RESOLVED, firing=FiringFate.SUPPRESSED)
    assert should_deliver(resolution, [silence], None, T0 + 4 * HOUR).action is Action.SUPPRESS


def test_firing_sent_then_resolved_under_silence_is_delivered_when_it_ends() -> None:
    silence = Silence(ends_at=T0 + 4 * HOUR)
    resolution = msg(event=Event.RESOLVED, firing=FiringFate.SENT)
    held = should_deliver(resolution, [silence], None, T0 + HOUR)
    assert (held.action, held.until) == (Action.HOLD, T0 + 4 * HOUR)
    assert should_deliver(resolution, [silence], None, T0 + 4 * HOUR).action is Action.SEND


silences_st = st.builds(
    Silence,
    ends_at=st.integers(-600, 600).map(lambda m: T0 + timedelta(minutes=m)),
    starts_at=st.one_of(st.none(), st.integers(-600, 600).map(lambda m: T0 + timedelta(minutes=m))),
    rule=st.sampled_from([None, "reads-down", "other"]),
    creator=st.sampled_from([None, UID, "account"]),
    tag=st.sampled_from([None, "fitness", "food"]),
)


@settings(max_examples=300, deadline=None)
@given(
    silences=st.lists(silences_st, max_size=5),
    minute=st.integers(-600, 600),
    event=st.sampled_from(list(Event)),
    severity=st.sampled_from(list(Severity)),
    quiet=st.booleans(),
)
def test_no_message_while_a_matching_silence_lasts(
    silences: list[Silence], minute: int, event: Event, severity: Severity, quiet: bool
) -> None:
    now = T0 + timedelta(minutes=minute)
    message = msg(event=event, severity=severity)
    decision = should_deliver(message, silences, NIGHT if quiet else None, now)
    covering = [
        s
        for s in silences
        if s.active(now) and s.matches(message.rule, message.scope, message.tags)
    ]
    if covering:
        assert decision.action is Action.HOLD
        assert decision.until is not None
        assert decision.until >= max(s.ends_at for s in covering)
        # and no matching silence still holds at the release time
        assert not any(
            s.active(decision.until) and s.matches(message.rule, message.scope, message.tags)
            for s in silences
        )
    else:
        assert decision.action in (Action.SEND, Action.HOLD)
        if decision.action is Action.HOLD:
            assert quiet
            assert severity is not Severity.CRITICAL
