"""The Just One API client: one request in, a parsed ``FetchResult`` or a typed error out.

The only importer of httpx. Owns the wire (token added only on the request that is sent),
body limits, the redaction of every body (whole, before a message or a kept body is cut from
it), and the mapping of every body shape and code to ``monitor.errors``. Must not
retry upstream codes, sleep, or know about budgets, storage or alerts.
"""

from __future__ import annotations

import asyncio
import errno
import json
import math
import re
import socket
import ssl
import time
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime, timedelta
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self
from zoneinfo import ZoneInfo

import httpx
from pydantic import SecretStr

from monitor.errors import (
    AccountBlocked,
    ConfigError,
    InvalidRequest,
    NoContent,
    ParseError,
    QuotaExceeded,
    RateLimited,
    Retryable,
    TransportError,
    UnknownCode,
    UpstreamError,
)
from monitor.model import CoreData, DailyPoint, FetchResult, Variant
from monitor.ops.redaction import Redactor
from monitor.validation import userinfo_problem

if TYPE_CHECKING:
    from monitor.config import ApiConfig

CORE_DATA_PATH = "/api/xiaohongshu-pgy/api/pgy/kol/data/core_data/v1"
UPSTREAM_TZ = ZoneInfo("Asia/Shanghai")
#: error bodies (HTML pages, gateway JSON) are kept only this long for the fetches table
ERROR_BODY_KEEP = 2000
#: the longest ``Retry-After`` obeyed; longer (1e12, a date years ahead) is read as this
MAX_RETRY_AFTER_S = 3600.0
#: data dates outside these bounds are a broken answer, never a (latest) point: nothing the
#: platform serves predates 2015, its longest window is 90 days, and its day is Asia/Shanghai's
#: (a day or two ahead of a client west of it, never more)
OLDEST_DATE = date(2015, 1, 1)
MAX_DATE_AGE = timedelta(days=400)
MAX_DATE_AHEAD = timedelta(days=2)

_CODE_FAMILY: dict[int, type[UpstreamError]] = {
    100: AccountBlocked,
    600: AccountBlocked,
    601: AccountBlocked,
    602: AccountBlocked,
    303: QuotaExceeded,
    302: RateLimited,
    301: Retryable,
    500: Retryable,
    400: InvalidRequest,
    201: NoContent,
}
_DEFAULT_MESSAGE = {201: "no content", 302: "rate limit exceeded", 303: "daily quota exceeded"}
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_RECORD_TIME_RE = re.compile(
    r"^(\d{4}-\d{2}-\d{2})[T ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}:?\d{2})?$"
)
_INT_KEYS = {"imp": "imp", "read": "read", "engage": "engage", "thirdUserNum": "third_user_num"}
_COST_KEYS = ("cpm", "cpe", "cpv", "cpuv")


class _BadData(ValueError):
    """A value inside ``data`` we cannot read; becomes a ParseError carrying the raw body."""


# --------------------------------------------------------------------------- parsing (pure)


def parse_core_data(
    body: str | bytes, *, http_status: int = 200, latency_ms: int = 0, today: date | None = None
) -> FetchResult:
    """Parse one response body of any shape: a success, or raise the matching UpstreamError.

    ``today`` (the upstream's day when the answer came) bounds the data dates: a point dated
    more than ``MAX_DATE_AHEAD`` after it or ``MAX_DATE_AGE`` before it makes the answer a
    ParseError (without ``today`` only ``OLDEST_DATE`` applies). The body must already be
    redacted: messages and the kept body are cut from it.

    Also used to re-parse stored raw bodies. Pure: no I/O, no clock.
    """
    text = body.decode("utf-8", errors="replace") if isinstance(body, bytes) else body
    facts: dict[str, Any] = {"http_status": http_status, "latency_ms": latency_ms}
    try:
        envelope = json.loads(text, parse_constant=_reject_constant)
    except ValueError as exc:
        raise Retryable(
            f"response is not JSON ({_describe_body(text)})",
            raw_body=text[:ERROR_BODY_KEEP],
            **facts,
        ) from exc
    if not isinstance(envelope, dict) or "code" not in envelope:
        raise Retryable(
            f"gateway error without envelope: {_gateway_summary(envelope)}",
            raw_body=text[:ERROR_BODY_KEEP],
            **facts,
        )
    code = envelope["code"]
    if isinstance(code, bool) or not isinstance(code, int):
        raise Retryable(
            f"envelope code is not an integer: {code!r:.40}",
            raw_body=text[:ERROR_BODY_KEEP],
            **facts,
        )
    if code != 0:
        raise _code_error(code, envelope.get("message"), text, facts)
    try:
        data = _parse_data(envelope.get("data"), envelope.get("recordTime"), _date_bounds(today))
    except _BadData as exc:
        raise ParseError(f"unreadable data: {exc}", code=0, raw_body=text, **facts) from None
    return FetchResult(data=data, http_status=http_status, latency_ms=latency_ms, raw_body=text)


