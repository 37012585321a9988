"""The Just One API client: one request in, a parsed ``FetchResult`` or a typed error out.

The only importer of httpx. Owns the wire (token added only on the request that is sent),
body limits, the redaction of every body (whole, before a message or a kept body is cut from
it), and transport failures as ``monitor.errors``; the mapping of every body shape and code is
monitor/upstream/parse.py's. Must not retry upstream codes, sleep, or know about budgets,
storage or alerts.
"""

from __future__ import annotations

import asyncio
import errno
import math
import socket
import ssl
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from functools import cache, partial
from types import TracebackType
from typing import TYPE_CHECKING, Self, TypeVar

import httpx
from pydantic import SecretStr

from monitor.errors import (
    ConfigError,
    RateLimited,
    TransportError,
    Unreached,
    UnreadableAnswer,
    UpstreamError,
)
from monitor.model import (
    Answer,
    Balance,
    DateType,
    FetchResult,
    FollowerHistory,
    NotePage,
    Variant,
)
from monitor.ops.redaction import Redactor
from monitor.upstream.balance import BALANCE_PATH, balance_params, parse_balance
from monitor.upstream.fans import FANS_PATH, fans_params, parse_fans
from monitor.upstream.notes import NOTES_PATH, notes_params, parse_notes
from monitor.upstream.parse import UPSTREAM_TZ, BodyParser, parse_core_data
from monitor.validation import userinfo_problem

if TYPE_CHECKING:
    pass

CORE_DATA_PATH = "/api/xiaohongshu-pgy/api/pgy/kol/data/core_data/v1"
T = TypeVar("T")
#: the longest ``Retry-After`` obeyed; longer (1e12, a date years ahead) is read as this
MAX_RETRY_AFTER_S = 3600.0


class _TokenTransport(httpx.AsyncBaseTransport):
    """Adds ``token`` to the one request that goes on the wire.

    httpx logs, exceptions and ``response.request`` all refer to the request the client built,
    which never holds the token; only this copy, handed straight to the socket layer, does.
    """

    def __init__(self, inner: httpx.AsyncBaseTransport, token: SecretStr) -> None:
        self._inner = inner
        self.token = token

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        wire = httpx.Request(
            request.method,
            request.url.copy_add_param("token", self.token.get_secret_value()),
            headers=request.headers,
            stream=request.stream,
            extensions=request.extensions,
        )
        return await self._inner.handle_async_request(wire)

    async def aclose(self) -> None:
        await self._inner.aclose()


@cache
def _tls_context() -> ssl.SSLContext:
    """One verifying TLS context for every client of this process: each new one reads the whole
    CA bundle again (about 20 ms of CPU), and a command, a reload or a test makes several."""
    return httpx.create_ssl_context()


