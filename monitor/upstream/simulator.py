"""The simulated Just One API core_data endpoint: real HTTP on 127.0.0.1 for demo, tests, drills.

Owns the upstream's behaviour (envelopes, codes, limits, faults, scripts) and its counters; must
never log, store or return the token it receives. Rules that stand in for the real platform:

* a ``userId`` starting with ``000000`` returns code 400 (invalid parameter), one starting with
  ``ffffff`` returns 201 (no content, billed); any other id has a deterministic series
  (``monitor.upstream.series``): 20 % of creators have no price, 20 % have missing days;
* checks run in this order: missing token/userId → HTTP 400 gateway body; token not accepted →
  100; balance 0 → 601; token cap → 602; ``calls_per_minute`` over a sliding 60 s window of the
  simulator clock → 302 (with ``Retry-After``); ``daily_quota`` per Asia/Shanghai day → 303; an
  invalid enum → 400; a forced outcome; the id rules above; a random fault; success;
* calls that pass the limits count towards them; billed (code 0 or 201) calls spend balance.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import math
import random
import signal
import socket
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import UTC, date, datetime, timedelta
from types import MappingProxyType, TracebackType
from typing import Any, Self
from zoneinfo import ZoneInfo

from aiohttp import web

from monitor.model import Advertise, Business, DateType, NoteType, Variant
from monitor.upstream import series as sim_series

log = logging.getLogger(__name__)

CORE_DATA_PATH = "/api/xiaohongshu-pgy/api/pgy/kol/data/core_data/v1"
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
    ``tokens`` None accepts any non-empty token.
    """

    seed: int = 0
    latency_ms: float = 0.0
    latency_p50_ms: float | None = None  # with p99: lognormal latency instead of the fixed one
    latency_p99_ms: float | None = None
    calls_per_minute: int | None = None
    daily_quota: int | None = None
    balance: int | None = None
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
        if self.tokens is not None:
            object.__setattr__(self, "tokens", frozenset(self.tokens))

    def public(self) -> dict[str, Any]:
        """The knobs as JSON-ready data, with the accepted tokens reduced to a count."""
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "tokens"}
        data["faults"] = dict(self.faults)
        data["accepted_tokens"] = None if self.tokens is None else len(self.tokens)
        return data


@dataclass(frozen=True, slots=True)
class CallRecord:
    """One call as the simulator saw it (never the token)."""

    at: datetime  # the simulator clock
    monotonic: float  # wall time, for "how many calls in any 60 s"
    user_id: str | None
    variant: str | None
    code: int | None
    http_status: int | None
    billed: bool
    fault: str | None = None


@dataclass(frozen=True)
class SimCounters:
    """What the simulator received; ``max_per_minute`` is over the call log by wall time."""

    calls: int
    billed: int
    by_code: Mapping[str, int]  # "0", "301" … or a fault without envelope ("html_502", "reset")
    by_series: Mapping[tuple[str, str], int]  # (userId, variant label) -> calls
    max_per_minute: int
    balance: int | None
    log: tuple[CallRecord, ...]

    def max_in_window(self, window: timedelta, *, by_clock: bool = False) -> int:
        """The most calls in any ``window``, by wall time or by the simulator clock."""
        if by_clock:
            return _max_in_window([r.at.timestamp() for r in self.log], window)
        return _max_in_window([r.monotonic for r in self.log], window)

    def to_json(self) -> dict[str, Any]:
        return {
            "calls": self.calls,
            "billed": self.billed,
            "by_code": dict(self.by_code),
            "by_series": [
                {"user_id": user_id, "variant": label, "calls": calls}
                for (user_id, label), calls in sorted(self.by_series.items())
            ],
            "max_per_minute": self.max_per_minute,
            "balance": self.balance,
            "log": [{**asdict(r), "at": r.at.isoformat()} for r in self.log],
        }


def _max_in_window(times: list[float], window: timedelta) -> int:
    times = sorted(times)
    best, start, span = 0, 0, window.total_seconds()
    for end, moment in enumerate(times):
        while moment - times[start] >= span:
            start += 1
        best = max(best, end - start + 1)
    return best


@dataclass(frozen=True, slots=True)
class _Reply:
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
class _Forced:
    outcome: int | str
    remaining: int | None


def _utcnow() -> datetime:
    return datetime.now(UTC)


