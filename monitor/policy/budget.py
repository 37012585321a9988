"""The call budget: one token bucket, a sliding 60 s cap, the daily ledger's arithmetic, upstream
feedback (302 / 303 / account codes) and the retry policy. Pure: time is always passed in as
``now``; no I/O, no clock reads. The store persists ``BudgetState`` (``to_row``/``from_row``).
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo

from monitor.config import Config
from monitor.display import format_duration
from monitor.errors import (
    AccountBlocked,
    BudgetError,
    NoContent,
    QuotaExceeded,
    RateLimited,
    Retryable,
    UpstreamError,
)
from monitor.policy.budget_state import (
    ACCOUNT_CODES,
    ACCOUNT_OK_CODES,
    ACCOUNT_REASONS,
    QUOTA_EXCEEDED,
    RATE_LIMITED,
    SHOWS_MONEY,
    BudgetState,
    token_fingerprint,
)

__all__ = [
    "ACCOUNT_CODES",
    "ACCOUNT_OK_CODES",
    "ACCOUNT_REASONS",
    "DAEMON_WINDOW_MARGIN",
    "QUOTA_EXCEEDED",
    "RATE_LIMITED",
    "SHOWS_MONEY",
    "WINDOW",
    "BudgetPolicy",
    "BudgetState",
    "Feedback",
    "Random",
    "daily_left",
    "day_edges",
    "day_of",
    "feedback_code",
    "is_retryable",
    "next_midnight",
    "quarter_of",
    "retry_delay",
    "token_fingerprint",
]

WINDOW = timedelta(seconds=60)
#: a send exactly 60 s ago still counts (closed window), so waits end one tick after it
_TICK = timedelta(microseconds=1)
#: float slack so that waiting exactly the returned delay always yields a whole token
_EPS = 1e-6
_MAX_RECOVERY_STEPS = 200
#: the daemon's window is this much longer than 60 s: a call is stamped when the budget lets it
#: go, and the database write and the network add milliseconds (under load, more) before the
#: upstream sees it; without the margin a saturated window draws 302s from an exact limit
DAEMON_WINDOW_MARGIN = timedelta(seconds=1)

#: what ``on_result`` accepts: a code, a typed upstream error, or None for success
Feedback = int | UpstreamError | None


class Random(Protocol):
    """The part of ``random.Random`` the retry policy uses (injected for tests)."""

    def random(self) -> float: ...


def day_of(now: datetime, zone: ZoneInfo) -> str:
    """The ledger day of an instant: ``YYYY-MM-DD`` in the budget time zone."""
    return now.astimezone(zone).date().isoformat()


def next_midnight(now: datetime, zone: ZoneInfo) -> datetime:
    """The next local midnight in ``zone`` after ``now``, as an aware UTC datetime."""
    local_day: date = now.astimezone(zone).date() + timedelta(days=1)
    return datetime.combine(local_day, time(0), tzinfo=zone).astimezone(UTC)


def day_edges(now: datetime, zone: ZoneInfo) -> tuple[str, datetime, datetime]:
    """The ledger day of ``now`` in ``zone``: its label and its start and end as UTC instants."""
    local_day = now.astimezone(zone).date()
    start = datetime.combine(local_day, time(0), tzinfo=zone).astimezone(UTC)
    return local_day.isoformat(), start, next_midnight(now, zone)


def quarter_of(now: datetime) -> datetime:
    """The quarter hour (UTC) ``now`` falls in: the ledger's unit, since every time zone's
    midnight falls on a quarter hour of UTC."""
    utc = now.astimezone(UTC)
    return utc.replace(minute=utc.minute - utc.minute % 15, second=0, microsecond=0)


def daily_left(calls_today: int, daily_calls: int) -> int:
    """Calls still allowed today by the ledger (never negative)."""
    return max(0, daily_calls - calls_today)


def retry_delay(attempt: int, base: timedelta, cap: timedelta, rng: Random) -> float:
    """Seconds before retry number ``attempt`` (1 = first retry): capped exponential, full jitter.

    Full jitter (uniform in [0, min(cap, base * 2**(attempt-1))]) keeps retries of many creators
    from arriving together; the budget still gates every retry like any other call.
    """
    if attempt < 1:
        raise ValueError(f"attempt counts from 1, got {attempt}")
    exponent = min(attempt - 1, 62)  # 2**62 times any base is past any sane cap
    ceiling = min(cap.total_seconds(), base.total_seconds() * 2.0**exponent)
    return rng.random() * max(0.0, ceiling)


def is_retryable(error: BaseException) -> bool:
    """True for the families retried with backoff: 301, 500, gateway bodies, transport errors.

    302 is not retried here (the budget slows the whole client and the call waits its turn);
    400, 201, unknown codes, parse errors, quota and account codes are never retried.
    """
    return isinstance(error, Retryable)


def feedback_code(outcome: Feedback) -> int | None:
    """The upstream code an outcome stands for (None: a failure that says nothing new)."""
    if outcome is None:
        return 0
    if isinstance(outcome, int):
        return outcome
    if isinstance(outcome, AccountBlocked):
        return outcome.code if outcome.code in ACCOUNT_CODES else 600
    for family, code in _FAMILY_CODES:
        if isinstance(outcome, family):
            return code
    return outcome.code


_FAMILY_CODES: tuple[tuple[type[UpstreamError], int], ...] = (
    (RateLimited, RATE_LIMITED),
    (QuotaExceeded, QUOTA_EXCEEDED),
    (NoContent, 201),
)


@dataclass(frozen=True, slots=True)
class BudgetPolicy:
    """The budget's rules; every method is pure and returns a new state instead of mutating.

    Two caps hold at once: a token bucket (capacity ``burst``, refill ``calls_per_minute``/60 s,
    both scaled by the rate factor) and a hard cap of ``calls_per_minute`` sends in any closed
    60 s window. The bucket alone could let ``burst`` extra calls through in one window.
    """

    calls_per_minute: int
    burst: int
    daily_calls: int
    zone: ZoneInfo
    probe_every: timedelta = timedelta(minutes=15)
    slow_pause: timedelta = timedelta(seconds=60)
    recover_after: timedelta = timedelta(minutes=5)
    recover_step: float = 1.25
    min_factor: float = 1 / 16
    window_margin: timedelta = timedelta(0)  # see DAEMON_WINDOW_MARGIN
    #: the sliding window ``calls_per_minute`` caps: the upstream's minute. Only process tests
    #: shorten it (tests/support/tuned.py), to see calls on both sides of a window fast
    window: timedelta = WINDOW

    @classmethod
    def from_config(cls, config: Config) -> BudgetPolicy:
        return cls(
            calls_per_minute=config.budget.calls_per_minute,
            burst=config.budget.burst,
            daily_calls=config.budget.daily_calls,
            zone=config.budget.zone,
            probe_every=config.schedule.probe_every,
            window_margin=DAEMON_WINDOW_MARGIN,
        )

    def initial(self, now: datetime) -> BudgetState:
        """The state for a database that has never held one: a full bucket, no pause."""
        return BudgetState(tokens=float(self.burst), refilled_at=now)

    def shifted(self, state: BudgetState, step: timedelta) -> BudgetState:
        """The state after the wall clock was stepped by ``step`` (see ``monitor.ops.wallclock``):
        the bucket, the 60 s window, a 302 slow-down and the next probe keep their elapsed
        time; a 303 pause keeps its midnight, since the quota day is the wall clock's."""
        paused_until = state.paused_until
        if paused_until is not None and state.pause_code != QUOTA_EXCEEDED:
            paused_until += step
        recent = None if state.recent is None else tuple(t + step for t in state.recent)
        return replace(
            state, refilled_at=state.refilled_at + step, recent=recent, paused_until=paused_until
        )

    def rebased(self, state: BudgetState, now: datetime) -> BudgetState:
        """A stored state stamped after ``now`` (the clock was stepped back while the daemon
        was down): moved back so its last refill is ``now``, or the bucket would stay frozen
        until the wall clock caught up. A state from the past is left alone."""
        if state.refilled_at <= now:
            return state
        return self.shifted(state, now - state.refilled_at)

    def factor_at(self, state: BudgetState, now: datetime) -> float:
        """The rate factor in force at ``now``: it grows by ``recover_step`` per quiet interval
        after a 302 or 303 pause ends, back to 1.0; an account pause freezes it."""
        if (
            state.rate_factor >= 1.0
            or state.pause_code not in (RATE_LIMITED, QUOTA_EXCEEDED)
            or state.paused_until is None
            or now < state.paused_until
        ):
            return min(1.0, state.rate_factor)
        steps = min(_MAX_RECOVERY_STEPS, (now - state.paused_until) // self.recover_after)
        return min(1.0, state.rate_factor * self.recover_step**steps)

    def tokens_at(self, state: BudgetState, now: datetime) -> float:
        """Tokens in the bucket at ``now``, refilled since ``refilled_at`` (never before it).

        The refill uses the factor in force at ``refilled_at``: the factor only grows between
        302s, so this never over-counts, and ``acquire_delay`` uses the same rate.
        """
        factor = self.factor_at(state, state.refilled_at)
        elapsed = max(0.0, (now - state.refilled_at).total_seconds())
        refilled = state.tokens + elapsed * self._rate(factor)
        return min(self._capacity(factor), refilled)

    def waits(
        self, state: BudgetState, now: datetime, calls_today: int = 0, *, past_pause: bool = False
    ) -> dict[str, timedelta]:
        """How long each constraint holds the next call back (zero when it does not);
        ``past_pause``: a call the pause lets through (a balance reading during a 601)."""
        return {
            "pause": timedelta(0) if past_pause else self._pause_wait(state, now),
            "daily": self._daily_wait(now, calls_today),
            "bucket": self._bucket_wait(state, now),
            "window": self._window_wait(state, now),
        }

    def acquire_delay(
        self, state: BudgetState, now: datetime, calls_today: int = 0, *, past_pause: bool = False
    ) -> float:
        """Seconds to wait before the next call may be sent (0.0: now).

        ``calls_today`` is the ledger count for ``day_of(now)``. The constraints only loosen
        with time, so waiting exactly this long clears them all (until someone else spends).
        """
        waits = self.waits(state, now, calls_today, past_pause=past_pause)
        return max(waits.values()).total_seconds()

    def blocked_by(
        self, state: BudgetState, now: datetime, calls_today: int = 0, *, past_pause: bool = False
    ) -> str | None:
        """The constraint that holds the next call back longest, or None when it may go now."""
        waits = self.waits(state, now, calls_today, past_pause=past_pause)
        name, wait = max(waits.items(), key=lambda kv: kv[1])
        return name if wait > timedelta(0) else None

    def spend(
        self,
        state: BudgetState,
        now: datetime,
        calls_today: int = 0,
        *,
        token: str | None = None,
        past_pause: bool = False,
    ) -> BudgetState:
        """Record one call sent at ``now``; raises BudgetError when the call may not go yet.

        During an account pause the call is the probe: the next probe moves ``probe_every`` on,
        and the pause is now answered by the probe's token (fingerprint ``token``), so a
        changed token is tried once, not by every caller. A call the pause lets through
        (``past_pause``) counts like any other and leaves the pause and its probe as they are.
        """
        blocker = self.blocked_by(state, now, calls_today, past_pause=past_pause)
        if blocker is not None:
            delay = self.acquire_delay(state, now, calls_today, past_pause=past_pause)
            raise BudgetError(f"budget: next call allowed in {delay:.1f} s ({blocker})")
        settled = self.settle(state, now)
        recent = (*_in_window(settled.recent or (), now, self._span), now)
        paused_until, pause_token = settled.paused_until, settled.pause_token
        if settled.pause_code in ACCOUNT_CODES and not past_pause:
            paused_until = now + self.probe_every
            pause_token = token or pause_token
        return replace(
            settled,
            tokens=settled.tokens - 1.0,
            recent=recent,
            paused_until=paused_until,
            pause_token=pause_token,
        )

    def settle(self, state: BudgetState, now: datetime) -> BudgetState:
        """Bring the state up to ``now``: refill the bucket, fold the recovered rate factor in,
        and clear 302/303 pauses that are over. Equivalent state, just re-based on ``now``."""
        tokens = self.tokens_at(state, now)
        refilled_at = max(now, state.refilled_at)
        recent = self._known_window(state, now)
        base = replace(state, tokens=tokens, refilled_at=refilled_at, recent=recent)
        if state.pause_code not in (RATE_LIMITED, QUOTA_EXCEEDED):
            return base
        if state.paused_until is None or now < state.paused_until:
            return base
        factor = self.factor_at(state, now)
        if factor >= 1.0:
            return replace(
                base, paused_until=None, pause_code=None, pause_reason=None, rate_factor=1.0
            )
        steps = min(_MAX_RECOVERY_STEPS, (now - state.paused_until) // self.recover_after)
        return replace(
            base,
            paused_until=state.paused_until + steps * self.recover_after,
            pause_code=RATE_LIMITED,
            pause_reason=_slow_reason(factor),
            rate_factor=factor,
        )

    def on_result(
        self,
        state: BudgetState,
        outcome: Feedback,
        now: datetime,
        *,
        sent_at: datetime | None = None,
        token: str | None = None,
    ) -> BudgetState:
        """Apply the upstream's feedback on a call sent at ``sent_at`` with the token of
        fingerprint ``token``, answered at ``now``.

        Precedence: an account code pauses everything; a 303 or a 302 is an answer from an
        account that works (a probe answered with one ends the account pause) and pauses to
        midnight, or slows down, from there. An answer to a call sent before the account pause
        began says nothing of it: only a call sent after the pause can end it.
        """
        settled = self.settle(state, now)
        code = feedback_code(outcome)
        if code in ACCOUNT_CODES:
            return self._block(settled, code, now, token)
        if code in SHOWS_MONEY and _sent_before_pause(settled, sent_at):
            return settled
        if code in ACCOUNT_OK_CODES:
            return self._resume(settled)
        if code not in (RATE_LIMITED, QUOTA_EXCEEDED):
            return settled
        # a rate limit or a quota answer says the token and the balance work: the account pause
        # ends, and the limit the answer names applies (else a probe answered 302 was forgotten
        # and every call went out at full rate 2 s later)
        settled = self._resume(settled)
        if code == QUOTA_EXCEEDED:
            return replace(
                settled,
                paused_until=next_midnight(now, self.zone),
                pause_code=QUOTA_EXCEEDED,
                pause_reason="daily quota exceeded (code 303); calls resume at midnight "
                f"{self.zone.key}",
            )
        hint = outcome.retry_after if isinstance(outcome, RateLimited) else None
        return self._slow_down(settled, now, hint)

    def _resume(self, state: BudgetState) -> BudgetState:
        # a billed answer proves the account works again: lift the probe pause at full rate
        if state.pause_code not in ACCOUNT_CODES:
            return state
        return replace(
            state,
            paused_until=None,
            pause_code=None,
            pause_reason=None,
            rate_factor=1.0,
            paused_at=None,
            pause_token=None,
        )

    def _block(
        self, state: BudgetState, code: int, now: datetime, token: str | None = None
    ) -> BudgetState:
        # already blocked: the probe's own send set the next probe time (send-to-send pace),
        # and answers of calls that were in flight must not push it further away
        next_probe = now + self.probe_every
        if state.pause_code in ACCOUNT_CODES and state.paused_until is not None:
            next_probe = state.paused_until
        # a pause keeps the instant it began while its cause stays the same
        paused_at = now
        if state.pause_code == code and state.paused_at is not None:
            paused_at = state.paused_at
        return replace(
            state,
            paused_until=next_probe,
            paused_at=paused_at,
            pause_token=token or state.pause_token,
            pause_code=code,
            pause_reason=f"{ACCOUNT_REASONS[code]} (code {code}); probing every "
            f"{format_duration(self.probe_every)}",
        )

    def _slow_down(self, state: BudgetState, now: datetime, hint: float | None) -> BudgetState:
        # 302s from calls already in flight when the first one arrived say nothing new: the
        # factor is halved once per backoff, not once per response.
        if state.paused_until is not None and now < state.paused_until:
            return state
        factor = max(self.min_factor, self.factor_at(state, now) / 2)
        # never trust the hint: NaN, negative -> none; inf or 1e12 would overflow the datetime
        pause = max(
            self.slow_pause, timedelta(seconds=min(hint, 3600.0) if hint and hint > 0 else 0)
        )
        return replace(
            state,
            tokens=min(state.tokens, self._capacity(factor)),
            paused_until=now + pause,
            pause_code=RATE_LIMITED,
            pause_reason=_slow_reason(factor),
            rate_factor=factor,
        )

    def _known_window(self, state: BudgetState, now: datetime) -> tuple[datetime, ...]:
        if state.recent is not None:
            return _in_window(state.recent, now, self._span)
        # unknown sends (a row without them): as if the window filled up at refilled_at,
        # which holds calls back exactly as _window_wait does for the unknown case
        return _in_window((state.refilled_at,) * self.calls_per_minute, now, self._span)

    @property
    def _span(self) -> timedelta:
        return self.window + self.window_margin

    def _rate(self, factor: float) -> float:
        return self.calls_per_minute / 60.0 * factor

    def _capacity(self, factor: float) -> float:
        return max(1.0, self.burst * factor)

    def _pause_wait(self, state: BudgetState, now: datetime) -> timedelta:
        if state.pause_code is None or state.paused_until is None:
            return timedelta(0)
        return max(timedelta(0), state.paused_until - now)

    def _daily_wait(self, now: datetime, calls_today: int) -> timedelta:
        if calls_today < self.daily_calls:
            return timedelta(0)
        return next_midnight(now, self.zone) - now

    def _bucket_wait(self, state: BudgetState, now: datetime) -> timedelta:
        tokens = self.tokens_at(state, now)
        if tokens >= 1.0 - _EPS:
            return timedelta(0)
        rate = self._rate(self.factor_at(state, state.refilled_at))
        # rounded up to the microsecond: datetimes cannot hold less, and rounding down
        # would leave the caller a hair short of a whole token
        return timedelta(microseconds=math.ceil((1.0 - tokens) / rate * 1e6))

    def _window_wait(self, state: BudgetState, now: datetime) -> timedelta:
        if state.recent is None:
            return max(timedelta(0), state.refilled_at + self._span + _TICK - now)
        recent = _in_window(state.recent, now, self._span)
        if len(recent) < self.calls_per_minute:
            return timedelta(0)
        return max(timedelta(0), recent[-self.calls_per_minute] + self._span + _TICK - now)


def _sent_before_pause(state: BudgetState, sent_at: datetime | None) -> bool:
    """The answered call left before the account pause in ``state`` began, or at the same
    instant (its answer may predate the one that paused: only a later call tells)."""
    return (
        state.pause_code in ACCOUNT_CODES
        and state.paused_at is not None
        and sent_at is not None
        and sent_at <= state.paused_at
    )


def _in_window(
    times: tuple[datetime, ...], now: datetime, span: timedelta = WINDOW
) -> tuple[datetime, ...]:
    # sorted because a wall clock can step back; the window math needs ascending times. Sorted
    # first (already ascending but for a step back: one C pass), then cut: a busy minute holds
    # thousands of sends and this runs on every spend decision
    ordered = sorted(times)
    return tuple(ordered[bisect.bisect_left(ordered, now - span) :])


def _slow_reason(factor: float) -> str:
    return f"rate limited (code 302); running at {factor:.0%} of calls_per_minute"