def _reject_constant(name: str) -> float:
    raise ValueError(f"non-finite number {name} in JSON")


def _describe_body(text: str) -> str:
    stripped = text.strip()
    if not stripped:
        return "empty body"
    if stripped.startswith("<"):
        return f"HTML page, {len(text)} chars"
    if stripped.startswith(("{", "[")):
        return f"truncated or malformed JSON, {len(text)} chars"
    return f"{len(text)} chars"


def _gateway_summary(body: object) -> str:
    if isinstance(body, dict):
        parts = [str(body[k])[:80] for k in ("status", "error") if k in body]
        if parts:
            return " ".join(parts)
    return f"JSON {type(body).__name__} without code"


def _code_error(code: int, message: object, text: str, facts: dict[str, Any]) -> UpstreamError:
    family = _CODE_FAMILY.get(code, UnknownCode)
    if isinstance(message, str) and message:
        msg = message[:200]
    else:
        msg = _DEFAULT_MESSAGE.get(code, "upstream error")
    if family is UnknownCode:
        msg = f"undocumented code: {msg}"
    return family(msg, code=code, raw_body=text[:ERROR_BODY_KEEP], **facts)


def _date_bounds(today: date | None) -> tuple[date, date]:
    if today is None:
        return OLDEST_DATE, date.max
    return max(OLDEST_DATE, today - MAX_DATE_AGE), today + MAX_DATE_AHEAD


def _parse_data(data: object, record_time: object, bounds: tuple[date, date]) -> CoreData:
    if not isinstance(data, dict):
        raise _BadData(f"data is {type(data).__name__}, expected an object")
    raw_daily = data.get("dailyData")
    if raw_daily is None:
        raw_daily = []
    if not isinstance(raw_daily, list):
        raise _BadData("dailyData is not a list")
    by_date: dict[date, DailyPoint] = {}
    for index, raw in enumerate(raw_daily):
        point = _parse_point(raw, f"dailyData[{index}]", bounds)
        by_date.pop(point.date_key, None)  # an exact duplicate date: the later one wins
        by_date[point.date_key] = point
    daily = tuple(sorted(by_date.values(), key=lambda p: p.date_key))
    raw_sum = data.get("sumData")
    if raw_sum is not None:
        summary = _parse_point(raw_sum, "sumData", bounds)
    elif daily:
        summary = daily[-1]  # sumData equals the newest point in every capture
    else:
        raise _BadData("neither sumData nor dailyData present")
    return CoreData(summary=summary, daily=daily, record_time=_parse_record_time(record_time))


def _parse_point(raw: object, where: str, bounds: tuple[date, date]) -> DailyPoint:
    if not isinstance(raw, dict):
        raise _BadData(f"{where} is {type(raw).__name__}, expected an object")
    key = raw.get("dateKey")
    if not isinstance(key, str) or not _DATE_RE.match(key):
        raise _BadData(f"{where}.dateKey is {key!r:.40}, expected YYYY-MM-DD")
    try:
        date_key = date.fromisoformat(key)
    except ValueError:
        raise _BadData(f"{where}.dateKey {key!r} is not a date") from None
    oldest, newest = bounds
    if not oldest <= date_key <= newest:
        # one bad date makes the whole answer suspect, and a far-future one would stay the
        # series' newest point until that day came: refuse the answer, keep its body
        raise _BadData(f"{where}.dateKey {key} is outside {oldest}..{newest}")
    values: dict[str, Any] = {}
    for api_name, field_name in _INT_KEYS.items():
        number = _number(raw.get(api_name), f"{where}.{api_name}")
        # medians can arrive as floats; the column is an integer count
        values[field_name] = None if number is None else round(number)
    for name in _COST_KEYS:
        number = _number(raw.get(name), f"{where}.{name}")
        values[name] = None if not number else float(number)  # 0 means "no price", not free
    return DailyPoint(date_key=date_key, **values)


_MAX_METRIC = 2**63 - 1


