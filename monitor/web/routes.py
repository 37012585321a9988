"""The console's routes on an aiohttp application: ``mount`` adds the pages, the JSON API, the
static files and the middlewares (auth, security headers, a busy database as a 503).

Owns: the order of the middlewares and the routes' assembly. The pages and the API take what
they share (the ``Console``, ``console_of``) from context.py; this module is the only one that
imports them all.
"""

from __future__ import annotations

import logging
import time
from importlib.resources import files
from pathlib import Path

from aiohttp import web

from monitor.errors import StoreError
from monitor.web import api, auth, pages
from monitor.web.context import CONSOLE_KEY, Console, console_of

log = logging.getLogger(__name__)


def static_dir() -> Path:
    return Path(str(files("monitor.web").joinpath("static")))


def mount(app: web.Application, console: Console) -> None:
    """Add the console's routes, static files and auth middleware to ``app``."""
    app[CONSOLE_KEY] = console
    app.middlewares.append(_security_headers)
    app.middlewares.append(_store_busy)
    app.middlewares.append(auth.middleware(console.guard))
    pages.add_routes(app.router)
    api.add_routes(app.router)
    static = app.router.add_static("/static/", static_dir(), name="console-static")
    assert isinstance(static, web.StaticResource)
    for name in ("console.js", "console.css"):
        console.assets[name] = str(static.url_for(filename=name, append_version=True))


@web.middleware
async def _security_headers(request: web.Request, handler: auth.Handler) -> web.StreamResponse:
    started = time.perf_counter()
    response = await handler(request)
    # the server's own time for this request, for browsers' dev tools and bench/console.py
    elapsed_ms = (time.perf_counter() - started) * 1000
    response.headers["Server-Timing"] = f"app;dur={elapsed_ms:.1f}"
    response.headers.setdefault(
        "Content-Security-Policy",
        "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; "
        "base-uri 'none'",
    )
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    if request.path.startswith("/static/"):
        response.headers["Cache-Control"] = "public, max-age=86400"
    elif not request.path.startswith(("/healthz", "/metrics")):
        response.headers.setdefault("Cache-Control", "no-store")
    return response


#: what a 503 asks the client to wait when the database is busy (locked past busy_timeout)
STORE_RETRY_SECONDS = 5


@web.middleware
async def _store_busy(request: web.Request, handler: auth.Handler) -> web.StreamResponse:
    """A database that cannot answer (locked past ``busy_timeout``, unreachable) is a 503 with
    ``Retry-After``, not a 500 with a traceback; logged once per run of such answers."""
    console = console_of(request)
    try:
        response = await handler(request)
    except StoreError as exc:
        if not console.store_failing:
            log.warning("console: the database cannot answer: %s", exc)
            console.store_failing = True
        reason = "the database is busy; try again shortly"
        headers = {"Retry-After": str(STORE_RETRY_SECONDS)}
        if request.path.startswith("/api/") or request.headers.get("Authorization"):
            return web.json_response({"error": reason}, status=503, headers=headers)
        return web.Response(status=503, text=f"{reason}\n", headers=headers)
    if console.store_failing:
        log.info("console: the database answers again")
        console.store_failing = False
    return response