class _Upstream:
    """The simulated platform's state and decisions; synchronous, so no call interleaves."""

    def __init__(self, knobs: SimKnobs, clock: Callable[[], datetime]) -> None:
        self.clock = clock
        self.scripts: dict[str, list[sim_series.Script]] = {}
        self.forced: dict[str, _Forced] = {}
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

    def decide(self, query: Mapping[str, str], path: str) -> tuple[_Reply, str | None, str | None]:
        """The reply to one call, with the userId and variant label it concerned."""
        token, user_id = query.get("token", ""), query.get("userId", "")
        if not token or not user_id:
            return self._gateway_400(path), user_id or None, None
        refusal = self._admit(token)
        if refusal is not None:
            return refusal, user_id, None
        try:
            variant = _variant(query)
        except ValueError:
            return self.envelope(400), user_id, None
        reply = self._outcome(user_id, variant)
        if reply.billed:
            self._bill(token)
        return reply, user_id, variant.label

    def _admit(self, token: str) -> _Reply | None:
        """Account and limit checks, in the documented order; None lets the call through."""
        knobs, token_key = self.knobs, _token_key(token)
        if knobs.tokens is not None and token not in knobs.tokens:
            return self.envelope(100)
        if self.balance is not None and self.balance <= 0:
            return self.envelope(601)
        if knobs.token_cap is not None and self._billed_by_token[token_key] >= knobs.token_cap:
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

    def _outcome(self, user_id: str, variant: Variant) -> _Reply:
        forced = self.forced.get(user_id)
        if forced is not None:
            if forced.remaining is not None:
                forced.remaining -= 1
                if forced.remaining <= 0:
                    del self.forced[user_id]
            return self._apply(forced.outcome, user_id, variant)
        if user_id.startswith("000000"):
            return self.envelope(400)
        if user_id.startswith("ffffff"):
            return self.envelope(201)
        draw, edge = self.fault_rng.random(), 0.0
        for kind in FAULT_KINDS:
            edge += self.knobs.faults.get(kind, 0.0)
            if draw < edge:
                return self._apply(kind, user_id, variant)
        return self.success(user_id, variant)

    def _apply(self, outcome: int | str, user_id: str, variant: Variant) -> _Reply:
        """A code (an int or its string, e.g. "301") or a fault kind as a reply."""
        if isinstance(outcome, int) or outcome.isdigit():
            code = int(outcome)
            return self.success(user_id, variant) if code == 0 else self.envelope(code)
        bodyless = {
            "gateway_400": lambda: self._gateway_400(CORE_DATA_PATH),
            "html_502": lambda: _Reply(502, HTML_502.encode(), "text/html", fault="html_502"),
            "empty": lambda: _Reply(200, b"", fault="empty"),
            "reset": lambda: _Reply(200, b"", fault="reset"),
        }
        if outcome in bodyless:
            return bodyless[outcome]()
        reply = self.success(user_id, variant)
        if outcome == "truncated":
            return replace(reply, body=reply.body[: len(reply.body) // 2], fault=outcome)
        if outcome == "wrong_type":
            data = reply.data
            data["dailyData"][-1]["read"] = data["sumData"]["read"] = "abc"
            return replace(reply, body=self._dump(0, data), fault=outcome)
        return replace(reply, fault=outcome)  # hang, huge, trickle: the wire does the rest

    def success(self, user_id: str, variant: Variant) -> _Reply:
        points = sim_series.daily_points(
            user_id, variant, self.today(), self.scripts.get(user_id, ())
        )
        data = {
            "sumData": self._shuffled(dict(points[-1])),
            "dailyData": [self._shuffled(p) for p in points],
        }
        return _Reply(body=self._dump(0, data), code=0, billed=True, data=data)

    def envelope(self, code: int) -> _Reply:
        body = self._dump(code, None, MESSAGES.get(code, "UNKNOWN ERROR"))
        return _Reply(body=body, code=code, billed=code == 201)

    def _dump(self, code: int, data: Any, message: str | None = None) -> bytes:
        envelope = {
            "code": code,
            "data": data,
            "message": message,
            "recordTime": self._record_time() if code == 0 else None,
        }
        return json.dumps(self._shuffled(envelope), ensure_ascii=False).encode()

    def _gateway_400(self, path: str) -> _Reply:
        stamp = self.clock().astimezone(SHANGHAI).isoformat(timespec="milliseconds")
        body = {"timestamp": stamp, "status": 400, "error": "Bad Request", "path": path}
        return _Reply(400, json.dumps(body).encode(), fault="gateway_400")

    def _record_time(self) -> str:
        local = self.clock().astimezone(SHANGHAI)
        nanos = self.shape_rng.randrange(1000)  # the upstream prints nanosecond digits
        return f"{local:%Y-%m-%dT%H:%M:%S}.{local.microsecond:06d}{nanos:03d}"

    def _shuffled(self, mapping: dict[str, Any]) -> dict[str, Any]:
        keys = list(mapping)
        self.shape_rng.shuffle(keys)  # the real upstream does not keep key order
        return {key: mapping[key] for key in keys}

    def _bill(self, token: str) -> None:
        if self.balance is not None:
            self.balance -= 1
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
        by_series = Counter((r.user_id, r.variant) for r in records if r.user_id and r.variant)
        return SimCounters(
            calls=len(records),
            billed=sum(r.billed for r in records),
            by_code=dict(by_code),
            by_series={(u, v): n for (u, v), n in by_series.items() if u and v},
            max_per_minute=_max_in_window([r.monotonic for r in records], timedelta(minutes=1)),
            balance=self.balance,
            log=records,
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


class Simulator:
    """The simulated upstream, served over real HTTP on 127.0.0.1.

    ``async with Simulator(knobs=SimKnobs(...), port=0) as sim: sim.base_url``
    """

    def __init__(
        self,
        knobs: SimKnobs | None = None,
        *,
        port: int = 0,
        host: str = "127.0.0.1",
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self._upstream = _Upstream(knobs or SimKnobs(), clock or _utcnow)
        self._port, self._host = port, host
        self._runner: web.AppRunner | None = None
        self._closing = asyncio.Event()
        self.base_url = ""

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get(CORE_DATA_PATH, self._core_data)
        _AdminApi(self).register(app.router)
        # no access log: the request line carries ?token=
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        self._closing = asyncio.Event()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self._host, self._port))
            await web.SockSite(self._runner, sock).start()
        except OSError:
            sock.close()
            await self.close()
            raise
        self.base_url = f"http://{self._host}:{sock.getsockname()[1]}"
        log.info("simulated upstream listening on %s", self.base_url)

    async def close(self) -> None:
        self._closing.set()  # wakes hanging and slow handlers so shutdown is quick
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # ------------------------------------------------------------------ knobs and scripts

    @property
    def knobs(self) -> SimKnobs:
        return self._upstream.knobs

    def set_knobs(self, **changes: Any) -> SimKnobs:
        """Change knobs at runtime (a new seed re-seeds the draws; ``balance`` resets it)."""
        knobs = replace(self._upstream.knobs, **changes)
        self._upstream.set_knobs(knobs)
        if "balance" in changes:
            self._upstream.balance = knobs.balance
        return knobs

    def today(self) -> date:
        """The simulated day in Asia/Shanghai; the newest ``dateKey`` is the day before."""
        return self._upstream.today()

    def set_balance(self, balance: int | None) -> None:
        """Billed calls left (None: unlimited); at 0 every call returns 601."""
        self._upstream.balance = balance

    def script_change(
        self, user_id: str, metric: str = "read", factor: float = 0.6, variant: str | None = None
    ) -> None:
        """From the newest point (today - 1) on, scale ``metric`` of ``user_id`` by ``factor``."""
        if metric not in sim_series.SCRIPTABLE:
            raise ValueError(f"metric must be one of {sim_series.SCRIPTABLE}, not {metric!r}")
        since = self.today() - timedelta(days=1)
        script = sim_series.Script(metric, factor, since, variant)
        self._upstream.scripts.setdefault(user_id, []).append(script)

    def clear_script(self, user_id: str) -> None:
        """Creator ``user_id`` recovers: its series is the unscripted one again."""
        self._upstream.scripts.pop(user_id, None)

    def force_code(self, user_id: str, code: int | str, times: int | None = None) -> None:
        """The next ``times`` calls for ``user_id`` (all, when None) return ``code``.

        ``code`` is an upstream code or a fault kind from ``FAULT_KINDS`` (e.g. ``"html_502"``).
        """
        if isinstance(code, str) and not code.isdigit() and code not in FAULT_KINDS:
            raise ValueError(f"unknown outcome {code!r}; give a code or one of {FAULT_KINDS}")
        if times is not None and times < 1:
            raise ValueError("times must be at least 1 (or None for every call)")
        self._upstream.forced[user_id] = _Forced(code, times)

    def clear_forced(self, user_id: str) -> None:
        self._upstream.forced.pop(user_id, None)

    def counters(self) -> SimCounters:
        return self._upstream.counters()

    def reset_counters(self) -> None:
        self._upstream.log.clear()

    # ------------------------------------------------------------------ the endpoint

    async def _core_data(self, request: web.Request) -> web.StreamResponse:
        upstream = self._upstream
        reply, user_id, label = upstream.decide(request.query, request.path)
        upstream.log.append(
            CallRecord(
                at=upstream.clock(),
                monotonic=time.monotonic(),
                user_id=user_id,
                variant=label,
                code=reply.code,
                http_status=None if reply.fault == "reset" else reply.status,
                billed=reply.billed,
                fault=reply.fault,
            )
        )
        log.debug("call %s %s -> code=%s fault=%s", user_id, label, reply.code, reply.fault)
        delay = upstream.latency()
        if reply.fault == "hang":
            delay = max(delay, upstream.knobs.hang_s)
        if delay > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), delay)
        if reply.fault == "reset":
            return _reset(request)
        if reply.fault == "huge":
            return await self._huge(request, reply)
        if reply.fault == "trickle":
            return await self._trickle(request, reply)
        return web.Response(
            status=reply.status,
            body=reply.body,
            content_type=reply.content_type,
            headers=reply.headers,
        )

    async def _huge(self, request: web.Request, reply: _Reply) -> web.StreamResponse:
        """A valid envelope padded to ``huge_bytes``, chunked so no Content-Length warns."""
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        chunk = b"x" * 65536
        try:
            await response.write(b'{"code": 0, "message": null, "recordTime": null, "padding": "')
            for _ in range(max(1, self.knobs.huge_bytes // len(chunk))):
                await response.write(chunk)
            await response.write(b'", "data": ' + json.dumps(reply.data).encode() + b"}")
            await response.write_eof()
        except ConnectionError:
            pass  # the client refused the body and hung up, as it should
        return response

    async def _trickle(self, request: web.Request, reply: _Reply) -> web.StreamResponse:
        """A valid body dribbled out a few bytes at a time: every read is quick, the whole slow."""
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        step = max(1, self.knobs.trickle_bytes)
        try:
            for start in range(0, len(reply.body), step):
                if start:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._closing.wait(), self.knobs.trickle_pause_s)
                await response.write(reply.body[start : start + step])
            await response.write_eof()
        except ConnectionError:
            pass  # the client gave up on the slow body
        return response


def _reset(request: web.Request) -> web.StreamResponse:
    """Drop the connection without an answer."""
    if request.transport is not None:
        request.transport.abort()
    return web.Response(status=200)


class _AdminApi:
    """``/_sim/…``: lets another process (demo, drills, benchmarks) read counters and drive knobs.

    Every POST takes a JSON object; a bad one answers HTTP 400 ``{"error": …}``.
    """

    def __init__(self, sim: Simulator) -> None:
        self._sim = sim

    def register(self, router: web.UrlDispatcher) -> None:
        router.add_get("/_sim/counters", self._counters)
        router.add_get("/_sim/knobs", self._get_knobs)
        posts: dict[str, Callable[[dict[str, Any]], object]] = {
            "/_sim/knobs": self._set_knobs,
            "/_sim/balance": lambda body: self._sim.set_balance(body["balance"]),
            "/_sim/script": lambda body: self._sim.script_change(**body),
            "/_sim/script/clear": lambda body: self._sim.clear_script(body["user_id"]),
            "/_sim/force": lambda body: self._sim.force_code(**body),
            "/_sim/force/clear": lambda body: self._sim.clear_forced(body["user_id"]),
            "/_sim/reset": lambda body: self._sim.reset_counters(),
        }
        for path, action in posts.items():
            router.add_post(path, self._post(action))

    async def _counters(self, request: web.Request) -> web.Response:
        return web.json_response(self._sim.counters().to_json())

    async def _get_knobs(self, request: web.Request) -> web.Response:
        return web.json_response(self._sim.knobs.public())

    def _set_knobs(self, body: dict[str, Any]) -> dict[str, Any]:
        if body.get("tokens") is not None:
            body["tokens"] = frozenset(body["tokens"])
        return self._sim.set_knobs(**body).public()

    def _post(
        self, action: Callable[[dict[str, Any]], object]
    ) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handle(request: web.Request) -> web.Response:
            try:
                body = await request.json() if request.can_read_body else {}
            except ValueError:
                return _bad_request("the body is not JSON")
            if not isinstance(body, dict):
                return _bad_request("expected a JSON object")
            try:
                result = action(body)
            except (ValueError, TypeError, KeyError) as exc:
                return _bad_request(f"{type(exc).__name__}: {exc}")
            return web.json_response(result if isinstance(result, dict) else {"ok": True})

        return handle


def _bad_request(message: str) -> web.Response:
    # never echo the request body: it may hold accepted tokens
    return web.json_response({"error": message}, status=400)


def run_simulator(
    port: int = 8780,
    knobs: SimKnobs | None = None,
    *,
    host: str = "127.0.0.1",
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve the simulator until Ctrl-C or SIGTERM (``creator-monitor simulate --port N``)."""
    asyncio.run(_serve(port, knobs, host, on_ready))


async def _serve(
    port: int, knobs: SimKnobs | None, host: str, on_ready: Callable[[str], None] | None
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        async with Simulator(knobs, port=port, host=host) as sim:
            if on_ready is not None:
                on_ready(sim.base_url)
            await stop.wait()
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
