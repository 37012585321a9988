"""The budget: both rate caps and the daily cap hold for any call pattern, upstream feedback
(302, 303, account codes) pauses and resumes as SPEC section 5 says, and a restart loses nothing."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.config import parse_config
from monitor.errors import (
    AccountBlocked,
    BudgetError,
    InvalidRequest,
    NoContent,
    ParseError,
    QuotaExceeded,
    RateLimited,
    Retryable,
    TransportError,
    UnknownCode,
)
from monitor.policy.budget import (
    BudgetPolicy,
    BudgetState,
    daily_left,
    day_of,
    feedback_code,
    is_retryable,
    next_midnight,
    retry_delay,
    token_fingerprint,
)
from monitor.store.ledger import BudgetRow

SHANGHAI = ZoneInfo("Asia/Shanghai")
#: 23:00 in Shanghai, one hour before the quota day turns
T0 = datetime(2025, 12, 10, 15, 0, tzinfo=UTC)
SEC = timedelta(seconds=1)


def make_budget(cpm: int = 30, burst: int = 5, daily: int = 2000) -> BudgetPolicy:
    return BudgetPolicy(calls_per_minute=cpm, burst=burst, daily_calls=daily, zone=SHANGHAI)


def after(now: datetime, delay: float) -> datetime:
    return now + timedelta(seconds=delay)


# --- the bucket and the window -------------------------------------------------------------


def test_a_fresh_bucket_allows_the_burst_then_paces_at_calls_per_minute() -> None:
    budget = make_budget(cpm=30, burst=5)
    state = budget.initial(T0)
    for _ in range(5):
        assert budget.acquire_delay(state, T0) == 0.0
        state = budget.spend(state, T0)
    assert budget.acquire_delay(state, T0) == 2.0  # 30/min refills one token every 2 s
    assert budget.blocked_by(state, T0) == "bucket"
    with pytest.raises(BudgetError, match=r"next call allowed in 2\.0 s \(bucket\)"):
        budget.spend(state, T0)
    assert budget.acquire_delay(state, T0 + 2 * SEC) == 0.0
    state = budget.spend(state, T0 + 2 * SEC)
    assert budget.tokens_at(state, T0 + 2 * SEC) == pytest.approx(0.0)


def test_the_sliding_window_stops_what_the_bucket_would_let_through() -> None:
    # cpm 4, burst 4: a full bucket spent at once, then 4 more refill within 60 s; the bucket
    # alone would allow 5 calls in [0 s, 15 s], the window says at most 4 per 60 s
    budget = make_budget(cpm=4, burst=4)
    state = budget.initial(T0)
    for _ in range(4):
        state = budget.spend(state, T0)
    assert budget.waits(state, T0)["bucket"] == timedelta(seconds=15)
    assert budget.blocked_by(state, T0) == "window"
    assert budget.acquire_delay(state, T0) == 60.000001  # a send 60 s ago still counts
    assert budget.acquire_delay(state, T0 + 60 * SEC) == pytest.approx(1e-6)
    assert budget.acquire_delay(state, T0 + 60 * SEC + timedelta(microseconds=1)) == 0.0


def test_a_shortened_window_caps_the_same_way_over_its_length() -> None:
    # the process tests' knob (tests/support/tuned.py): the same cap over a 10 s window,
    # the bucket unchanged (a full one spent at once refills a token in 3 s)
    budget = replace(make_budget(cpm=20, burst=20), window=timedelta(seconds=10))
    state = budget.initial(T0)
    for _ in range(20):
        state = budget.spend(state, T0)
    assert budget.waits(state, T0)["bucket"] == timedelta(seconds=3)
    assert budget.blocked_by(state, T0) == "window"
    assert budget.acquire_delay(state, T0) == 10.000001
    assert budget.acquire_delay(state, T0 + 10 * SEC + timedelta(microseconds=1)) == 0.0


def test_the_daily_cap_waits_for_local_midnight() -> None:
    budget = make_budget(daily=10)
    state = budget.initial(T0)  # 23:00 Shanghai
    assert budget.acquire_delay(state, T0, calls_today=9) == 0.0
    assert budget.acquire_delay(state, T0, calls_today=10) == 3600.0
    assert budget.blocked_by(state, T0, calls_today=10) == "daily"
    assert daily_left(9, 10) == 1
    assert daily_left(12, 10) == 0


# --- the property: no window, no day ever exceeds its cap ---------------------------------

GAPS = st.one_of(st.just(0.0), st.floats(0, 5), st.floats(0, 90), st.floats(0, 9000))
EVENTS = st.sampled_from(["call", "call", "call", "302", "restart", "restart_without_window"])


def replay(budget: BudgetPolicy, steps: list[tuple[float, str]]) -> list[datetime]:
    """Obey every delay, spend, and apply the step's event; return the send times."""
    now, state = T0, budget.initial(T0)
    ledger: Counter[str] = Counter()
    sends: list[datetime] = []
    for gap, event in steps:
        now = after(now, gap)
        if event == "302":
            state = budget.on_result(state, 302, now)
        elif event == "restart":
            state = BudgetState.from_row(state.to_row())
        elif event == "restart_without_window":
            row = state.to_row()
            del row["recent_sends"]
            state = BudgetState.from_row(row)
        delay = budget.acquire_delay(state, now, ledger[day_of(now, SHANGHAI)])
        now = after(now, delay)
        # waiting exactly the delay is always enough
        assert budget.acquire_delay(state, now, ledger[day_of(now, SHANGHAI)]) == 0.0
        state = budget.spend(state, now, ledger[day_of(now, SHANGHAI)])
        ledger[day_of(now, SHANGHAI)] += 1
        sends.append(now)
    return sends


