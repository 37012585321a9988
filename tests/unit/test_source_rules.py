"""The rules on the follower, note and balance sources, pure: followers in threshold, change and
anomaly (on the fans series only), ``new_note`` and ``note`` per note with their bounds, the
once-per-note lifecycle of an event, ``balance`` on the account, and what their messages say."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitor.config import Rule, parse_config
from monitor.model import (
    Creator,
    DailyPoint,
    FollowerPoint,
    Note,
    NoteObservation,
    NoteRecord,
    NoteStats,
    Phase,
    Variant,
    Verdict,
    note_variant,
)
from monitor.notify.facts import alert_facts, grouped_entry, render_facts
from monitor.notify.message import MessageContext
from monitor.notify.rendering import Renderer
from monitor.notify.summary import describe
from monitor.policy import events, lifecycle
from monitor.policy.events import EVENT_WINDOW, NOTE_ZONE
from monitor.policy.grouping import compose
from monitor.policy.lifecycle import EVENT_HOLD, Event
from monitor.policy.rules import AccountSubject, Subject, evaluate, in_scope, outcomes
from monitor.service.alerting.backtest import spend_days_left
from monitor.store import BalanceReading

LILY = Creator("5c3bf7f7000000000602fd63", "Lilyy", ("fitness",))
NOW = datetime(2026, 11, 10, 4, 0, tzinfo=UTC)  # 12:00 in Shanghai
FANS = Variant.for_source("fans")
NOTES = Variant.for_source("notes")
BASELINE = NOW - timedelta(days=20)


def rule(**fields: Any) -> Rule:
    fields.setdefault("name", "r")
    return parse_config({"creators": [{"user_id": LILY.user_id}], "rules": [fields]}).rules[0]


def followers(*counts: int, start: date = date(2026, 11, 1)) -> tuple[FollowerPoint, ...]:
    return tuple(FollowerPoint(start + timedelta(days=i), n) for i, n in enumerate(counts))


def record(
    n: int,
    *,
    published: date = date(2026, 11, 9),
    first_seen: datetime = NOW - timedelta(hours=2),
    seen: datetime = NOW - timedelta(hours=2),
    reads: int | None = 100,
    video: bool = True,
    ad: bool = False,
    brand: str | None = None,
) -> NoteRecord:
    note = Note(f"{n:024x}", f"note {n}", published, video=video, ad=ad, brand=brand)
    first = NoteObservation(first_seen, NoteStats(reads=10, likes=1, collects=0))
    return NoteRecord(note, first_seen, first, NoteObservation(seen, NoteStats(reads=reads)))


def notes_subject(*records: NoteRecord, now: datetime = NOW) -> Subject:
    return Subject(LILY, NOTES, (), now, notes=records, notes_since=BASELINE)


# --- followers ------------------------------------------------------------------------------


def test_followers_falling_one_percent_in_a_week_fire_on_the_fans_series_only() -> None:
    fall = rule(kind="change", metric="fans", baseline="7d", pct=-1)
    series = followers(10_000, 10_010, 10_020, 10_000, 9_990, 9_950, 9_930, 9_900)
    out = evaluate(fall, Subject(LILY, FANS, series, NOW))
    assert out.verdict is Verdict.FIRING
    assert out.finding is not None
    assert out.finding.summary == "followers 10,000 → 9,900 (-1.0 %) from 2026-11-01 to 2026-11-08"
    assert out.finding.details["rolling_median"] is False  # counts, not rolling medians
    # a core variant's series is not the followers', and a core metric is not read on fans
    assert not in_scope(fall, Subject(LILY, Variant(), (DailyPoint(date(2026, 11, 8)),), NOW))
    reads = rule(kind="change", metric="read", pct=-1)
    assert not in_scope(reads, Subject(LILY, FANS, series, NOW))
    assert outcomes(fall, Subject(LILY, FANS, series, NOW)) == [("fans/DAY_30", out)]
    steady = followers(10_000, 10_010, 10_020, 10_000, 9_990, 9_950, 9_930, 9_950)
    assert evaluate(fall, Subject(LILY, FANS, steady, NOW)).verdict is Verdict.CLEAR


def test_followers_in_a_threshold_and_an_anomaly() -> None:
    floor = rule(kind="threshold", metric="fans", op="<", value=10_000)
    out = evaluate(floor, Subject(LILY, FANS, followers(10_050, 9_990), NOW))
    assert out.finding is not None
    assert (out.verdict, out.finding.summary) == (
        Verdict.FIRING,
        "followers 9,990 < 10,000 (threshold) on 2026-11-02",
    )
    jump = rule(kind="anomaly", metric="fans", min_points=7)
    steady = followers(*(10_000 + 10 * i for i in range(10)), 15_000)
    found = evaluate(jump, Subject(LILY, FANS, steady, NOW))
    assert found.verdict is Verdict.FIRING
    assert found.finding is not None
    assert found.finding.summary.startswith("followers 15,000 is +")


# --- new_note -------------------------------------------------------------------------------


def test_new_note_announces_notes_first_listed_after_the_baseline_and_recently() -> None:
    new_note = rule(kind="new_note")
    fresh = record(1, ad=True, brand="Lancôme")
    baseline = record(2, first_seen=BASELINE, seen=NOW - timedelta(hours=2))
    old_pin = record(3, published=date(2026, 9, 1))  # existed when tracking began
    long_ago = record(4, first_seen=NOW - EVENT_WINDOW, published=date(2026, 11, 7))
    found_late = record(5, published=date(2026, 11, 2))  # listed 8 days after: not news
    week = record(6, published=date(2026, 11, 3))  # 7 days before: still told
    found = outcomes(new_note, notes_subject(fresh, baseline, old_pin, long_ago, found_late))
    assert [key for key, _ in outcomes(new_note, notes_subject(week))] == [
        note_variant(week.note.note_id)
    ]
    assert [key for key, _ in found] == [note_variant(fresh.note.note_id)]
    outcome = found[0][1]
    assert outcome.verdict is Verdict.FIRING
    assert outcome.finding is not None
    assert outcome.finding.summary == (
        "new note “note 1” (video, published 2026-11-09, ad: Lancôme)"
    )
    assert outcome.finding.details["url"] == fresh.note.url
    # before any visit nothing is new; on another source's series the rule says nothing
    assert outcomes(new_note, Subject(LILY, NOTES, (), NOW, notes=(fresh,))) == []
    assert outcomes(new_note, Subject(LILY, FANS, (), NOW, notes=(fresh,))) == []
    assert evaluate(new_note, notes_subject(fresh)).verdict is Verdict.UNKNOWN


# --- note -----------------------------------------------------------------------------------


def test_a_hit_within_three_days_and_a_flop_after_three_days() -> None:
    hit = rule(kind="note", metric="reads", op=">=", value=10_000, within="3d")
    young = record(1, published=date(2026, 11, 9), reads=12_000)
    modest = record(2, published=date(2026, 11, 9), reads=900)
    # seen at 3 days old: no longer "within 3d", so not judged by the hit rule
    aged = record(3, published=date(2026, 11, 6), seen=NOW - timedelta(hours=1), reads=50_000)
    found = dict(outcomes(hit, notes_subject(young, modest, aged)))
    assert set(found) == {note_variant(young.note.note_id), note_variant(modest.note.note_id)}
    assert found[note_variant(modest.note.note_id)].verdict is Verdict.CLEAR
    firing = found[note_variant(young.note.note_id)]
    assert firing.finding is not None
    assert firing.finding.summary == (
        "reads 12,000 >= 10,000 within 3d of publishing: “note 1” (video, published 2026-11-09)"
    )

    flop = rule(kind="note", metric="reads", op="<", value=500, after="3d")
    due = record(4, published=date(2026, 11, 7), reads=320, video=False)  # 3d 12h old
    early = record(5, published=date(2026, 11, 8), reads=10)  # 2d 12h: not judged yet
    ancient = record(6, published=date(2026, 10, 1), reads=10)  # months old: never judged
    unknown = record(7, published=date(2026, 11, 7), reads=None)
    judged = dict(outcomes(flop, notes_subject(due, early, ancient, unknown)))
    assert set(judged) == {note_variant(due.note.note_id), note_variant(unknown.note.note_id)}
    assert judged[note_variant(unknown.note.note_id)].verdict is Verdict.UNKNOWN
    summary = judged[note_variant(due.note.note_id)].finding
    assert summary is not None
    assert summary.summary == (
        "reads 320 < 500 3d after publishing: “note 4” (photo, published 2026-11-07)"
    )


def test_a_note_is_as_old_as_its_publishing_day_in_shanghai() -> None:
    note = record(1, published=date(2026, 11, 10)).note
    assert events.note_age(note, datetime(2026, 11, 9, 16, 0, tzinfo=UTC)) == timedelta(0)
    assert events.note_age(note, NOW) == timedelta(hours=12)
    assert NOTE_ZONE.key == "Asia/Shanghai"


def test_the_notes_to_load_are_bounded_by_the_rules() -> None:
    assert (
        events.notes_wanted([rule(kind="threshold", metric="read", op="<", value=1)], NOW) is None
    )
    wanted = events.notes_wanted(
        [
            rule(kind="new_note"),
            rule(kind="note", metric="likes", op=">", value=1, after="7d"),
        ],
        NOW,
    )
    assert wanted is not None
    assert wanted.seen_since == NOW - EVENT_WINDOW
    assert wanted.published_since == date(2026, 11, 1)  # 7d + the 2d window before 12:00


# --- the event lifecycle --------------------------------------------------------------------


def test_an_event_fires_once_at_once_and_ends_quietly() -> None:
    new_note = rule(kind="new_note")
    fresh = record(1)
    [(key, outcome)] = outcomes(new_note, notes_subject(fresh))
    first = lifecycle.step(None, outcome, new_note, NOW, creator_id=7, variant=key)
    assert first.events == (Event.FIRING,)
    fired = first.after
    assert fired is not None
    assert (fired.state, fired.variant, fired.firing_sent) == (Phase.FIRING, key, True)
    # seen again: nothing, not even after a day (no repeat)
    again = lifecycle.step(fired, outcome, new_note, NOW + timedelta(minutes=5), variant=key)
    assert (again.events, again.changed) == ((), False)
    later = NOW + EVENT_HOLD
    done = lifecycle.step(fired, outcome, new_note, later, variant=key)
    assert done.events == ()
    assert done.after is not None
    assert (done.after.state, done.after.resolved_at) == (Phase.RESOLVED, later)
    # told once: a resolved event never fires again
    never = lifecycle.step(done.after, outcome, new_note, later + timedelta(days=1), variant=key)
    assert (never.events, never.changed) == ((), False)


# --- balance --------------------------------------------------------------------------------


def account(balance: str | None, days_left: float | None = None) -> AccountSubject:
    return AccountSubject(
        now=NOW,
        used_today=0,
        daily_calls=1000,
        balance=None if balance is None else Decimal(balance),
        balance_read_at=NOW,
        price_per_call=Decimal("0.05"),
        days_left=days_left,
    )


def test_balance_fires_below_the_line_and_resolves_when_money_is_added() -> None:
    low = rule(kind="balance", below=200)
    assert in_scope(low, account("1"))
    assert not in_scope(low, Subject(LILY, Variant(), (), NOW))
    assert evaluate(low, account(None)).verdict is Verdict.UNKNOWN
    out = evaluate(low, account("150.5", 2.5))
    assert out.finding is not None
    assert (out.verdict, out.scope) == (Verdict.FIRING, "account")
    assert out.finding.summary == "balance 150.50 CNY < 200.00 CNY, 2.5 days left"
    state = lifecycle.step(None, out, low, NOW).after
    topped = evaluate(low, account("1150", 40))
    assert topped.verdict is Verdict.CLEAR
    resolved = lifecycle.step(state, topped, low, NOW + timedelta(hours=1))
    assert resolved.events == (Event.RESOLVED,)


def test_balance_days_left_needs_a_spend_rate() -> None:
    short = rule(kind="balance", days_left=3)
    assert evaluate(short, account("500")).verdict is Verdict.UNKNOWN
    out = evaluate(short, account("500", 2.0))
    assert out.finding is not None
    assert (out.verdict, out.finding.summary) == (
        Verdict.FIRING,
        "balance 500.00 CNY, 2.0 days left < 3",
    )
    both = rule(kind="balance", below=200, days_left=3)
    assert evaluate(both, account("150")).verdict is Verdict.FIRING  # the amount alone says
    assert evaluate(both, account("900")).verdict is Verdict.UNKNOWN  # and the days are unknown
    assert evaluate(both, account("900", 10)).verdict is Verdict.CLEAR


def test_the_backtest_reads_the_days_left_from_the_readings_fall() -> None:
    at = NOW - timedelta(days=2)
    readings = [
        BalanceReading(at, Decimal(300)),
        BalanceReading(at + timedelta(days=1), Decimal(200)),
        BalanceReading(at + timedelta(days=1, hours=1), Decimal(1200)),  # a top-up
        BalanceReading(at + timedelta(days=2), Decimal(1100)),
    ]
    assert spend_days_left(readings, 0) is None  # one reading: no rate
    assert spend_days_left(readings, 3) == pytest.approx(1100 / 100)  # 200 spent in 2 days


# --- config ---------------------------------------------------------------------------------


def test_an_event_rule_takes_no_lifecycle_keys_and_new_notes_are_info() -> None:
    assert rule(kind="new_note").severity == "info"
    assert rule(kind="note", metric="reads", op="<", value=1, after="3d").severity == "warning"
    with pytest.raises(Exception, match="'for', 'repeat' do not apply to an event"):
        rule(kind="new_note", **{"for": 2, "repeat": "1h"})


# --- messages -------------------------------------------------------------------------------


def _facts(event: str, rule_: Rule, outcome: Any, key: str, language: Any) -> dict[str, Any]:
    state = lifecycle.step(None, outcome, rule_, NOW, creator_id=1, variant=key).after
    assert state is not None
    context = MessageContext(now=NOW, creator=LILY)
    return alert_facts(event, state, context, language)


def test_a_new_note_message_names_title_day_type_ad_brand_and_link() -> None:
    new_note = rule(kind="new_note", name="new-notes")
    fresh = record(1, ad=True, brand="Lancôme")
    [(key, outcome)] = outcomes(new_note, notes_subject(fresh))
    en = render_facts(Renderer(), _facts("firing", new_note, outcome, key, "en"))
    assert en.title == "[NEW NOTE] Lilyy: “note 1” (video, published 2026-11-09, ad: Lancôme)"
    for line in (
        "- Title: note 1",
        "- Published: 2026-11-09 (Asia/Shanghai)",
        "- Type: video",
        "- Ad, brand Lancôme",
        f"- Link: https://www.xiaohongshu.com/explore/{fresh.note.note_id}",
    ):
        assert line in en.body
    zh = render_facts(Renderer(), _facts("firing", new_note, outcome, key, "zh"))
    assert zh.title == "【新笔记】Lilyy：「note 1」（视频，发布于 2026-11-09，广告：Lancôme）"
    assert "- 广告（合作笔记），品牌：Lancôme" in zh.body
    assert f"- 链接：{fresh.note.url}" in zh.body


def test_a_wave_of_new_notes_reads_as_one_list_of_notes_with_their_links() -> None:
    new_note = rule(kind="new_note", name="new-notes")
    records = [record(n, video=n % 2 == 0) for n in (1, 2, 3)]
    entries = [
        grouped_entry(_facts("firing", new_note, outcome, key, "en"))
        for key, outcome in outcomes(new_note, notes_subject(*records))
    ]
    title, body = compose(entries, limit=10)
    assert title == "[NEW NOTE] new-notes: 3 notes"
    assert body.splitlines()[0] == (
        f"- Lilyy: “note 1” (photo, published 2026-11-09) {records[0].note.url}"
    )
    assert len(body.splitlines()) == 3


def test_a_hit_message_and_a_balance_message() -> None:
    hit = rule(kind="note", name="hits", metric="reads", op=">=", value=10_000, within="3d")
    [(key, outcome)] = outcomes(hit, notes_subject(record(1, reads=12_000)))
    message = render_facts(Renderer(), _facts("firing", hit, outcome, key, "en"))
    assert message.title == (
        "[NOTE] Lilyy: reads 12,000 >= 10,000 within 3d of publishing · "
        "“note 1” (video, published 2026-11-09)"
    )
    assert "- Reads: 12,000 >= 10,000, within 3d of publishing" in message.body

    low = rule(kind="balance", name="low-balance", below=200)
    state = lifecycle.step(None, evaluate(low, account("150", 2.5)), low, NOW).after
    assert state is not None
    context = MessageContext(now=NOW)
    firing = render_facts(Renderer(), alert_facts("firing", state, context, "en"))
    assert firing.title == "[WARNING] balance 150.00 CNY < 200.00 CNY"
    assert "- Price per call: 0.0500 CNY" in firing.body
    assert "- Days left at the current plan: 2.5" in firing.body
    cleared = lifecycle.step(state, evaluate(low, account("1150", 40)), low, NOW).after
    assert cleared is not None
    back = render_facts(Renderer(), alert_facts("resolved", cleared, context, "zh"))
    assert back.title == "【已恢复】余额回到 1,150.00 CNY：已充值"
    assert describe(_Row(cleared), "en") == "balance back to 1,150.00 CNY"


class _Row:
    """An alert row as ``describe`` reads it."""

    def __init__(self, state: Any) -> None:
        self.scope, self.state = state.scope, state.state.value
        self.metric, self.value, self.baseline = state.metric, state.value, state.baseline
        self.summary, self.details = state.summary, state.details


# --- fuzzed ---------------------------------------------------------------------------------

stats = st.one_of(st.none(), st.integers(0, 2**63 - 1))


@st.composite
def stored_notes(draw: st.DrawFn) -> NoteRecord:
    published = draw(st.dates(date(2026, 1, 1), date(2026, 12, 31)))
    first = draw(st.datetimes(datetime(2026, 1, 1), datetime(2026, 12, 31), timezones=st.just(UTC)))
    seen = first + draw(st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=60)))
    note = Note(
        f"{draw(st.integers(0, 2**96 - 1)):024x}",
        draw(st.text(max_size=40)),
        published,
        video=draw(st.booleans()),
        ad=draw(st.booleans()),
        brand=draw(st.one_of(st.none(), st.text(min_size=1, max_size=20))),
    )
    observed = NoteStats(draw(stats), draw(stats), draw(stats))
    return NoteRecord(
        note, first, NoteObservation(first, observed), NoteObservation(seen, observed)
    )


NOTE_RULES = [
    rule(kind="new_note"),
    rule(kind="note", metric="reads", op=">=", value=10_000, within="3d"),
    rule(kind="note", metric="collects", op="<", value=5, after="36h"),
]


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(stored_notes(), max_size=6),
    st.datetimes(datetime(2026, 1, 1), datetime(2027, 1, 1), timezones=st.just(UTC)),
    st.one_of(st.none(), st.decimals(min_value=-1e9, max_value=1e12, places=4)),
    st.one_of(st.none(), st.floats(min_value=0, max_value=1e6)),
)
def test_the_source_rules_decide_on_any_notes_and_balance(
    records: list[NoteRecord], now: datetime, balance: Decimal | None, days: float | None
) -> None:
    """Whatever the notes and the balance, every outcome is one of each note's, and its
    finding a summary with JSON-ready details that the messages render."""
    subject = Subject(LILY, NOTES, (), now, notes=tuple(records), notes_since=BASELINE)
    for note_rule in NOTE_RULES:
        for key, outcome in outcomes(note_rule, subject):
            assert key.startswith("note:")
            if outcome.finding is not None:
                assert outcome.finding.summary
                json.dumps(dict(outcome.finding.details))
                state = lifecycle.step(None, outcome, note_rule, now, variant=key).after
                if state is not None:
                    facts = alert_facts("firing", state, MessageContext(now, LILY), "zh")
                    assert render_facts(Renderer(), facts).title
    for balance_rule in (rule(kind="balance", below=200, days_left=3),):
        subject_ = AccountSubject(
            now=now, used_today=0, daily_calls=1, balance=balance, days_left=days
        )
        outcome = evaluate(balance_rule, subject_)
        if outcome.finding is not None:
            json.dumps(dict(outcome.finding.details))
