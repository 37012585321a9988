"""Start the console: inside ``run`` (``console_mount``, beside /healthz and /metrics) or alone
(``serve``: the database without the daemon, e.g. on a second host or a copy of history.db).

The console reads through its own store (its own connection pool), so page views never wait
for, or hold up, the daemon's connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import signal
from collections.abc import Callable, Mapping
from contextlib import AsyncExitStack
from datetime import UTC, datetime

from aiohttp import web

from monitor.app import console_store, health_store
from monitor.config import Config
from monitor.errors import ConfigError, MonitorError
from monitor.ops import listener
from monitor.ops.wallclock import Clock
from monitor.web import auth
from monitor.web.context import Console
from monitor.web.routes import mount

log = logging.getLogger(__name__)

#: ``serve`` binds here when neither --listen nor ``[http] listen`` is given
DEFAULT_LISTEN = "127.0.0.1:9465"

Mount = Callable[[web.Application, bool], None]


def _utc_now() -> datetime:
    return datetime.now(UTC)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def console_mount(
    config: Config,
    stack: AsyncExitStack,
    environ: Mapping[str, str] | None = None,
    clock: Clock = _utc_now,
) -> Mount:
    """What ``telemetry.serve`` calls to add the console; its store closes with ``stack``."""
    tokens = auth.console_tokens(config, environ)
    if tokens.admin is None and tokens.readonly is None:
        log.warning(
            "console locked: no http.token_file, readonly_token_file or systemd credential "
            "%s or %s",
            auth.HTTP_CREDENTIAL,
            auth.HTTP_READONLY_CREDENTIAL,
        )
    store = console_store(config, stack, clock)

    def add(app: web.Application, loopback: bool) -> None:
        guard = auth.Guard(
            tokens,
            loopback=loopback,
            trust_proxy=config.http.trust_proxy,
            secure_cookies=config.http.secure_cookies,
        )
        mount(app, Console(config, store, guard, clock=clock))

    return add


async def serve_console(
    config: Config,
    listen: str,
    *,
    environ: Mapping[str, str] | None = None,
    ready: Callable[[str], None] | None = None,
    stop: asyncio.Event | None = None,
) -> int:
    """``creator-monitor serve``: /healthz and the console until SIGTERM/SIGINT (or ``stop``)."""
    from monitor.ops.telemetry import parse_listen

    host, port = parse_listen(listen)
    stop = stop or asyncio.Event()
    async with AsyncExitStack() as stack:
        add = await console_mount(config, stack, environ)
        check = health_store(config, stack)
        await check.check_schema()

        async def healthz(request: web.Request) -> web.Response:
            try:
                await check.check_schema()
            except MonitorError as exc:
                return web.Response(status=503, text=f"unhealthy: {exc}\n")
            return web.Response(text="ok\n")

        app = web.Application()
        app.router.add_get("/healthz", healthz)
        add(app, is_loopback(host))
        try:
            runner = await listener.start(app, host, port)
        except OSError as exc:
            raise ConfigError("http.listen", f"cannot listen on {listen}: {exc.strerror}") from exc
        stack.push_async_callback(runner.cleanup)
        bound = int(runner.addresses[0][1])
        shown = f"[{host}]" if ":" in host else host
        url = f"http://{shown}:{bound}"
        log.info("console on %s (database only, no daemon)", url)
        if ready is not None:
            ready(url)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
                stack.callback(loop.remove_signal_handler, sig)
        await stop.wait()
    return 0