class JustOneClient:
    """One ``httpx.AsyncClient`` for the process; each endpoint method makes exactly one call
    (``core_data``, ``fans_history``, ``notes_page``, ``balance``); the gate is the caller's.

    ``async with JustOneClient(base_url=…, token=SecretStr(…)) as client:
    result = await client.core_data(user_id, variant)``
    """

    def __init__(
        self,
        *,
        base_url: str,
        token: SecretStr,
        timeout: timedelta = timedelta(seconds=60),
        max_response_bytes: int = 2_000_000,
        connect_retries: int = 2,
        max_connections: int = 10,
        monotonic: Callable[[], float] = time.monotonic,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        if (problem := userinfo_problem(base_url)) is not None:
            # httpx would send it as Basic auth and show it in every request URL it logs
            raise ConfigError("api.base_url", problem)
        self._token = token
        self._redact = Redactor([token])
        self._max_bytes = max_response_bytes
        self._monotonic = monotonic
        # the caller's clock (the daemon's, the demo's virtual one) dates the answers it checks;
        # without one, only OLDEST_DATE bounds the data and Retry-After dates use the wall clock
        self._clock = clock
        # limits and retries belong on the transport: the client ignores limits= with transport=
        inner = httpx.AsyncHTTPTransport(
            verify=_tls_context(),
            retries=connect_retries,  # connection failures only: a request never sent is not billed
            limits=httpx.Limits(max_connections=max_connections),
        )
        # httpx times each read; a body trickled byte by byte never trips that, so the whole
        # call is bounded too
        self._deadline = timeout.total_seconds()
        self._wire = _TokenTransport(inner, token)
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            transport=self._wire,
            timeout=httpx.Timeout(timeout.total_seconds()),
            headers={"Accept": "application/json", "User-Agent": "creator-monitor"},
            follow_redirects=False,
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    def use_token(self, token: SecretStr) -> None:
        """Send ``token`` from the next call on (a reload found a changed one)."""
        self._token = token
        self._redact = Redactor([token])
        self._wire.token = token

    async def core_data(self, user_id: str, variant: Variant | None = None) -> FetchResult:
        """One call for one creator and variant; every failure is an ``UpstreamError``."""
        params = {"userId": user_id, **(variant or Variant()).query()}
        return await self._call(CORE_DATA_PATH, params, parse_core_data)

    async def fans_history(
        self, user_id: str, date_type: DateType = DateType.DAY_30
    ) -> Answer[FollowerHistory]:
        """One follower-history call: the daily follower count over 30 or 90 days."""
        return await self._call(FANS_PATH, fans_params(user_id, date_type), parse_fans)

    async def notes_page(self, user_id: str, page: int = 1) -> Answer[NotePage]:
        """One page (8 notes, newest first) of the creator's note list: one paid call."""
        return await self._call(
            NOTES_PATH, notes_params(user_id, page), partial(parse_notes, page=page)
        )

    async def balance(self) -> Answer[Balance]:
        """The account balance (whether the vendor bills it is not published)."""
        return await self._call(BALANCE_PATH, balance_params(), parse_balance)

    async def _call(self, path: str, params: dict[str, str], parse: BodyParser[T]) -> T:
        """One GET of any endpoint, its redacted body read by ``parse``; every failure is an
        ``UpstreamError``, scrubbed of the token."""
        started = self._monotonic()
        headers: httpx.Headers | None = None
        now = self._clock() if self._clock is not None else None
        try:
            status, headers, body = await self._get(path, params, started)
            latency_ms = self._elapsed_ms(started)
            # redacted whole before anything is cut from it: a message, the kept body
            text = self._redact(body.decode("utf-8", errors="replace"))
            today = now.astimezone(UPSTREAM_TZ).date() if now is not None else None
            return parse(text, http_status=status, latency_ms=latency_ms, today=today)
        except UpstreamError as exc:
            if isinstance(exc, RateLimited):
                exc.retry_after = parse_retry_after(
                    headers.get("retry-after") if headers is not None else None,
                    now or datetime.now(UTC),
                )
            if isinstance(exc, UnreadableAnswer):
                exc.params = dict(params)  # what was asked, for reparse (never the token)
            self._scrub(exc)
            raise

    async def _get(
        self, path: str, params: Mapping[str, str], started: float
    ) -> tuple[int, httpx.Headers, bytes]:
        """Stream one GET; refuse bodies over the limit before they are buffered whole."""
        try:
            async with (
                asyncio.timeout(self._deadline),
                self._http.stream("GET", path, params=params) as response,
            ):
                declared = response.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > self._max_bytes:
                    raise self._too_big(response.status_code, started)
                chunks: list[bytes] = []
                size = 0
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > self._max_bytes:
                        raise self._too_big(response.status_code, started)
                    chunks.append(chunk)
                return response.status_code, response.headers, b"".join(chunks)
        except TimeoutError as exc:
            raise TransportError(
                f"no complete answer from {_where(self._http.base_url)} within "
                f"{self._deadline:g} s: the upstream is slow (api.timeout sets the limit)",
                latency_ms=self._elapsed_ms(started),
                billed=False,
            ) from exc
        except httpx.HTTPError as exc:
            # a client-side timeout may still be billed by the vendor; we cannot know, so: False
            message = self._redact(_transport_text(exc, self._http.base_url, self._deadline))
            # no connection at all: the request never left this host
            family = Unreached if isinstance(exc, _NO_CONNECTION) else TransportError
            raise family(message, latency_ms=self._elapsed_ms(started), billed=False) from exc

    def _too_big(self, status: int, started: float) -> TransportError:
        return TransportError(
            f"response larger than {self._max_bytes} bytes, refused",
            http_status=status,
            latency_ms=self._elapsed_ms(started),
        )

    def _elapsed_ms(self, started: float) -> int:
        return max(0, round((self._monotonic() - started) * 1000))

    def _scrub(self, exc: UpstreamError) -> None:
        """Mask any echo of the token in the error (an upstream or proxy could reflect it)."""
        exc.message = self._redact(exc.message)
        if exc.raw_body is not None:
            exc.raw_body = self._redact(exc.raw_body)
        exc.args = (exc.message,)


_NO_CONNECTION = (httpx.ConnectError, httpx.ConnectTimeout, httpx.ProxyError)


def _where(url: httpx.URL) -> str:
    """``host:port`` of the upstream, without any user info."""
    port = url.port or (443 if url.scheme == "https" else 80)
    return f"{url.host}:{port}"


_ERRNO_WORDS = {
    errno.ECONNREFUSED: "connection refused",
    errno.ECONNRESET: "connection reset",
    errno.ENETUNREACH: "network unreachable",
    errno.EHOSTUNREACH: "host unreachable",
    errno.ETIMEDOUT: "connection timed out",
}


def _reason(exc: BaseException) -> str:
    """Why a request failed, in a few words, from the innermost cause that says."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, socket.gaierror):
            return "host name not found"
        if isinstance(cause, ssl.SSLError):
            return f"TLS failed: {cause.reason or 'handshake error'}"
        if isinstance(cause, OSError) and cause.errno in _ERRNO_WORDS:
            return _ERRNO_WORDS[cause.errno]
        cause = cause.__cause__ or cause.__context__
    if isinstance(exc, httpx.TimeoutException):
        return "timed out"
    return str(exc).rstrip(".").lower() or "no detail"


def _transport_text(exc: httpx.HTTPError, base_url: httpx.URL, deadline: float) -> str:
    """A transport failure as an operator reads it: which host, what happened, what to check.
    No exception class names: this text reaches ``fetch``'s one error line."""
    where, reason = _where(base_url), _reason(exc)
    if isinstance(exc, _NO_CONNECTION):
        return f"cannot reach {where} ({reason}): check api.base_url and proxy settings"
    if isinstance(exc, httpx.TimeoutException):
        return (
            f"no answer from {where} within {deadline:g} s ({reason}): api.timeout sets the limit"
        )
    if isinstance(exc, httpx.NetworkError | httpx.RemoteProtocolError):
        return f"connection to {where} broke ({reason}); the call is retried later"
    return f"request to {where} failed ({reason})"


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """A ``Retry-After`` value as seconds from ``now``, never trusted: delay-seconds (an int or
    a float) or an HTTP-date, at most ``MAX_RETRY_AFTER_S``; None when absent, unreadable,
    negative or not finite (the budget then uses its own pause)."""
    text = (value or "").strip()
    if not text or len(text) > 64:
        return None
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if when.tzinfo is None:  # "-0000": UTC by RFC 5322
            when = when.replace(tzinfo=UTC)
        seconds = max(0.0, (when - now).total_seconds())
    if not math.isfinite(seconds) or seconds < 0:
        return None
    return min(seconds, MAX_RETRY_AFTER_S)
