"""The simulated upstream's state and decisions, without HTTP: knobs, limits, quota, balance,
forced outcomes, faults, envelopes and the call log (served by monitor/upstream/simulator.py).
Must never log, store or return the token it receives. Rules that stand in for the real platform:

* a ``userId`` starting with ``000000`` returns code 400 (invalid parameter), one starting with
  ``ffffff`` returns 201 (no content, billed); any other id has a deterministic series
  (``monitor.upstream.series``): 20 % of creators have no price, 20 % have missing days;
* checks run in this order: missing token/userId → HTTP 400 gateway body; token not accepted →
  100; balance 0 → 601; token cap → 602; ``calls_per_minute`` over a sliding 60 s window of the
  simulator clock → 302 (with ``Retry-After``); ``daily_quota`` per Asia/Shanghai day → 303; an
  invalid enum → 400; a forced outcome; the id rules above; a random fault; success;
* calls that pass the limits count towards them; billed (code 0 or 201) calls spend
  ``call_price`` of the balance, whichever endpoint they reach; a call the balance cannot pay
  for returns 601.

The follower-history and note-list endpoints follow the same rules (an id starting with
``eeeeee`` has no data there: an empty list). The balance endpoint needs only a token, is never
refused for the balance or the token cap (an account can always read what it has left), is not
billed unless ``balance_billed`` (and then only when the balance can pay), and answers HTTP 404
with a gateway body while ``balance_endpoint`` is off.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from types import MappingProxyType
from typing import Any
from zoneinfo import ZoneInfo

from monitor.model import Advertise, Business, DateType, NoteType, Variant
from monitor.upstream import series as sim_series
from monitor.upstream import sim_sources
from monitor.upstream.sim_log import CallRecord, Money, SimCounters, jsonable, max_in_window, money

CORE_DATA_PATH = "/api/xiaohongshu-pgy/api/pgy/kol/data/core_data/v1"
FANS_PATH = "/api/xiaohongshu-pgy/api/solar/kol/data/userId/fans_overall_new_history/v1"
NOTES_PATH = "/api/xiaohongshu-pgy/api/solar/kol/dataV2/notesDetail/v1"
BALANCE_PATH = "/user/get-balance"
#: endpoint name -> path
ENDPOINTS = {
    "core": CORE_DATA_PATH,
    "fans": FANS_PATH,
    "notes": NOTES_PATH,
    "balance": BALANCE_PATH,
}
#: what the balance endpoint shows while the balance knob is None (unlimited), less the spend
UNLIMITED_SHOWN = Decimal(1_000_000)
SHANGHAI = ZoneInfo("Asia/Shanghai")
FAULT_KINDS = (
    "301",
    "500",
    "gateway_400",
    "html_502",
    "truncated",
    "hang",
    "empty",
    "wrong_type",
    "huge",
    "reset",
    "trickle",
)
MESSAGES = {
    100: "TOKEN INVALID OR INACTIVE",
    201: "NO CONTENT",
    301: "FAILED, RETRY",
    302: "RATE LIMIT EXCEEDED",
    303: "DAILY QUOTA EXCEEDED",
    400: "INVALID PARAMETER",
    500: "SERVER ERROR",
    600: "PERMISSION DENIED",
    601: "INSUFFICIENT ACCOUNT BALANCE",
    602: "TOKEN SPENDING CAP REACHED",
}
HTML_502 = (
    "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    "<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n"
    "</body>\r\n</html>\r\n"
)


@dataclass(frozen=True)
class SimKnobs:
    """How the simulated upstream behaves; every knob is optional (None = unlimited / off).

    ``faults`` maps a kind from ``FAULT_KINDS`` to the share of calls it hits (sum ≤ 1).
    ``tokens`` None accepts any non-empty token. ``balance`` is money (CNY) that each billed
    call takes ``call_price`` from (the default price 1 makes it the billed calls left); a
    non-integer is read as a Decimal.
    """

    seed: int = 0
    latency_ms: float = 0.0
    latency_p50_ms: float | None = None  # with p99: lognormal latency instead of the fixed one
    latency_p99_ms: float | None = None
    calls_per_minute: int | None = None
    daily_quota: int | None = None
    balance: Money | None = None
    call_price: Money = 1  # what every billed call of any endpoint takes from the balance
    balance_billed: bool = False  # whether reading the balance is itself a billed call
    balance_endpoint: bool = True  # off: the balance path answers HTTP 404 (a gateway body)
    tokens: frozenset[str] | None = field(default=None, repr=False)
    token_cap: int | None = None
    faults: Mapping[str, float] = field(default_factory=dict)
    hang_s: float = 75.0  # longer than the client's default 60 s timeout
    huge_bytes: int = 5_000_000
    trickle_bytes: int = 512  # "trickle": a valid body sent this many bytes at a time …
    trickle_pause_s: float = 0.01  # … with this pause between writes (a slow, alive peer)

    def __post_init__(self) -> None:
        unknown = set(self.faults) - set(FAULT_KINDS)
        if unknown:
            raise ValueError(f"unknown fault kinds {sorted(unknown)}; known: {FAULT_KINDS}")
        if any(rate < 0 for rate in self.faults.values()) or sum(self.faults.values()) > 1:
            raise ValueError("fault rates must be ≥ 0 and sum to at most 1")
        if (self.latency_p50_ms is None) != (self.latency_p99_ms is None):
            raise ValueError("give latency_p50_ms and latency_p99_ms together")
        object.__setattr__(self, "faults", MappingProxyType(dict(self.faults)))
        object.__setattr__(self, "balance", money(self.balance))
        object.__setattr__(self, "call_price", money(self.call_price))
        if self.call_price is None or self.call_price < 0:
            raise ValueError("call_price must be a number ≥ 0")
        if self.tokens is not None:
            object.__setattr__(self, "tokens", frozenset(self.tokens))

    def public(self) -> dict[str, Any]:
        """The knobs as JSON-ready data, with the accepted tokens reduced to a count."""
        data = {f.name: jsonable(getattr(self, f.name)) for f in fields(self) if f.name != "tokens"}
        data["faults"] = dict(self.faults)
        data["accepted_tokens"] = None if self.tokens is None else len(self.tokens)
        return data


@dataclass(frozen=True, slots=True)
class Reply:
    """The decided answer to one call, before latency and wire faults are applied."""

    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    code: int | None = None
    billed: bool = False
    fault: str | None = None  # wire behaviour: "hang", "huge", "reset", or a body fault
    headers: Mapping[str, str] = field(default_factory=dict)
    data: Any = None  # the success ``data`` object, for faults that wrap it


@dataclass
class Forced:
    outcome: int | str
    remaining: int | None
    endpoint: str | None = None  # None: every endpoint of the creator


@dataclass(frozen=True)
class Ask:
    """One accepted query of one endpoint: how to answer it, and how the ``wrong_type`` fault
    spoils its ``data``."""

    endpoint: str
    label: str | None
    success: Callable[[], Reply]
    spoil: Callable[[Any], None]


def utcnow() -> datetime:
    return datetime.now(UTC)


class Upstream:
    """The simulated platform's state and decisions; synchronous, so no call interleaves."""

    def __init__(self, knobs: SimKnobs, clock: Callable[[], datetime]) -> None:
        self.clock = clock
        self.scripts: dict[str, list[sim_series.Script]] = {}
        self.published: dict[str, list[sim_sources.SimNote]] = {}  # notes a script published
        self.spent: Money = 0
        self.forced: dict[str, Forced] = {}
        self.log: list[CallRecord] = []
        self._admitted: deque[datetime] = deque()
        self._quota: tuple[date | None, int] = (None, 0)
        self._billed_by_token: Counter[str] = Counter()
        self.knobs = knobs
        self.balance = knobs.balance
        self._seed(knobs.seed)

    def set_knobs(self, knobs: SimKnobs) -> None:
        if knobs.seed != self.knobs.seed:
            self._seed(knobs.seed)  # other knob changes keep the sequence of draws going
        self.knobs = knobs

    def _seed(self, seed: int) -> None:
        # seeded, reproducible draws for a test double; nothing here needs to be unguessable
        self.fault_rng = random.Random(f"faults/{seed}")  # noqa: S311
        self.latency_rng = random.Random(f"latency/{seed}")  # noqa: S311
        self.shape_rng = random.Random(f"shape/{seed}")  # noqa: S311

    def today(self) -> date:
        return self.clock().astimezone(SHANGHAI).date()

    def decide(
        self, query: Mapping[str, str], path: str, endpoint: str = "core"
    ) -> tuple[Reply, str | None, str | None]:
        """The reply to one call of ``endpoint``, with the userId and label it concerned."""
        token, user_id = query.get("token", ""), query.get("userId", "")
        if endpoint == "balance" and not self.knobs.balance_endpoint:
            return self._gateway(path, 404, "Not Found"), None, None
        if not token or (not user_id and endpoint != "balance"):
            return self._gateway_400(path), user_id or None, None
        refusal = self._admit(token, account=endpoint != "balance")
        if refusal is not None:
            return refusal, user_id or None, None
        try:
            ask = self._ask(endpoint, user_id, query)
        except ValueError:
            return self.envelope(400), user_id or None, None
        reply = self._outcome(user_id, ask)
        if reply.billed:
            self._bill(token)
        return reply, user_id or None, ask.label

    def _ask(self, endpoint: str, user_id: str, query: Mapping[str, str]) -> Ask:
        """The endpoint's reading of ``query``; ValueError when a parameter is invalid."""
        if endpoint == "core":
            variant = _variant(query)
            return Ask(
                endpoint,
                variant.label,
                lambda: self.success(user_id, variant),
                sim_sources.spoil_core,
            )
        if endpoint == "fans":
            fans = sim_sources.read_fans_query(query)
            scripts = self.scripts.get(user_id, ())
            empty = user_id.startswith("eeeeee")
            return Ask(
                endpoint,
                fans.label,
                lambda: self._source_success(
                    sim_sources.empty_fans()
                    if empty
                    else sim_sources.fans_data(user_id, fans, self.today(), scripts)
                ),
                sim_sources.spoil_fans,
            )
        if endpoint == "notes":
            notes = sim_sources.read_notes_query(query)
            extra = self.published.get(user_id, ())
            empty = user_id.startswith("eeeeee")
            return Ask(
                endpoint,
                notes.label,
                lambda: self._source_success(
                    sim_sources.empty_notes()
                    if empty
                    else sim_sources.notes_data(user_id, notes, self.clock(), extra)
                ),
                sim_sources.spoil_notes,
            )
        return Ask(endpoint, None, self._balance_success, sim_sources.spoil_balance)

    def _admit(self, token: str, *, account: bool = True) -> Reply | None:
        """Account and limit checks, in the documented order; None lets the call through.
        ``account`` False (the balance endpoint) skips the balance and token-cap checks."""
        knobs, token_key = self.knobs, _token_key(token)
        if knobs.tokens is not None and token not in knobs.tokens:
            return self.envelope(100)
        if account and self.balance is not None and not self._can_pay():
            return self.envelope(601)
        if (
            account
            and knobs.token_cap is not None
            and self._billed_by_token[token_key] >= knobs.token_cap
        ):
            return self.envelope(602)
        now = self.clock()
        if knobs.calls_per_minute is not None:
            while self._admitted and now - self._admitted[0] >= timedelta(minutes=1):
                self._admitted.popleft()
            if len(self._admitted) >= knobs.calls_per_minute:
                wait = timedelta(minutes=1) - (now - self._admitted[0])
                retry_after = str(max(1, math.ceil(wait.total_seconds())))
                return replace(self.envelope(302), headers={"Retry-After": retry_after})
            self._admitted.append(now)
        day = now.astimezone(SHANGHAI).date()
        used = self._quota[1] if self._quota[0] == day else 0
        if knobs.daily_quota is not None and used >= knobs.daily_quota:
            return self.envelope(303)
        self._quota = (day, used + 1)
        return None

    def _outcome(self, user_id: str, ask: Ask) -> Reply:
        forced = self.forced.get(user_id)
        if forced is not None and forced.endpoint in (None, ask.endpoint):
            if forced.remaining is not None:
                forced.remaining -= 1
                if forced.remaining <= 0:
                    del self.forced[user_id]
            return self._apply(forced.outcome, ask)
        if user_id.startswith("000000"):
            return self.envelope(400)
        if user_id.startswith("ffffff"):
            return self.envelope(201)
        draw, edge = self.fault_rng.random(), 0.0
        for kind in FAULT_KINDS:
            edge += self.knobs.faults.get(kind, 0.0)
            if draw < edge:
                return self._apply(kind, ask)
        return ask.success()

    def _apply(self, outcome: int | str, ask: Ask) -> Reply:
        """A code (an int or its string, e.g. "301") or a fault kind as a reply."""
        if isinstance(outcome, int) or outcome.isdigit():
            code = int(outcome)
            return ask.success() if code == 0 else self.envelope(code)
        bodyless = {
            "gateway_400": lambda: self._gateway_400(ENDPOINTS[ask.endpoint]),
            "html_502": lambda: Reply(502, HTML_502.encode(), "text/html", fault="html_502"),
            "empty": lambda: Reply(200, b"", fault="empty"),
            "reset": lambda: Reply(200, b"", fault="reset"),
        }
        if outcome in bodyless:
            return bodyless[outcome]()
        reply = ask.success()
        if outcome == "truncated":
            return replace(reply, body=reply.body[: len(reply.body) // 2], fault=outcome)
        if outcome == "wrong_type":
            data = reply.data
            ask.spoil(data)
            return replace(reply, body=self._dump(0, data), fault=outcome)
        return replace(reply, fault=outcome)  # hang, huge, trickle: the wire does the rest

    def success(self, user_id: str, variant: Variant) -> Reply:
        points = sim_series.daily_points(
            user_id, variant, self.today(), self.scripts.get(user_id, ())
        )
        data = {
            "sumData": self._shuffled(dict(points[-1])),
            "dailyData": [self._shuffled(p) for p in points],
        }
        return Reply(body=self._dump(0, data), code=0, billed=True, data=data)

    def _source_success(self, data: dict[str, Any]) -> Reply:
        if isinstance(data.get("list"), list):
            data["list"] = [self._shuffled(item) for item in data["list"]]
        data = self._shuffled(data)
        return Reply(body=self._dump(0, data), code=0, billed=True, data=data)

    def _balance_success(self) -> Reply:
        shown = self.balance if self.balance is not None else UNLIMITED_SHOWN - self.spent
        data = self._shuffled({"balance": f"{Decimal(shown):.4f}", "currency": "CNY"})
        body = self._dump(0, data)
        # a billed reading the balance cannot pay for is still answered, free: it never goes
        # below zero, and an account can always see that it is empty
        billed = self.knobs.balance_billed and (self.balance is None or self._can_pay())
        return Reply(body=body, code=0, billed=billed, data=data)

    def _can_pay(self) -> bool:
        price = self.knobs.call_price
        return self.balance is not None and self.balance > 0 and self.balance >= price

    def envelope(self, code: int) -> Reply:
        body = self._dump(code, None, MESSAGES.get(code, "UNKNOWN ERROR"))
        return Reply(body=body, code=code, billed=code == 201)

    def _dump(self, code: int, data: Any, message: str | None = None) -> bytes:
        envelope = {
            "code": code,
            "data": data,
            "message": message,
            "recordTime": self._record_time() if code == 0 else None,
        }
        return json.dumps(self._shuffled(envelope), ensure_ascii=False).encode()

    def _gateway_400(self, path: str) -> Reply:
        return self._gateway(path, 400, "Bad Request")

    def _gateway(self, path: str, status: int, error: str) -> Reply:
        stamp = self.clock().astimezone(SHANGHAI).isoformat(timespec="milliseconds")
        body = {"timestamp": stamp, "status": status, "error": error, "path": path}
        return Reply(status, json.dumps(body).encode(), fault=f"gateway_{status}")

    def _record_time(self) -> str:
        local = self.clock().astimezone(SHANGHAI)
        nanos = self.shape_rng.randrange(1000)  # the upstream prints nanosecond digits
        return f"{local:%Y-%m-%dT%H:%M:%S}.{local.microsecond:06d}{nanos:03d}"

    def _shuffled(self, mapping: dict[str, Any]) -> dict[str, Any]:
        keys = list(mapping)
        self.shape_rng.shuffle(keys)  # the real upstream does not keep key order
        return {key: mapping[key] for key in keys}

    def _bill(self, token: str) -> None:
        price = self.knobs.call_price
        if self.balance is not None:
            self.balance -= price
        self.spent += price
        self._billed_by_token[_token_key(token)] += 1

    def latency(self) -> float:
        """Seconds to wait before answering: fixed, or drawn from a seeded lognormal."""
        knobs = self.knobs
        if knobs.latency_p50_ms is not None and knobs.latency_p99_ms is not None:
            if knobs.latency_p50_ms <= 0:  # ``simulate --latency 0``: an instant upstream
                return 0.0
            mu = math.log(knobs.latency_p50_ms)
            sigma = max(0.0, math.log(knobs.latency_p99_ms) - mu) / 2.326  # z of the 99th pct
            return self.latency_rng.lognormvariate(mu, sigma) / 1000
        return knobs.latency_ms / 1000

    def counters(self) -> SimCounters:
        records = tuple(self.log)
        by_code = Counter(str(r.code) if r.code is not None else (r.fault or "?") for r in records)
        by_series = Counter(
            (r.user_id, r.variant)
            for r in records
            if r.user_id and r.variant and r.endpoint == "core"
        )
        return SimCounters(
            calls=len(records),
            billed=sum(r.billed for r in records),
            by_code=dict(by_code),
            by_series={(u, v): n for (u, v), n in by_series.items() if u and v},
            max_per_minute=max_in_window([r.monotonic for r in records], timedelta(minutes=1)),
            balance=self.balance,
            log=records,
            by_endpoint=dict(Counter(r.endpoint for r in records)),
        )


def _variant(query: Mapping[str, str]) -> Variant:
    """The variant a query names (defaults as the upstream documents); ValueError if invalid."""
    return Variant(
        Business(query.get("business", Business.DAILY_NOTE)),
        NoteType(query.get("noteType", NoteType.PHOTO_TEXT_AND_VIDEO)),
        DateType(query.get("dateType", DateType.DAY_30)),
        Advertise(query.get("advertiseSwitch", Advertise.ALL)),
    )


def _token_key(token: str) -> str:
    """Tokens are counted by digest so the simulator never keeps one in a readable form."""
    return hashlib.sha256(token.encode()).hexdigest()