@settings(max_examples=150, deadline=None)
@given(
    cpm=st.integers(1, 12),
    burst_share=st.floats(0, 1),
    daily=st.integers(1, 60),
    steps=st.lists(st.tuples(GAPS, EVENTS), max_size=120),
)
def test_no_60s_window_and_no_day_ever_exceeds_its_cap(
    cpm: int, burst_share: float, daily: int, steps: list[tuple[float, str]]
) -> None:
    burst = max(1, round(cpm * burst_share))
    budget = make_budget(cpm=cpm, burst=burst, daily=daily)
    sends = replay(budget, steps)
    assert sends == sorted(sends)
    for i, start in enumerate(sends):
        in_window = [t for t in sends[i:] if t <= start + timedelta(seconds=60)]
        assert len(in_window) <= cpm, (start, in_window)
        # the token bucket on its own: at most burst + rate x elapsed between two sends
        for j, end in enumerate(sends[i:], start=1):
            allowed = burst + cpm / 60 * (end - start).total_seconds()
            assert j <= allowed + 1e-6
    per_day = Counter(day_of(t, SHANGHAI) for t in sends)
    assert max(per_day.values(), default=0) <= daily


# --- 302: the whole client slows, then returns cautiously ---------------------------------


def test_302_halves_the_rate_pauses_and_returns_step_by_step() -> None:
    budget = make_budget(cpm=60, burst=1)  # one call per second at full rate
    state = budget.spend(budget.initial(T0), T0)
    state = budget.on_result(state, RateLimited("rate limited", code=302), T0 + SEC)
    assert state.pause_code == 302
    assert state.rate_factor == 0.5
    assert state.paused_until == T0 + 61 * SEC
    assert not state.paused  # a slow-down, not a hard pause
    assert state.is_paused(T0 + 60 * SEC)
    assert budget.acquire_delay(state, T0 + SEC) == 60.0
    assert budget.blocked_by(state, T0 + SEC) == "pause"

    resume = T0 + 61 * SEC
    state = budget.spend(state, resume)
    assert budget.acquire_delay(state, resume) == 2.0  # half of one call per second

    quiet = budget.recover_after
    assert budget.factor_at(state, resume + quiet - SEC) == 0.5
    assert budget.factor_at(state, resume + quiet) == 0.625
    assert budget.factor_at(state, resume + 3 * quiet) == pytest.approx(0.9765625)
    assert budget.factor_at(state, resume + 4 * quiet) == 1.0
    settled = budget.settle(state, resume + 4 * quiet)
    assert (settled.pause_code, settled.paused_until, settled.pause_reason) == (None, None, None)
    assert settled.rate_factor == 1.0


