"""The HTTP listener's edges, shared by ``/healthz``, ``/metrics`` and the console: slow clients
are cut off (a header and a body timeout), the connections it holds are capped so it never takes
the file descriptors that upstream calls and the database need, and accept errors are logged
once per episode. Knows nothing of routes or tokens.
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

log = logging.getLogger(__name__)

#: a client has this long to send its request line and headers, counted from the connect (or
#: the end of the previous answer on a kept-alive connection); aiohttp's keep-alive timer
HEADER_SECONDS = 15.0
#: and this long to send the body once its headers are in
BODY_SECONDS = 15.0
#: the most connections the listener holds at once ...
MAX_CONNECTIONS = 256
#: ... and never more than this share of the process's file descriptors (RLIMIT_NOFILE)
FD_SHARE = 4
#: connections the kernel may hold for us before we accept them
LISTEN_QUEUE = 1024
#: how long a connection may be accepted but not yet known to aiohttp (normally one loop turn)
_PENDING = 0.5
#: asyncio's message when accept() fails for want of descriptors or memory (EMFILE, ENFILE …)
_ACCEPT_FAILED = "socket.accept() out of system resource"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def connection_cap() -> int:
    """``MAX_CONNECTIONS``, or a quarter of the soft descriptor limit when that is smaller."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return MAX_CONNECTIONS
    return max(8, min(MAX_CONNECTIONS, soft // FD_SHARE))


class _Pressure:
    """One episode of trouble at the door: connections over the cap or failed accepts. Logged
    when it starts and when it has been over for ``CALM`` seconds, never per connection."""

    CALM = 10.0

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.closed_early = 0
        self.refused = 0
        self.crowded_at: float | None = None
        self.accept_failed: str | None = None
        self.failed_at = 0.0

    def crowded(self, cap: int, *, refused: bool) -> None:
        if self.crowded_at is None:
            log.warning(
                "http: %d connections open (the cap); closing the oldest idle ones, refusing "
                "new ones while every one is busy",
                cap,
            )
        self.crowded_at = self.clock()
        self.refused += refused
        self.closed_early += not refused

    def failed_accept(self, exc: BaseException | None) -> None:
        self.failed_at = self.clock()
        if self.accept_failed is None:
            self.accept_failed = "unknown error" if exc is None else _strerror(exc)
            log.error(
                "http: cannot accept connections: %s; retrying every second", self.accept_failed
            )

    def accepted(self, open_now: int, cap: int) -> None:
        now = self.clock()
        if self.accept_failed is not None and now - self.failed_at >= self.CALM:
            log.info("http: accepting connections again")
            self.accept_failed = None
        if (
            self.crowded_at is not None
            and open_now < cap // 2
            and now - self.crowded_at >= self.CALM
        ):
            log.info(
                "http: connections back under the cap (%d closed early, %d refused)",
                self.closed_early,
                self.refused,
            )
            self.crowded_at = None
            self.closed_early = self.refused = 0


def _strerror(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return type(exc).__name__


class _Refuse(asyncio.Protocol):
    """A connection over the cap while every held one is busy: 503 at once, then close once
    the client has read it (closing with its request unread would reset the connection)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.write(
            b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nConnection: close\r\n"
            b"Content-Type: text/plain\r\nContent-Length: 5\r\n\r\nbusy\n"
        )
        transport.write_eof()
        asyncio.get_running_loop().call_later(1.0, transport.close)

    def eof_received(self) -> bool:
        return False  # the client is done too: close


class _Door:
    """The protocol factory in front of aiohttp's: at the cap, the oldest connection without a
    request being handled (one still sending its headers, or idle between requests) is closed to
    make room; with every one busy, the new one gets a 503."""

    def __init__(self, cap: int) -> None:
        self.server: web.Server | None = None  # aiohttp's, once the runner has made it
        self.cap = cap
        self.busy: set[object] = set()
        #: made by this factory but not yet told of their transport (aiohttp counts a
        #: connection only then, a loop turn or two after the accept), with when
        self._pending: dict[object, float] = {}
        self.pressure = _Pressure()

    def __call__(self) -> asyncio.BaseProtocol:
        assert self.server is not None
        known = self.server.connections  # in the order they came
        # one closed already stays known until its task ends: neither count nor pick it again
        held = [c for c in known if c.transport is not None]
        now = time.monotonic()
        made = set(known)
        self._pending = {
            p: t for p, t in self._pending.items() if p not in made and now - t < _PENDING
        }
        if len(held) + len(self._pending) >= self.cap:
            victim = next((c for c in held if c not in self.busy), None)
            self.pressure.crowded(self.cap, refused=victim is None)
            if victim is None:
                return _Refuse()
            victim.force_close()
        self.pressure.accepted(len(held), self.cap)
        handler = self.server()
        self._pending[handler] = now
        return handler

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Read the body in time (before the request counts as busy, so a slow body can be
        closed to make room), then mark the connection busy while the handler runs."""
        if request.body_exists:
            if request.content_type == "multipart/form-data":
                raise _closing(web.HTTPUnsupportedMediaType(text="send forms url-encoded\n"))
            try:
                async with asyncio.timeout(BODY_SECONDS):
                    await request.read()
            except TimeoutError:
                raise _closing(
                    web.HTTPRequestTimeout(text="the request body came too slowly\n")
                ) from None
            except ConnectionError:
                raise _closing(web.HTTPBadRequest(text="connection lost\n")) from None
        connection = request.protocol
        self.busy.add(connection)
        try:
            return await handler(request)
        finally:
            self.busy.discard(connection)

    def exception_handler(
        self, previous: Callable[[asyncio.AbstractEventLoop, dict[str, Any]], object] | None
    ) -> Callable[[asyncio.AbstractEventLoop, dict[str, Any]], None]:
        """The loop's exception handler, with failed accepts logged once per episode."""

        def handle(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
            if context.get("message") == _ACCEPT_FAILED:
                self.pressure.failed_accept(context.get("exception"))
            elif previous is not None:
                previous(loop, context)
            else:
                loop.default_exception_handler(context)

        return handle


def _closing(exc: web.HTTPException) -> web.HTTPException:
    exc.force_close()
    return exc


class _GuardedSite(web.TCPSite):
    """aiohttp's TCP site with ``_Door`` as the protocol factory."""

    def __init__(self, runner: web.AppRunner, host: str, port: int, door: _Door) -> None:
        super().__init__(runner, host, port)
        self._door = door

    async def start(self) -> None:
        await web.BaseSite.start(self)
        loop = asyncio.get_running_loop()
        # asyncio accepts up to ``backlog`` connections per loop turn before the door sees
        # any of them. A small burst keeps those (and the closing victims) well inside the
        # descriptors, and lets a new connection live the ~5 loop turns its request needs to
        # be read before newer ones would make it the oldest idle one
        burst = max(4, min(32, self._door.cap // 8))
        self._server = await loop.create_server(self._door, self._host, self._port, backlog=burst)
        # ... while the kernel may queue more, so a connect in a flood waits, not its SYN
        for bound in self._server.sockets:
            with socket.socket(fileno=os.dup(bound.fileno())) as same:
                same.listen(LISTEN_QUEUE)


async def start(app: web.Application, host: str, port: int) -> web.AppRunner:
    """Serve ``app`` on ``host:port`` behind the guards; ``await runner.cleanup()`` stops it
    (and puts the loop's exception handler back). Raises OSError when it cannot bind."""
    door = _Door(connection_cap())
    app.middlewares.insert(0, door.middleware)
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()

    async def restore(_: web.Application) -> None:
        loop.set_exception_handler(previous)

    app.on_cleanup.append(restore)
    runner = web.AppRunner(
        app,
        access_log=None,  # a scrape every 15 s would drown the journal
        shutdown_timeout=2.0,
        keepalive_timeout=HEADER_SECONDS,
        lingering_time=2.0,
    )
    await runner.setup()
    assert runner.server is not None
    door.server = runner.server
    loop.set_exception_handler(door.exception_handler(previous))
    try:
        await _GuardedSite(runner, host, port, door).start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner
