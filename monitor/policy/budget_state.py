"""The persisted budget state and the upstream codes it records: ``BudgetState`` and its
``budget_state`` row form (``to_row``/``from_row``). Pure; the rules that move it are
monitor/policy/budget.py's."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from monitor.ops.wallclock import micros
from monitor.ops.wallclock import moment as epoch_moment

RATE_LIMITED = 302
QUOTA_EXCEEDED = 303
#: the account pause a balance reading that shows money ends (policy/spend.py)
INSUFFICIENT_BALANCE = 601
ACCOUNT_CODES: frozenset[int] = frozenset({100, 600, 601, 602})
#: codes whose call reached a working account (billed): they end a probe pause
ACCOUNT_OK_CODES: frozenset[int] = frozenset({0, 201})
#: answers that show the account works and has money: they end an account pause (a 302 or a 303
#: is checked after the token and the balance, so it shows them too)
SHOWS_MONEY: frozenset[int] = frozenset({*ACCOUNT_OK_CODES, RATE_LIMITED, QUOTA_EXCEEDED})
#: key of the token fingerprint: a stored fingerprint cannot be looked up in any other table
_PRINT_KEY = b"creator-monitor/pause-token/v1"
ACCOUNT_REASONS: dict[int, str] = {
    100: "invalid or inactive API token",
    600: "permission denied for this API",
    601: "insufficient account balance",
    602: "this token's spending cap is reached",
}


def token_fingerprint(token: str) -> str:
    """16 hex digits that tell one API token from another (a keyed BLAKE2b): stored with an
    account pause so a changed token ends it, while the token itself is never stored."""
    return hashlib.blake2b(token.encode(), key=_PRINT_KEY, digest_size=8).hexdigest()


@dataclass(frozen=True, slots=True)
class BudgetState:
    """The persisted budget: maps one-to-one to the ``budget_state`` row (see ``to_row``).

    ``paused_until`` means: for 302 and 303, when calls may resume (and, while ``rate_factor``
    is below 1, the anchor the cautious return counts from); for account codes, when the next
    probe may go. ``recent`` holds the send times of the last 60 s; None means unknown (a row
    without them), which is read as "the window was full at ``refilled_at``". ``paused_at`` is
    when the account pause began (an answer to a call sent before it never ends it);
    ``pause_token`` the fingerprint of the token the pause was answered to.
    """

    tokens: float
    refilled_at: datetime
    paused_until: datetime | None = None
    pause_code: int | None = None
    pause_reason: str | None = None
    rate_factor: float = 1.0
    recent: tuple[datetime, ...] | None = ()
    paused_at: datetime | None = None
    pause_token: str | None = None

    @property
    def paused(self) -> bool:
        """A hard pause is recorded (quota or account); 302 is a slow-down, not a pause."""
        return self.pause_code == QUOTA_EXCEEDED or self.pause_code in ACCOUNT_CODES

    def is_paused(self, now: datetime) -> bool:
        """No ordinary call may go at ``now`` because of a pause (probes aside)."""
        if self.pause_code in ACCOUNT_CODES:
            return True
        return self.paused_until is not None and now < self.paused_until

    def token_changed(self, fingerprint: str | None) -> bool:
        """An account pause answered to another token than ``fingerprint``: the new token
        has not been tried yet (a pause from before fingerprints were kept counts as tried)."""
        return (
            self.pause_code in ACCOUNT_CODES
            and fingerprint is not None
            and self.pause_token is not None
            and self.pause_token != fingerprint
        )

    def is_probe_due(self, now: datetime) -> bool:
        """An account pause is on and its single probe call may be sent now."""
        return (
            self.pause_code in ACCOUNT_CODES
            and self.paused_until is not None
            and now >= self.paused_until
        )

    def to_row(self) -> dict[str, object]:
        """The ``budget_state`` columns; datetimes are aware UTC, ``recent_sends`` is text."""
        return {
            "tokens": self.tokens,
            "refilled_at": self.refilled_at.astimezone(UTC),
            "paused_until": None
            if self.paused_until is None
            else self.paused_until.astimezone(UTC),
            "pause_code": self.pause_code,
            "pause_reason": self.pause_reason,
            "rate_factor": self.rate_factor,
            "recent_sends": None if self.recent is None else _encode_times(self.recent),
            "paused_at": None if self.paused_at is None else self.paused_at.astimezone(UTC),
            "pause_token": self.pause_token,
        }

    @classmethod
    def from_row(cls, row: Mapping[str, object] | object) -> BudgetState:
        """Rebuild the state from its row (a mapping or an object with those attributes);
        naive datetimes (SQLite) are read as UTC.

        Nothing is reset: tokens refill from ``refilled_at`` only, pauses and the rate factor
        carry over, and a row without ``recent_sends`` holds sends back conservatively.
        """
        paused_until = _column(row, "paused_until")
        code = _column(row, "pause_code")
        reason = _column(row, "pause_reason")
        recent = _column(row, "recent_sends")
        factor = _column(row, "rate_factor")
        paused_at = _column(row, "paused_at")
        token = _column(row, "pause_token")
        return cls(
            tokens=float(_number(_column(row, "tokens"))),
            refilled_at=_utc(_column(row, "refilled_at")),
            paused_until=None if paused_until is None else _utc(paused_until),
            pause_code=None if code is None else int(_number(code)),
            pause_reason=None if reason is None else str(reason),
            rate_factor=1.0 if factor is None else float(_number(factor)),
            recent=None if recent is None else _decode_times(str(recent)),
            paused_at=None if paused_at is None else _utc(paused_at),
            pause_token=None if token is None else str(token),
        )


def _encode_times(times: tuple[datetime, ...]) -> str:
    # integer microseconds since the epoch: exact, compact and free of time-zone questions.
    # Each save writes the window again (thousands of sends in a busy minute) and the next
    # decision reads it back: the text of each time, and the last texts, are remembered
    if len(_ENCODED) > _ENCODED_MAX:
        _ENCODED.clear()
    parts = _slid(times)
    if parts is None:
        parts = [_part(moment) for moment in times]
    if parts:  # an empty window (a fresh bucket's) is no window to slide on from
        _LAST_WINDOW[0] = (times, parts)
    text = ",".join(parts)
    _remember(text, times)
    return text


def _part(moment: datetime) -> str:
    part = _ENCODED.get(moment)
    if part is None:
        part = _ENCODED[moment] = str(micros(moment))
    return part


def _slid(times: tuple[datetime, ...]) -> list[str] | None:
    """The texts of ``times`` when they are the last window encoded with its oldest sends gone
    and new ones added (each spend slides it so): the kept texts are reused whole, the new
    ones made; None when ``times`` is another window."""
    last, parts = _LAST_WINDOW[0]
    if not times or not last:
        return None
    try:
        gone = last.index(times[0])
    except ValueError:
        return None
    kept = len(last) - gone
    if kept > len(times) or last[gone:] != times[:kept]:
        return None
    return parts[gone:] + [_part(moment) for moment in times[kept:]]


def _decode_times(text: str) -> tuple[datetime, ...]:
    known = _DECODED.get(text)
    if known is not None:
        return known
    times = tuple(epoch_moment(int(part)) for part in text.split(",") if part.strip())
    _remember(text, times)
    return times


def _remember(text: str, times: tuple[datetime, ...]) -> None:
    if len(_DECODED) >= _DECODED_MAX:
        del _DECODED[next(iter(_DECODED))]  # the oldest
    _DECODED[text] = times


_ENCODED: dict[datetime, str] = {}
_ENCODED_MAX = 50_000
_DECODED: dict[str, tuple[datetime, ...]] = {}
_DECODED_MAX = 4
#: the last window encoded and the text of each of its times (``_slid``)
_LAST_WINDOW: list[tuple[tuple[datetime, ...], list[str]]] = [((), [])]


def _column(row: Mapping[str, object] | object, name: str) -> object:
    if isinstance(row, Mapping):
        return row.get(name)
    return getattr(row, name, None)


def _utc(value: object) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if not isinstance(value, datetime):
        raise TypeError(f"expected a datetime, got {type(value).__name__}")
    if value.tzinfo is None:  # SQLite hands stored UTC back naive
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _number(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise TypeError(f"expected a number, got {type(value).__name__}")
    return float(value)