def test_302s_from_calls_already_in_flight_halve_only_once_and_floor_at_one_sixteenth() -> None:
    budget = make_budget()
    state = budget.on_result(budget.initial(T0), 302, T0)
    state = budget.on_result(state, 302, T0 + SEC)  # same backoff: no news
    assert state.rate_factor == 0.5
    now = T0
    for _ in range(10):
        now = state.paused_until or now
        state = budget.on_result(state, 302, now)
    assert state.rate_factor == 1 / 16
    assert state.pause_reason == "rate limited (code 302); running at 6% of calls_per_minute"


def test_302_retry_after_hint_lengthens_the_pause() -> None:
    budget = make_budget()
    state = budget.on_result(budget.initial(T0), RateLimited("x", retry_after=300.0), T0)
    assert state.paused_until == T0 + 300 * SEC


def test_a_settled_slow_down_keeps_its_place_across_the_recovery() -> None:
    budget = make_budget(cpm=60, burst=1)
    state = budget.on_result(budget.initial(T0), 302, T0)
    resume = T0 + 60 * SEC
    midway = budget.settle(state, resume + budget.recover_after + 10 * SEC)
    assert midway.rate_factor == 0.625
    assert midway.pause_code == 302
    assert midway.paused_until == resume + budget.recover_after
    for moment in (resume + 3 * budget.recover_after, resume + 9 * budget.recover_after):
        assert budget.factor_at(midway, moment) == budget.factor_at(state, moment)


# --- 303: pause every call until the quota day turns --------------------------------------


def test_303_pauses_until_midnight_in_shanghai() -> None:
    budget = make_budget()
    late = datetime(2025, 12, 10, 15, 59, 59, tzinfo=UTC)  # 23:59:59 in Shanghai
    state = budget.on_result(budget.initial(late), QuotaExceeded("quota", code=303), late)
    assert state.pause_code == 303
    assert state.paused
    assert state.paused_until == datetime(2025, 12, 10, 16, 0, tzinfo=UTC)
    assert budget.acquire_delay(state, late) == 1.0
    assert day_of(late, SHANGHAI) == "2025-12-10"
    assert day_of(state.paused_until, SHANGHAI) == "2025-12-11"
    assert (
        state.pause_reason
        == "daily quota exceeded (code 303); calls resume at midnight Asia/Shanghai"
    )

    after_midnight = datetime(2025, 12, 10, 16, 0, 1, tzinfo=UTC)  # 00:00:01 on the 11th
    assert not state.is_paused(after_midnight)
    assert budget.settle(state, after_midnight).pause_code is None
    again = budget.on_result(state, 303, after_midnight)
    assert again.paused_until == datetime(2025, 12, 11, 16, 0, tzinfo=UTC)


def test_day_of_and_next_midnight_follow_the_budget_time_zone() -> None:
    utc_evening = datetime(2025, 12, 10, 20, 0, tzinfo=UTC)  # already the 11th in Shanghai
    assert day_of(utc_evening, SHANGHAI) == "2025-12-11"
    assert day_of(utc_evening, ZoneInfo("UTC")) == "2025-12-10"
    assert next_midnight(utc_evening, SHANGHAI) == datetime(2025, 12, 11, 16, 0, tzinfo=UTC)
    assert next_midnight(datetime(2025, 12, 11, 16, 0, tzinfo=UTC), SHANGHAI) == datetime(
        2025, 12, 12, 16, 0, tzinfo=UTC
    )


