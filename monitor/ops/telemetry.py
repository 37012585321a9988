"""Prometheus metrics on a private registry, and the optional ``/healthz`` + ``/metrics`` endpoint.

Owns the metric values and the aiohttp server. Must not decide health or compute gauges itself:
the daemon pushes values in (or refreshes them through a callback) and passes the health check.
The values are plain attributes: prometheus_client and aiohttp (10 MB and 0.1 s of start-up
between them) are imported only when something reads the registry or ``[http] listen`` starts
the endpoint.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import datetime
from functools import cached_property
from types import TracebackType
from typing import TYPE_CHECKING, Any

from monitor.errors import ConfigError, MonitorError

if TYPE_CHECKING:
    from aiohttp import web
    from prometheus_client import CollectorRegistry

log = logging.getLogger(__name__)

#: the daemon's check: True when the loop is alive and the database writable; raising a
#: MonitorError makes its (one-line, redacted) message the reason in the 503 body
HealthCheck = Callable[[], Awaitable[bool]]
Refresh = Callable[[], Awaitable[None]]

PREFIX = "creator_monitor"

#: (name without prefix, help) of the gauges without labels, in exposition order (``paused``,
#: which has a label, comes after the first two). Each is set by the daemon
GAUGES = (
    ("budget_tokens_left", "Calls the token bucket allows right now."),
    ("budget_daily_calls_left", "Calls left in today's daily_calls."),
    ("inflight_calls", "Upstream calls in flight."),
    (
        "oldest_overdue_seconds",
        "How long the most overdue creator has been waiting past its due time.",
    ),
    ("outbox_depth", "Notifications waiting to be sent."),
    ("outbox_dead_letters", "Notifications that gave up."),
    (
        "last_success_timestamp_seconds",
        "Unix time of the last successful upstream fetch (0 before the first).",
    ),
)
#: gauges of the account's money, absent until the balance job has a figure (a 0 would read
#: as an empty account)
FUNDS_GAUGES = (
    ("balance", "The account balance at the last reading, in its currency (CNY)."),
    (
        "balance_days_left",
        "Days the balance lasts at the current call plan and the derived price per call.",
    ),
)


class _Count:
    """One counter series: its value and when it was created (Prometheus' ``_created``)."""

    __slots__ = ("created", "value")

    def __init__(self) -> None:
        self.value = 0.0
        self.created = time.time()


class Telemetry:
    """The daemon's metrics. Every instance has its own registry, so instances never collide.

    ``refresh`` (optional) recomputes expensive gauges; it runs before each scrape, bounded by
    ``refresh_timeout`` seconds. A failed or slow refresh serves the previous values and counts
    in ``creator_monitor_telemetry_refresh_errors_total``.
    """

    def __init__(self, *, refresh: Refresh | None = None, refresh_timeout: float = 5.0) -> None:
        self._refresh = refresh
        self._refresh_timeout = refresh_timeout
        self._refresh_lock = asyncio.Lock()
        self._refresh_failing = False
        #: upstream calls by result code
        self.calls: dict[str, _Count] = {}
        self.billed_calls = _Count()
        self.refresh_errors = _Count()
        self.gauges: dict[str, float] = dict.fromkeys((name for name, _ in GAUGES), 0.0)
        #: why every call is paused (the upstream code), None while running
        self.paused_reason: str | None = None
        #: the balance and its days left; None (not exported) while unknown
        self.funds: dict[str, float | None] = dict.fromkeys((n for n, _ in FUNDS_GAUGES))

    @cached_property
    def registry(self) -> CollectorRegistry:
        """A private registry that reads this object's values at each collection."""
        from prometheus_client import CollectorRegistry

        registry = CollectorRegistry(auto_describe=True)
        registry.register(_Collector(self))
        return registry

    def record_call(self, code: int | str, billed: bool) -> None:
        """One upstream call ended with ``code`` (an API code, or e.g. ``"transport"``)."""
        self.calls.setdefault(str(code), _Count()).value += 1
        if billed:
            self.billed_calls.value += 1

    def set_budget(self, *, tokens_left: float, daily_calls_left: int) -> None:
        """The budget as it stands: bucket tokens now, and calls left today."""
        self.gauges["budget_tokens_left"] = float(tokens_left)
        self.gauges["budget_daily_calls_left"] = float(daily_calls_left)

    def set_paused(self, reason: int | str | None) -> None:
        """Paused for ``reason`` (e.g. 303, 601), or running again with None.

        Exactly one series exists at a time, so ``creator_monitor_paused == 1`` names the reason.
        """
        self.paused_reason = None if reason is None else str(reason)

    def set_funds(self, *, balance: float | None, days_left: float | None) -> None:
        """The balance at the last reading and the days it lasts (None: not known)."""
        self.funds["balance"] = balance
        self.funds["balance_days_left"] = days_left

    def set_inflight(self, calls: int) -> None:
        """How many upstream calls are in flight right now."""
        self.gauges["inflight_calls"] = float(calls)

    def set_oldest_overdue(self, seconds: float) -> None:
        """Seconds the most overdue creator is past its due time (0 when nobody is late)."""
        self.gauges["oldest_overdue_seconds"] = max(0.0, float(seconds))

    def set_outbox(self, *, depth: int, dead_letters: int) -> None:
        """Notifications waiting to be sent, and those dead-lettered."""
        self.gauges["outbox_depth"] = float(depth)
        self.gauges["outbox_dead_letters"] = float(dead_letters)

    def set_last_success(self, at: datetime) -> None:
        """When the last successful fetch finished; ``at`` must be timezone-aware."""
        if at.tzinfo is None:
            raise ValueError("set_last_success needs an aware datetime")
        self.gauges["last_success_timestamp_seconds"] = at.timestamp()

    async def refresh(self) -> None:
        """Run the refresh callback once (serialized); a failure keeps the previous values."""
        if self._refresh is None:
            return
        async with self._refresh_lock:
            try:
                async with asyncio.timeout(self._refresh_timeout):
                    await self._refresh()
            except (MonitorError, TimeoutError) as exc:
                self.refresh_errors.value += 1
                if not self._refresh_failing:
                    self._refresh_failing = True
                    log.warning("metrics refresh failing, serving stale gauges: %s", _reason(exc))
                return
            if self._refresh_failing:
                self._refresh_failing = False
                log.info("metrics refresh recovered")

    async def scrape(self, accept: str = "") -> tuple[bytes, str]:
        """Refresh, then render in the format ``accept`` asks for: (body, content type)."""
        await self.refresh()
        from prometheus_client.exposition import choose_encoder

        encoder, content_type = choose_encoder(accept)
        return encoder(self.registry), content_type


class _Collector:
    """Turns a Telemetry's values into metric families, as Counter and Gauge objects would."""

    def __init__(self, telemetry: Telemetry) -> None:
        self._t = telemetry

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        t = self._t
        calls = CounterMetricFamily(
            f"{PREFIX}_upstream_calls", "Upstream calls by result code.", labels=["code"]
        )
        for code, count in t.calls.items():
            calls.add_metric([code], count.value, created=count.created)
        yield calls
        yield _counter(
            "upstream_billed_calls", "Upstream calls the vendor charges for.", t.billed_calls
        )
        for name, help_ in GAUGES[:2]:
            yield GaugeMetricFamily(f"{PREFIX}_{name}", help_, value=t.gauges[name])
        paused = GaugeMetricFamily(
            f"{PREFIX}_paused",
            "1 while every call is paused; the reason label is the upstream code.",
            labels=["reason"],
        )
        # exactly one series at a time, so ``creator_monitor_paused == 1`` names the reason
        if t.paused_reason is None:
            paused.add_metric([""], 0.0)
        else:
            paused.add_metric([t.paused_reason], 1.0)
        yield paused
        for name, help_ in GAUGES[2:]:
            yield GaugeMetricFamily(f"{PREFIX}_{name}", help_, value=t.gauges[name])
        for name, help_ in FUNDS_GAUGES:
            family = GaugeMetricFamily(f"{PREFIX}_{name}", help_, labels=[])
            if (value := t.funds[name]) is not None:
                family.add_metric([], value)
            yield family
        yield _counter(
            "telemetry_refresh_errors",
            "Scrapes that served stale gauges because the refresh failed.",
            t.refresh_errors,
        )


def _counter(name: str, help_: str, count: _Count) -> Any:
    from prometheus_client.core import CounterMetricFamily

    family = CounterMetricFamily(f"{PREFIX}_{name}", help_, labels=[])
    family.add_metric([], count.value, created=count.created)
    return family


def _reason(exc: BaseException) -> str:
    # Our own errors are one redacted line; a foreign exception's text may carry a DSN or
    # URL with a secret, so only its type is shown.
    if isinstance(exc, MonitorError):
        return " ".join(str(exc).split())
    if isinstance(exc, TimeoutError):
        return "timed out"
    return type(exc).__name__


def parse_listen(listen: str) -> tuple[str, int]:
    """``"127.0.0.1:9464"`` / ``"[::1]:9464"`` → (host, port). The host must be given."""
    host, sep, port = listen.strip().rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ConfigError(
            "http.listen", f"expected 'HOST:PORT' like '127.0.0.1:9464', got {listen!r}"
        )
    if not host or host == "*":
        # An empty host would make aiohttp listen on every interface; that must be a choice.
        raise ConfigError(
            "http.listen",
            f"give the host explicitly, e.g. '127.0.0.1:{port}' (or '0.0.0.0:{port}' for every "
            "interface)",
        )
    return host, int(port)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class HttpEndpoint:
    """The running ``/healthz`` + ``/metrics`` server; close it (or ``async with`` it) to stop."""

    def __init__(self, runner: web.AppRunner, host: str, port: int) -> None:
        self._runner = runner
        self.host = host
        #: the bound port (the real one when the config asked for port 0)
        self.port = port

    @property
    def url(self) -> str:
        """Base URL of the endpoint, e.g. ``http://127.0.0.1:9464``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def close(self) -> None:
        """Stop listening and close open connections; safe to call twice."""
        await self._runner.cleanup()

    async def __aenter__(self) -> HttpEndpoint:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


class _Health:
    """Runs the daemon's check for ``/healthz``; logs only when the answer changes."""

    def __init__(self, check: HealthCheck, timeout: float) -> None:
        self._check = check
        self._timeout = timeout
        self._last_failure: str | None = None

    async def failure(self) -> str | None:
        """None when healthy, else a one-line reason."""
        reason: str | None
        try:
            async with asyncio.timeout(self._timeout):
                ok = await self._check()
        except TimeoutError:
            reason = f"health check timed out after {self._timeout:g}s"
        except Exception as exc:  # noqa: BLE001 — any failure of the check means "unhealthy"
            reason = _reason(exc)
        else:
            reason = None if ok else "health check failed"
        if reason != self._last_failure:
            if reason is None:
                log.info("healthy again")
            else:
                log.warning("unhealthy: %s", reason)
            self._last_failure = reason
        return reason


#: adds more routes (the console) to the endpoint's application; told whether it is loopback
Mount = Callable[["web.Application", bool], None]


def _app(telemetry: Telemetry, health: _Health) -> web.Application:
    from aiohttp import web

    async def healthz(request: web.Request) -> web.Response:
        reason = await health.failure()
        if reason is None:
            return web.Response(text="ok\n")
        return web.Response(status=503, text=f"unhealthy: {reason}\n")

    async def metrics(request: web.Request) -> web.Response:
        body, content_type = await telemetry.scrape(request.headers.get("Accept", ""))
        return web.Response(body=body, headers={"Content-Type": content_type})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    return app


async def serve(
    listen: str,
    telemetry: Telemetry,
    healthy: HealthCheck,
    *,
    health_timeout: float = 5.0,
    mount: Mount | None = None,
) -> HttpEndpoint:
    """Start serving ``GET /healthz`` and ``GET /metrics`` on exactly ``listen`` ("HOST:PORT").

    Returns once the socket is bound; ``await stack.enter_async_context(await serve(...))``.
    Raises ConfigError for a listen value without a host; a non-loopback host is bound as asked,
    with a warning, since neither path has authentication. ``mount`` (the console) adds its
    routes and its authentication, which then covers /metrics off loopback.
    """
    from monitor.ops import listener

    host, port = parse_listen(listen)
    loopback = _is_loopback(host)
    if not loopback and mount is None:
        log.warning(
            "http.listen %s is not loopback: /metrics and /healthz are unauthenticated", host
        )
    app = _app(telemetry, _Health(healthy, health_timeout))
    if mount is not None:
        mount(app, loopback)
    try:
        runner = await listener.start(app, host, port)
    except OSError as exc:
        raise ConfigError("http.listen", f"cannot listen on {listen}: {exc.strerror}") from exc
    bound_port = int(runner.addresses[0][1]) if port == 0 else port
    log.info("serving /healthz and /metrics on %s:%d", host, bound_port)
    return HttpEndpoint(runner, host, bound_port)
