"""The cadence: stable, evenly spread slots; catch-up without bursts; the fetch window; most
overdue first without starvation; the call plan that ``check`` prints."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.store import first_due

from monitor.config import parse_config
from monitor.display import format_duration
from monitor.model import Business, Variant
from monitor.policy.cadence import (
    EPOCH,
    UNTAGGED,
    Plan,
    apply_window,
    call_plan,
    first_due_micros,
    next_due,
    pick_due,
    slot_key,
)

ROOT = Path(__file__).parent.parent.parent
SHANGHAI = ZoneInfo("Asia/Shanghai")
NOW = datetime(2025, 12, 10, 15, 0, tzinfo=UTC)
UID = "5c3bf7f7000000000602fd63"
DAY = timedelta(days=1)
HOUR = timedelta(hours=1)


def uid(i: int) -> str:
    return f"{i:024x}"


def slot_offset(key: str, every: timedelta) -> timedelta:
    """Where inside each ``every`` the live timetable puts the key's slots."""
    return (first_due(key, every, NOW) - EPOCH) % every


def pinned_offset(key: str, every: timedelta) -> timedelta:
    """The offset as the grid defines it, computed here on its own: blake2b of the series
    name, in whole seconds of the cadence."""
    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest()
    return timedelta(seconds=int.from_bytes(digest, "big") % max(1, every // timedelta(seconds=1)))


@dataclass(frozen=True, slots=True)
class DueEntry:
    key: str
    due_at: datetime


# --- slots ----------------------------------------------------------------------------------


def test_the_slot_offset_is_a_stable_hash_of_the_series() -> None:
    key = slot_key(UID, Variant())
    assert key == "5c3bf7f7000000000602fd63/DAILY_NOTE/PHOTO_TEXT_AND_VIDEO/DAY_30/ALL"
    # pinned: a change here moves every creator's schedule after an upgrade
    assert slot_offset(key, DAY) == timedelta(hours=10, minutes=42, seconds=43)
    other = slot_key(UID, Variant(business=Business.COOPERATE_NOTE))
    assert slot_offset(other, DAY) != slot_offset(key, DAY)


@pytest.mark.slow
def test_the_offset_does_not_depend_on_pythons_hash_seed() -> None:
    code = (
        "from monitor.policy.cadence import first_due_micros;"
        f"print(first_due_micros('{UID}/x', 86_400_000_000, 0))"
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={"PYTHONHASHSEED": seed, "PYTHONPATH": str(ROOT)},
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in ("1", "2")
    }
    assert outputs == {f"{first_due_micros(f'{UID}/x', 86_400_000_000, 0)}\n"}


def test_a_thousand_creators_spread_evenly_over_their_cadence() -> None:
    for every, buckets in ((DAY, 24), (timedelta(hours=12), 12), (timedelta(hours=6), 10)):
        width = every / buckets
        counts = Counter(
            slot_offset(slot_key(uid(i), Variant()), every) // width for i in range(1000)
        )
        assert set(counts) == set(range(buckets))
        mean = 1000 / buckets
        assert max(counts.values()) / mean < 1.35, (every, counts)
        assert min(counts.values()) / mean > 0.65, (every, counts)


def test_first_due_is_the_latest_slot_on_the_grid() -> None:
    key = slot_key(UID, Variant())
    due = first_due(key, DAY, NOW)
    # 10:42:43 UTC is the slot; at 15:00 UTC today's slot has passed, so it is due now
    assert due == datetime(2025, 12, 10, 10, 42, 43, tzinfo=UTC)
    assert first_due(key, DAY, NOW + 3 * DAY) == due + 3 * DAY
    assert first_due(key, DAY, due) == due
    assert first_due(key, DAY, due - timedelta(microseconds=1)) == due - DAY
    assert (due - EPOCH) % DAY == slot_offset(key, DAY)


@settings(max_examples=300, deadline=None)
@given(
    user=st.integers(0, 2**64 - 1),
    every_us=st.integers(1, 30 * 86_400_000_000),
    now_us=st.integers(0, 4_000_000_000_000_000),
)
def test_the_timetable_s_integer_first_due_is_the_grid_s(
    user: int, every_us: int, now_us: int
) -> None:
    """The timetable places 100,000 new series in integer microseconds: the same instant as
    the grid's own datetime arithmetic, for any cadence (sub-second ones too) and any now."""
    key = f"{user:024x}/DAILY_NOTE/PHOTO_TEXT_AND_VIDEO/DAY_30/ALL"
    every = timedelta(microseconds=every_us)
    now = EPOCH + timedelta(microseconds=now_us)
    phase = EPOCH + pinned_offset(key, every)
    grid = phase + ((now - phase) // every) * every
    assert EPOCH + timedelta(microseconds=first_due_micros(key, every_us, now_us)) == grid


@settings(max_examples=200, deadline=None)
@given(
    every_s=st.integers(60, 10 * 86400),
    downtime_s=st.integers(-86400, 100 * 86400),
)
def test_next_due_is_the_one_next_slot_after_now(every_s: int, downtime_s: int) -> None:
    every = timedelta(seconds=every_s)
    previous = first_due("k", every, NOW)
    now = previous + timedelta(seconds=downtime_s)
    due = next_due(previous, every, now)
    assert due > now
    assert due > previous
    assert (due - previous) % every == timedelta(0)  # still on the grid
    assert due - every <= max(now, previous)  # no later slot skipped


def test_after_downtime_the_missed_slots_are_skipped_not_burst() -> None:
    previous = datetime(2025, 12, 1, 10, 42, 43, tzinfo=UTC)
    back = datetime(2025, 12, 10, 15, 0, tzinfo=UTC)
    assert next_due(previous, DAY, back) == datetime(2025, 12, 11, 10, 42, 43, tzinfo=UTC)
    assert next_due(previous, DAY, previous) == previous + DAY


# --- the fetch window -----------------------------------------------------------------------


def test_a_slot_before_fetch_after_moves_to_it_the_same_local_day() -> None:
    nine = time(9, 0)
    early = datetime(2025, 12, 9, 16, 30, tzinfo=UTC)  # 00:30 on the 10th in Shanghai
    assert apply_window(early, nine, SHANGHAI) == datetime(2025, 12, 10, 1, 0, tzinfo=UTC)
    at_nine = datetime(2025, 12, 10, 1, 0, tzinfo=UTC)
    assert apply_window(at_nine, nine, SHANGHAI) == at_nine
    late = datetime(2025, 12, 10, 14, 0, tzinfo=UTC)  # 22:00 in Shanghai
    assert apply_window(late, nine, SHANGHAI) == late
    assert apply_window(early, None, SHANGHAI) == early


def test_early_slots_of_one_day_collapse_into_one_fetch() -> None:
    every = timedelta(hours=4)
    slot = datetime(2025, 12, 9, 16, 0, tzinfo=UTC)  # 00:00 Shanghai; slots 00, 04, 08, 12 …
    runs = []
    for _ in range(4):
        run_at = apply_window(slot, time(9, 0), SHANGHAI)
        runs.append(run_at.astimezone(SHANGHAI).strftime("%H:%M"))
        slot = next_due(slot, every, run_at)
    assert runs == ["09:00", "12:00", "16:00", "20:00"]


# --- due ordering ---------------------------------------------------------------------------


def test_the_most_overdue_go_first_and_ties_break_by_key() -> None:
    entries = [
        DueEntry("c", NOW - HOUR),
        DueEntry("a", NOW - 2 * HOUR),
        DueEntry("b", NOW - HOUR),
        DueEntry("future", NOW + HOUR),
        DueEntry("d", NOW),
    ]
    assert [e.key for e in pick_due(entries, NOW, 3)] == ["a", "b", "c"]
    assert [e.key for e in pick_due(entries, NOW, 10)] == ["a", "b", "c", "d"]
    assert pick_due(entries, NOW, 0) == []
    assert pick_due(reversed(entries), NOW, 3) == pick_due(entries, NOW, 3)


def test_nobody_starves_when_demand_exceeds_the_budget() -> None:
    # 10 hourly series, 6 calls an hour: each gets a fair share and waits a bounded time
    due = {f"s{i}": first_due(f"s{i}", HOUR, NOW) for i in range(10)}
    picks: Counter[str] = Counter()
    longest_wait = timedelta(0)
    now = NOW
    for _ in range(6 * 24):
        for entry in pick_due([DueEntry(k, at) for k, at in due.items()], now, 1):
            picks[entry.key] += 1
            longest_wait = max(longest_wait, now - entry.due_at)
            due[entry.key] = next_due(entry.due_at, HOUR, now)
        now += timedelta(minutes=10)
    assert sum(picks.values()) == 144
    assert set(picks) == set(due)
    assert max(picks.values()) - min(picks.values()) <= 2
    assert longest_wait < 2 * HOUR


# --- the call plan --------------------------------------------------------------------------


def sample_config(**budget: Any) -> dict[str, Any]:
    return {
        "budget": {"calls_per_minute": 30, "burst": 5, "daily_calls": 2000} | budget,
        "defaults": {"every": "24h"},
        "account": {"balance_every": "off"},  # the creators' series alone
        "creators": [
            {"user_id": uid(1), "name": "A", "tags": ["fitness"], "every": "12h"},
            {
                "user_id": uid(2),
                "name": "B",
                "tags": ["beauty"],
                "variants": [{}, {"business": "COOPERATE_NOTE"}],
            },
            {"user_id": uid(3), "name": "C", "every": "6h"},
            {"user_id": uid(4), "name": "D", "tags": ["fitness", "beauty"], "every": "36h"},
        ],
    }


def test_the_call_plan_of_a_config_that_fits() -> None:
    plan = call_plan(parse_config(sample_config()))
    # A 2 + B 2 variants x 1 + C 4 + D 2/3
    assert plan.calls_per_day == 2 + 2 + 4 + 2 / 3
    assert plan.series == 5
    assert plan.rate_capacity == 30 * 1440
    assert plan.daily_calls == 2000
    assert plan.capacity == 2000
    assert plan.fits
    assert plan.advice == ()
    assert plan.by_tag == (("(untagged)", 4.0), ("beauty", 2 + 2 / 3), ("fitness", 2 + 2 / 3))
    assert plan.lines()[0] == (
        "call plan: 8.7 calls/day for 5 series; budget allows 2000 (daily_calls 2000, "
        "calls_per_minute x 1440 = 43200): fits"
    )


def test_the_call_plan_advises_when_the_daily_cap_is_too_small() -> None:
    plan = call_plan(parse_config(sample_config(daily_calls=5)))
    assert not plan.fits
    # 8.67 needed, 5 allowed: the untagged group (4/day) shrinks to 0.33/day = every 72h
    assert plan.advice == (
        "raise budget.daily_calls to 9",
        "or set every = 3d for the untagged creators",
        "or set every = 1d for every creator",
    )
    assert "DOES NOT FIT" in plan.lines()[0]
    assert "  advice: raise budget.daily_calls to 9" in plan.lines()


def test_the_call_plan_advises_on_the_rate_too() -> None:
    config = parse_config(
        {
            "budget": {"calls_per_minute": 1, "burst": 1, "daily_calls": 2000},
            "account": {"balance_every": "off"},
            "creators": [
                {"user_id": uid(1), "tags": ["fast"], "every": "30s"},
                {"user_id": uid(2), "tags": ["fast"], "every": "30s"},
            ],
        }
    )
    plan = call_plan(config)
    assert plan.calls_per_day == 5760
    assert plan.capacity == 1440
    assert plan.advice == (
        "raise budget.daily_calls to 5760 and budget.calls_per_minute to 4",
        "or set every = 2m for tag 'fast'",
        "or set every = 2m for every creator",
    )


def test_a_plan_close_to_the_budget_warns_about_retries() -> None:
    plan = call_plan(parse_config(sample_config(daily_calls=10)))
    assert plan.fits
    assert plan.advice == (
        "the plan uses 87% of the budget; retries, probes and `fetch` draw from it too",
    )


def test_an_empty_config_needs_nothing() -> None:
    plan = call_plan(parse_config({"account": {"balance_every": "off"}}))
    assert plan == Plan(0.0, 0, 30 * 1440, 2000, (), (), needed_in_flight=4, notes_pages=2)
    assert plan.fits
    # the balance is read through the same budget: hourly by default, 24 calls a day
    assert call_plan(parse_config({})).calls_per_day == 24


def test_the_call_plan_counts_each_source_at_its_own_cadence() -> None:
    config = parse_config(
        {
            "defaults": {
                "every": "24h",
                "sources": ["core", "fans", "notes"],
                "every_source": {"notes": "6h"},
            },
            "account": {"balance_every": "2h"},
            "creators": [
                {"user_id": uid(1), "variants": [{}, {"date_type": "DAY_90"}]},
                {"user_id": uid(2), "sources": ["core"], "every": "12h"},
            ],
        }
    )
    plan = call_plan(config)
    # core: 2 variants x 1 + 2; fans: 1 (one series over the widest window); notes: 4; balance 12
    assert plan.by_source == (
        ("core", 4.0, 3),
        ("fans", 1.0, 1),
        ("notes", 4.0, 1),
        ("balance", 12.0, 0),
    )
    assert plan.calls_per_day == 21
    assert plan.series == 5
    assert plan.lines()[1:5] == [
        "  source core: 4.0 calls/day for 3 series",
        "  source fans: 1.0 calls/day for 1 series",
        "  source notes: 4.0 calls/day for 1 series (page 1 per visit; up to 2 pages when a "
        "creator posted more than a page since the last visit)",
        "  source balance: 12.0 calls/day (the account, [account] balance_every)",
    ]


def test_creators_sharing_the_defaults_are_planned_once_and_counted_each() -> None:
    """The plan works a creator's cost out once for all that share its variants, sources and
    cadences (100,000 creators at start-up); each still counts, and one that overrides any
    of them counts as itself, whichever comes first."""
    overrides: list[dict[str, Any]] = [
        {"every": "12h"},
        {"sources": ["core"]},
        {"every_source": {"fans": "6h"}},
        {"variants": [{}, {"date_type": "DAY_90"}]},
        {"date_type": "DAY_90", "tags": ["b"]},
    ]
    creators = [
        {"user_id": uid(n), "tags": ["a"] if n % 2 else [], **overrides[n % 7]}
        if n % 7 < len(overrides)
        else {"user_id": uid(n)}
        for n in range(70)
    ]
    config = parse_config(
        {
            "defaults": {"sources": ["core", "fans", "notes"], "every_source": {"notes": "6h"}},
            "account": {"balance_every": "off"},
            "creators": creators,
        }
    )
    source_calls: dict[str, float] = {}
    source_series: Counter[str] = Counter()
    for creator in config.creators:  # one creator after the other, as the plan was made
        for source, _variant in config.series_of(creator):
            each = DAY / config.every_source_of(creator, source)
            source_calls[source] = source_calls.get(source, 0.0) + each
            source_series[source] += 1
    plan = call_plan(config)
    assert [(name, count) for name, _, count in plan.by_source] == list(source_series.items())
    for name, calls, _ in plan.by_source:
        assert calls == pytest.approx(source_calls[name])
    assert plan.calls_per_day == pytest.approx(sum(source_calls.values()))
    assert plan.series == sum(source_series.values()) == 10 * (3 + 1 + 3 + 4 + 3) + 20 * 3
    assert dict(plan.by_tag).keys() == {"a", "b", UNTAGGED}


def test_the_plan_names_the_concurrency_the_budget_needs() -> None:
    auto = call_plan(
        parse_config({"budget": {"calls_per_minute": 600}, "account": {"balance_every": "off"}})
    )
    assert auto.lines()[1] == (
        "concurrency: 26 calls in flight keep 600 calls/min going at 1 s per call; "
        'max_in_flight = "auto" follows the observed latency (at most 64)'
    )
    assert not any("advice" in line for line in auto.lines())


def test_a_fixed_max_in_flight_below_the_budget_is_advised_against() -> None:
    fixed = call_plan(
        parse_config(
            {
                "budget": {"calls_per_minute": 600},
                "schedule": {"max_in_flight": 4},
                "account": {"balance_every": "off"},
            }
        )
    )
    assert fixed.lines()[1].endswith("; max_in_flight = 4")
    assert fixed.lines()[-1] == (
        "  advice: max_in_flight = 4 lets at most 240 calls/min through at 1 s per call, "
        'under calls_per_minute 600: set schedule.max_in_flight = "auto"'
    )
    roomy = call_plan(parse_config({"schedule": {"max_in_flight": 4}}))  # 30/min needs 4
    assert not any("advice" in line for line in roomy.lines())


def test_format_duration_uses_the_largest_exact_unit() -> None:
    assert [format_duration(timedelta(seconds=s)) for s in (45, 90, 120, 5400, 129600, 172800)] == [
        "45s",
        "90s",
        "2m",
        "90m",
        "36h",
        "2d",
    ]