# --- 100 / 600 / 601 / 602: pause, probe slowly, resume by itself --------------------------


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        (100, "invalid or inactive API token"),
        (600, "permission denied for this API"),
        (601, "insufficient account balance"),
        (602, "this token's spending cap is reached"),
    ],
)
def test_account_codes_pause_and_probe_once_per_probe_every(code: int, reason: str) -> None:
    budget = make_budget()
    state = budget.on_result(budget.initial(T0), AccountBlocked("blocked", code=code), T0)
    assert state.paused
    assert state.pause_code == code
    assert state.pause_reason == f"{reason} (code {code}); probing every 15m"
    # a worker that asks every 10 s for an hour gets exactly one probe per 15 minutes
    probes = []
    now = T0
    while now < T0 + timedelta(hours=1, seconds=1):
        if budget.acquire_delay(state, now) == 0.0:
            assert state.is_probe_due(now)
            state = budget.spend(state, now)
            probes.append(now)
            state = budget.on_result(state, code, now + SEC)
        else:
            assert not state.is_probe_due(now)
        now += 10 * SEC
    assert probes == [T0 + timedelta(minutes=m) for m in (15, 30, 45, 60)]
    state = budget.on_result(state, None, now)  # the next probe succeeds
    assert (state.pause_code, state.paused_until, state.pause_reason) == (None, None, None)
    assert not state.paused
    assert not state.is_paused(now)


def test_an_account_pause_holds_through_failures_and_ends_on_any_answer_of_a_working_account() -> (
    None
):
    budget = make_budget()
    state = budget.on_result(budget.initial(T0), 601, T0)
    for code in (500, 301):
        assert budget.on_result(state, code, T0 + SEC).pause_code == 601
    # a probe answered 302 or 303: the account works, and the limit it names applies
    slowed = budget.on_result(state, 302, T0 + SEC)
    assert (slowed.pause_code, slowed.rate_factor) == (302, 0.5)
    assert slowed.paused_until is not None
    assert slowed.paused_until >= T0 + SEC + budget.slow_pause
    quota = budget.on_result(state, 303, T0 + SEC)
    assert quota.pause_code == 303
    assert quota.is_paused(T0 + 2 * SEC)
    resumed = budget.on_result(state, NoContent("no content", code=201), T0 + SEC)
    assert resumed.pause_code is None
    assert resumed.rate_factor == 1.0


def test_a_retryable_failure_leaves_an_ordinary_state_alone() -> None:
    budget = make_budget()
    state = budget.spend(budget.initial(T0), T0)
    assert budget.on_result(state, Retryable("FAILED, RETRY", code=301), T0) == state
    assert budget.on_result(state, TransportError("timeout"), T0) == state


# --- restarts: the row form neither resets nor double-counts -------------------------------


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def busy_state(budget: BudgetPolicy) -> BudgetState:
    state = budget.initial(T0)
    for i in range(5):
        state = budget.spend(state, T0 + i * SEC)
    return budget.on_result(state, 302, T0 + 5 * SEC)


def test_the_state_round_trips_through_its_row() -> None:
    budget = make_budget()
    state = busy_state(budget)
    row = state.to_row()
    assert set(row) == {
        "tokens",
        "refilled_at",
        "paused_until",
        "pause_code",
        "pause_reason",
        "rate_factor",
        "recent_sends",
        "paused_at",
        "pause_token",
    }
    assert row["pause_code"] == 302
    assert row["rate_factor"] == 0.5
    assert row["refilled_at"] == T0 + 5 * SEC
    assert BudgetState.from_row(row) == state
    # SQLite hands datetimes back naive (stored as UTC)
    naive = {k: v.replace(tzinfo=None) if isinstance(v, datetime) else v for k, v in row.items()}
    assert BudgetState.from_row(naive) == state