def _number(value: object, where: str) -> float | int | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise _BadData(f"{where} is a boolean")
    if isinstance(value, int | float):
        number: float | int = value
    elif isinstance(value, str):
        try:
            number = int(value) if value.strip().lstrip("-").isdigit() else float(value)
        except ValueError:
            raise _BadData(f"{where} is {value!r:.40}, expected a number") from None
    else:
        raise _BadData(f"{where} is {type(value).__name__}, expected a number")
    if isinstance(number, float) and not math.isfinite(number):
        raise _BadData(f"{where} is not finite")
    if number < 0:
        raise _BadData(f"{where} is negative ({number})")
    if number > _MAX_METRIC:
        # a BIGINT column (and any sane metric) ends here; larger is a broken body, not data
        raise _BadData(f"{where} is out of range (over {_MAX_METRIC})")
    return number


def _parse_record_time(value: object) -> datetime | None:
    if value is None:
        return None
    match = _RECORD_TIME_RE.match(value) if isinstance(value, str) else None
    if match is None:
        raise _BadData(f"recordTime is {value!r:.40}, expected local ISO time")
    day, hour, minute, second, fraction, offset = match.groups()
    micro = int((fraction or "0").ljust(9, "0")[:6])  # nanosecond digits: keep microseconds
    stamp = f"{day}T{hour}:{minute}:{second}.{micro:06d}"
    if offset:
        local = datetime.fromisoformat(stamp + offset.replace("Z", "+00:00"))
    else:
        local = datetime.fromisoformat(stamp).replace(tzinfo=UPSTREAM_TZ)
    return local.astimezone(UTC)


# --------------------------------------------------------------------------- the wire


class _TokenTransport(httpx.AsyncBaseTransport):
    """Adds ``token`` to the one request that goes on the wire.

    httpx logs, exceptions and ``response.request`` all refer to the request the client built,
    which never holds the token; only this copy, handed straight to the socket layer, does.
    """

    def __init__(self, inner: httpx.AsyncBaseTransport, token: SecretStr) -> None:
        self._inner = inner
        self._token = token

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        wire = httpx.Request(
            request.method,
            request.url.copy_add_param("token", self._token.get_secret_value()),
            headers=request.headers,
            stream=request.stream,
            extensions=request.extensions,
        )
        return await self._inner.handle_async_request(wire)

    async def aclose(self) -> None:
        await self._inner.aclose()


class JustOneClient:
    """One ``httpx.AsyncClient`` for the process; ``core_data`` makes exactly one call.

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
            retries=connect_retries,  # connection failures only: a request never sent is not billed
            limits=httpx.Limits(max_connections=max_connections),
        )
        # httpx times each read; a body trickled byte by byte never trips that, so the whole
        # call is bounded too
        self._deadline = timeout.total_seconds()
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            transport=_TokenTransport(inner, token),
            timeout=httpx.Timeout(timeout.total_seconds()),
            headers={"Accept": "application/json", "User-Agent": "creator-monitor"},
            follow_redirects=False,
        )

    @classmethod
    def from_config(
        cls, api: ApiConfig, token: SecretStr, *, clock: Callable[[], datetime] | None = None
    ) -> Self:
        """Build from the ``[api]`` section of the config."""
        return cls(
            base_url=api.base_url,
            token=token,
            timeout=api.timeout,
            max_response_bytes=api.max_response_bytes,
            connect_retries=api.connect_retries,
            clock=clock,
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

    async def core_data(self, user_id: str, variant: Variant | None = None) -> FetchResult:
        """One call for one creator and variant; every failure is an ``UpstreamError``."""
        params = {"userId": user_id, **(variant or Variant()).query()}
        started = self._monotonic()
        headers: httpx.Headers | None = None
        now = self._clock() if self._clock is not None else None
        try:
            status, headers, body = await self._get(CORE_DATA_PATH, params, started)
            latency_ms = self._elapsed_ms(started)
            # redacted whole before anything is cut from it: a message, the kept body
            text = self._redact(body.decode("utf-8", errors="replace"))
            today = now.astimezone(UPSTREAM_TZ).date() if now is not None else None
            return parse_core_data(text, http_status=status, latency_ms=latency_ms, today=today)
        except UpstreamError as exc:
            if isinstance(exc, RateLimited):
                exc.retry_after = parse_retry_after(
                    headers.get("retry-after") if headers is not None else None,
                    now or datetime.now(UTC),
                )
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
            raise TransportError(
                message, latency_ms=self._elapsed_ms(started), billed=False
            ) from exc

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
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.ProxyError):
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
