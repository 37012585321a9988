"""The simulated Just One API: core_data, follower history, the note list and the balance over
real HTTP on 127.0.0.1 for demo, tests, drills.

Owns the server, its wire faults (hang, huge, reset, trickle) and the ``/_sim/…`` admin API; the
platform's rules, limits and counters live in monitor/upstream/sim_state.py (re-exported here).
Must never log, store or return the token it receives.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import date, datetime, timedelta
from decimal import Decimal
from types import TracebackType
from typing import Any, Self

from aiohttp import web

from monitor.upstream import series as sim_series
from monitor.upstream import sim_sources
from monitor.upstream.sim_log import CallRecord, Money, SimCounters, money
from monitor.upstream.sim_state import (
    BALANCE_PATH,
    CORE_DATA_PATH,
    ENDPOINTS,
    FANS_PATH,
    FAULT_KINDS,
    HTML_502,
    MESSAGES,
    NOTES_PATH,
    Forced,
    Reply,
    SimKnobs,
    Upstream,
    utcnow,
)

__all__ = [
    "BALANCE_PATH",
    "CORE_DATA_PATH",
    "ENDPOINTS",
    "FANS_PATH",
    "FAULT_KINDS",
    "HTML_502",
    "MESSAGES",
    "NOTES_PATH",
    "CallRecord",
    "SimCounters",
    "SimKnobs",
    "Simulator",
    "run_simulator",
]

log = logging.getLogger(__name__)
#: what ``script_change`` can scale: core_data's counts and the follower count
SCRIPTABLE = (*sim_series.SCRIPTABLE, "fans")


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
        self._upstream = Upstream(knobs or SimKnobs(), clock or utcnow)
        self._port, self._host = port, host
        self._runner: web.AppRunner | None = None
        self._closing = asyncio.Event()
        self.base_url = ""

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        app = web.Application()
        for endpoint, path in ENDPOINTS.items():
            app.router.add_get(path, self._handler(endpoint))
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

    def set_balance(self, balance: int | float | str | Decimal | None) -> None:
        """The balance, money (None: unlimited; at the default ``call_price`` 1, the billed
        calls left); once it cannot pay for a call, every call returns 601."""
        self._upstream.balance = money(balance)

    def balance(self) -> Money | None:
        return self._upstream.balance

    def script_change(
        self, user_id: str, metric: str = "read", factor: float = 0.6, variant: str | None = None
    ) -> None:
        """From the newest point (today - 1) on, scale ``metric`` of ``user_id`` by ``factor``
        (``fans``: the follower count)."""
        if metric not in SCRIPTABLE:
            raise ValueError(f"metric must be one of {SCRIPTABLE}, not {metric!r}")
        since = self.today() - timedelta(days=1)
        script = sim_series.Script(metric, factor, since, variant)
        self._upstream.scripts.setdefault(user_id, []).append(script)

    def clear_script(self, user_id: str) -> None:
        """Creator ``user_id`` recovers: its series is the unscripted one again."""
        self._upstream.scripts.pop(user_id, None)

    def force_code(
        self,
        user_id: str,
        code: int | str,
        times: int | None = None,
        endpoint: str | None = None,
    ) -> None:
        """The next ``times`` calls for ``user_id`` (all, when None) return ``code``; with
        ``endpoint`` (``core``, ``fans``, ``notes``), only that endpoint's calls.

        ``code`` is an upstream code or a fault kind from ``FAULT_KINDS`` (e.g. ``"html_502"``).
        The balance endpoint names no creator: see ``force_balance``.
        """
        if isinstance(code, str) and not code.isdigit() and code not in FAULT_KINDS:
            raise ValueError(f"unknown outcome {code!r}; give a code or one of {FAULT_KINDS}")
        if times is not None and times < 1:
            raise ValueError("times must be at least 1 (or None for every call)")
        if endpoint is not None and endpoint not in ENDPOINTS:
            raise ValueError(f"unknown endpoint {endpoint!r}; known: {tuple(ENDPOINTS)}")
        self._upstream.forced[user_id] = Forced(code, times, endpoint)

    def force_balance(self, code: int | str, times: int | None = None) -> None:
        """The next ``times`` balance calls (all, when None) return ``code``."""
        self.force_code("", code, times, endpoint="balance")

    def publish_note(
        self,
        user_id: str,
        *,
        reads: float = 50_000,
        title: str = "新笔记",
        video: bool = False,
        ad: bool = False,
        brand: str | None = None,
        tau_hours: float = 24.0,
    ) -> str:
        """``user_id`` publishes a note now whose reads head for ``reads`` (a hit, by
        default) with time constant ``tau_hours``; returns its id."""
        if reads < 0 or tau_hours <= 0:
            raise ValueError("reads must be ≥ 0 and tau_hours > 0")
        now = self._upstream.clock()
        published = self._upstream.published.setdefault(user_id, [])
        note = sim_sources.SimNote(
            note_id=sim_sources.note_id(now, user_id, "scripted", len(published)),
            title=title,
            published=now,
            video=video,
            ad=ad,
            brand=brand,
            peak_reads=reads,
            tau_hours=tau_hours,
            like_rate=0.05,
            collect_rate=0.4,
        )
        published.append(note)
        return note.note_id

    def clear_forced(self, user_id: str) -> None:
        self._upstream.forced.pop(user_id, None)

    def counters(self) -> SimCounters:
        return self._upstream.counters()

    def reset_counters(self) -> None:
        self._upstream.log.clear()

    # ------------------------------------------------------------------ the endpoints

    def _handler(self, endpoint: str) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handle(request: web.Request) -> web.StreamResponse:
            return await self._answer(request, endpoint)

        return handle

    async def _answer(self, request: web.Request, endpoint: str) -> web.StreamResponse:
        upstream = self._upstream
        reply, user_id, label = upstream.decide(request.query, request.path, endpoint)
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
                endpoint=endpoint,
            )
        )
        log.debug(
            "call %s %s %s -> code=%s fault=%s", endpoint, user_id, label, reply.code, reply.fault
        )
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

    async def _huge(self, request: web.Request, reply: Reply) -> web.StreamResponse:
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

    async def _trickle(self, request: web.Request, reply: Reply) -> web.StreamResponse:
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
            "/_sim/publish": lambda body: {"note_id": self._sim.publish_note(**body)},
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