def test_a_sliding_window_is_written_as_if_written_whole() -> None:
    """Each save writes the last minute's sends again; the texts of the sends it kept are
    reused (``_slid``), and the text is the one a fresh encoding gives, whatever came before."""
    budget = make_budget(cpm=600, burst=50)
    state = budget.initial(T0)
    for i in range(200):
        state = budget.spend(state, T0 + i * SEC / 2)
        budget.initial(T0).to_row()  # the gate writes a fresh row's values at every spend
        text = state.to_row()["recent_sends"]
        assert text == ",".join(str((t - EPOCH) // timedelta(microseconds=1)) for t in state.recent)
        assert BudgetState.from_row(state.to_row()) == state
    # another window (another process's row), then this one again
    other = budget.spend(budget.initial(T0 + 3 * SEC), T0 + 3 * SEC)
    assert BudgetState.from_row(other.to_row()) == other
    assert BudgetState.from_row(state.to_row()) == state


def test_a_restart_does_not_refill_an_empty_bucket() -> None:
    budget = make_budget(cpm=30, burst=5)
    state = budget.initial(T0)
    for _ in range(5):
        state = budget.spend(state, T0)
    reloaded = BudgetState.from_row(state.to_row())
    assert budget.tokens_at(reloaded, T0 + SEC) == pytest.approx(0.5)
    assert budget.acquire_delay(reloaded, T0 + SEC) == 1.0


def test_a_row_without_send_times_holds_calls_back_for_one_window() -> None:
    budget = make_budget(cpm=30, burst=5)
    state = budget.spend(budget.initial(T0), T0)
    row = state.to_row()
    row["recent_sends"] = None
    reloaded = BudgetState.from_row(row)
    assert reloaded.recent is None
    assert budget.blocked_by(reloaded, T0 + SEC) == "window"
    assert budget.acquire_delay(reloaded, T0 + SEC) == 59.000001
    # settling (another instance's answer, say) keeps the same hold, not a longer one
    settled = budget.settle(reloaded, T0 + 30 * SEC)
    assert budget.acquire_delay(settled, T0 + 30 * SEC) == 30.000001
    later = T0 + 61 * SEC
    spent = budget.spend(reloaded, later)
    assert spent.recent == (later,)


def test_the_stores_row_object_loads_directly() -> None:
    # the store's BudgetRow has no recent_sends column yet: read as "unknown window"
    budget = make_budget()
    state = busy_state(budget)
    stored = BudgetRow(
        tokens=state.tokens,
        refilled_at=state.refilled_at,
        paused_until=state.paused_until,
        pause_code=state.pause_code,
        pause_reason=state.pause_reason,
        rate_factor=state.rate_factor,
    )
    assert BudgetState.from_row(stored) == replace(state, recent=None)


def test_an_empty_row_form_is_read_with_defaults() -> None:
    row = {"tokens": "2.5", "refilled_at": "2025-12-10T15:00:00+00:00", "rate_factor": None}
    state = BudgetState.from_row(row)
    assert state == BudgetState(tokens=2.5, refilled_at=T0, recent=None)


def test_from_config_takes_the_budget_and_probe_pace() -> None:
    config = parse_config(
        {
            "budget": {"calls_per_minute": 12, "burst": 3, "daily_calls": 500, "timezone": "UTC"},
            "schedule": {"probe_every": "30m"},
        }
    )
    budget = BudgetPolicy.from_config(config)
    assert (budget.calls_per_minute, budget.burst, budget.daily_calls) == (12, 3, 500)
    assert budget.zone == ZoneInfo("UTC")
    assert budget.probe_every == timedelta(minutes=30)
    assert budget.initial(T0) == BudgetState(tokens=3.0, refilled_at=T0)
    # the upstream's minute, one second longer for the daemon (only process tests shorten it)
    assert budget.window == timedelta(seconds=60)
    assert budget.window_margin == timedelta(seconds=1)


# --- retry policy ---------------------------------------------------------------------------


class FixedRandom:
    def __init__(self, value: float) -> None:
        self.value = value

    def random(self) -> float:
        return self.value


def test_retry_delay_is_capped_exponential_with_full_jitter() -> None:
    base, cap = timedelta(seconds=30), timedelta(minutes=15)
    top = FixedRandom(1.0)
    assert [retry_delay(n, base, cap, top) for n in (1, 2, 3, 5, 6, 100)] == [
        30.0,
        60.0,
        120.0,
        480.0,
        900.0,
        900.0,
    ]
    assert retry_delay(3, base, cap, FixedRandom(0.25)) == 30.0
    assert retry_delay(3, base, cap, FixedRandom(0.0)) == 0.0
    rng = random.Random(7)
    delays = [retry_delay(4, base, cap, rng) for _ in range(500)]
    assert 0.0 <= min(delays) < 20.0
    assert 220.0 < max(delays) <= 240.0
    with pytest.raises(ValueError, match="attempt counts from 1"):
        retry_delay(0, base, cap, rng)


def test_only_the_named_families_are_retried() -> None:
    assert is_retryable(Retryable("FAILED, RETRY", code=301))
    assert is_retryable(Retryable("SERVER ERROR", code=500))
    assert is_retryable(TransportError("ReadTimeout"))
    for error in (
        RateLimited("x", code=302),
        QuotaExceeded("x", code=303),
        AccountBlocked("x", code=601),
        InvalidRequest("x", code=400),
        NoContent("x", code=201),
        UnknownCode("x", code=404),
        ParseError("x", code=0),
        ValueError("not ours"),
    ):
        assert not is_retryable(error), error


def test_outcome_codes() -> None:
    assert feedback_code(None) == 0
    assert feedback_code(602) == 602
    assert feedback_code(RateLimited("x")) == 302
    assert feedback_code(QuotaExceeded("x")) == 303
    assert feedback_code(AccountBlocked("x", code=100)) == 100
    assert feedback_code(AccountBlocked("x")) == 600  # a blocked account without its code
    assert feedback_code(NoContent("x")) == 201
    assert feedback_code(Retryable("x", code=301)) == 301
    assert feedback_code(TransportError("x")) is None


def test_probe_state_survives_a_restart() -> None:
    budget = make_budget()
    state = budget.on_result(budget.initial(T0), 601, T0)
    reloaded = BudgetState.from_row(state.to_row())
    assert reloaded == state
    assert not reloaded.is_probe_due(T0 + timedelta(minutes=14))
    assert reloaded.is_probe_due(T0 + timedelta(minutes=15))
    assert replace(reloaded, pause_code=None).is_probe_due(T0 + timedelta(hours=1)) is False


# --- pauses end when the cause is fixed, and only then -------------------------------------


def test_an_answer_to_a_call_sent_before_an_account_pause_never_ends_it() -> None:
    budget = make_budget()
    state = budget.spend(budget.initial(T0), T0)
    paused = budget.on_result(state, 601, T0 + 2 * SEC, sent_at=T0)
    assert paused.pause_code == 601
    assert paused.paused_at == T0 + 2 * SEC
    # a success sent at T0 + 1 s (before the pause) comes back after it: the pause holds
    for late in (0, 201, 302, 303):
        held = budget.on_result(paused, late, T0 + 3 * SEC, sent_at=T0 + SEC)
        assert held.pause_code == 601, late
    # a call sent after the pause began shows money: any of these ends it
    for money in (0, 201, 302, 303):
        after = budget.on_result(paused, money, T0 + 5 * SEC, sent_at=T0 + 4 * SEC)
        assert after.pause_code != 601, money
        assert after.paused_at is None


def test_a_pause_stores_the_fingerprint_of_its_token_never_the_token() -> None:
    budget = make_budget()
    token = "a-real-looking-token-0123456789"
    state = budget.on_result(budget.initial(T0), 100, T0, token=token_fingerprint(token))
    row = state.to_row()
    assert row["pause_token"] == token_fingerprint(token)
    assert token not in repr(row)
    assert len(str(row["pause_token"])) == 16
    assert state.token_changed(token_fingerprint("another-token-0123456789"))
    assert not state.token_changed(token_fingerprint(token))
