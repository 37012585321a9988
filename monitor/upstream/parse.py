"""Turning one core_data body of any shape into a ``FetchResult`` or the matching typed error.

Pure (no I/O, no clock): the client calls it on every answer, and stored raw bodies are
re-parsed with it. Owns the code-to-error mapping and the bounds on data dates and numbers.
"""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, date, datetime, timedelta
from typing import Any, Protocol, TypeVar
from zoneinfo import ZoneInfo

from monitor.errors import (
    AccountBlocked,
    InvalidRequest,
    NoContent,
    QuotaExceeded,
    RateLimited,
    Retryable,
    UnknownCode,
    UnreadableAnswer,
    UpstreamError,
)
from monitor.model import CoreData, DailyPoint, FetchResult

UPSTREAM_TZ = ZoneInfo("Asia/Shanghai")
T_co = TypeVar("T_co", covariant=True)
#: error bodies (HTML pages, gateway JSON) are kept only this long for the fetches table
ERROR_BODY_KEEP = 2000
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


class BodyParser(Protocol[T_co]):
    """How every source reads one body: ``parse(body, http_status=…, latency_ms=…,
    today=…)`` returns its typed answer or raises the matching UpstreamError. ``today`` is
    the upstream's day when the answer came (for a kept body: the day it was fetched)."""

    def __call__(
        self,
        body: str | bytes,
        *,
        http_status: int = 200,
        latency_ms: int = 0,
        today: date | None = None,
    ) -> T_co: ...


class BadData(ValueError):
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
    text = body_text(body)
    envelope = read_envelope(text, http_status=http_status, latency_ms=latency_ms)
    try:
        data = _parse_data(envelope.get("data"), envelope.get("recordTime"), date_bounds(today))
    except BadData as exc:
        raise UnreadableAnswer(
            f"unreadable data: {exc}",
            source="core",
            code=0,
            raw_body=text,
            http_status=http_status,
            latency_ms=latency_ms,
        ) from None
    return FetchResult(data=data, http_status=http_status, latency_ms=latency_ms, raw_body=text)


def body_text(body: str | bytes) -> str:
    """A body as text; undecodable bytes become U+FFFD rather than an error."""
    return body.decode("utf-8", errors="replace") if isinstance(body, bytes) else body


def read_envelope(text: str, *, http_status: int = 200, latency_ms: int = 0) -> dict[str, Any]:
    """The envelope of a ``code`` 0 answer of any endpoint; every other shape raises its
    UpstreamError (non-JSON, a gateway body, a non-integer code, an error code)."""
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
    return envelope


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


def date_bounds(today: date | None) -> tuple[date, date]:
    if today is None:
        return OLDEST_DATE, date.max
    return max(OLDEST_DATE, today - MAX_DATE_AGE), today + MAX_DATE_AHEAD


def _parse_data(data: object, record_time: object, bounds: tuple[date, date]) -> CoreData:
    if not isinstance(data, dict):
        raise BadData(f"data is {type(data).__name__}, expected an object")
    raw_daily = data.get("dailyData")
    if raw_daily is None:
        raw_daily = []
    if not isinstance(raw_daily, list):
        raise BadData("dailyData is not a list")
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
        raise BadData("neither sumData nor dailyData present")
    return CoreData(summary=summary, daily=daily, record_time=parse_record_time(record_time))


def _parse_point(raw: object, where: str, bounds: tuple[date, date]) -> DailyPoint:
    if not isinstance(raw, dict):
        raise BadData(f"{where} is {type(raw).__name__}, expected an object")
    date_key = read_day(raw.get("dateKey"), f"{where}.dateKey", bounds)
    values: dict[str, Any] = {}
    for api_name, field_name in _INT_KEYS.items():
        value = raw.get(api_name)
        if type(value) is int and 0 <= value <= _MAX_METRIC:
            values[field_name] = value  # what the API sends: nothing to check or convert
            continue
        number = read_number(value, f"{where}.{api_name}")
        # medians can arrive as floats; the column is an integer count
        values[field_name] = None if number is None else round(number)
    for name in _COST_KEYS:
        value = raw.get(name)
        if (type(value) is int or type(value) is float) and 0 <= value <= _MAX_METRIC:
            values[name] = float(value) if value else None  # as below, without the checks
            continue
        number = read_number(value, f"{where}.{name}")
        values[name] = None if not number else float(number)  # 0 means "no price", not free
    return DailyPoint(date_key=date_key, **values)


def read_day(key: object, where: str, bounds: tuple[date, date]) -> date:
    """A ``YYYY-MM-DD`` value inside ``bounds``, else BadData."""
    if not isinstance(key, str) or not _DATE_RE.match(key):
        raise BadData(f"{where} is {key!r:.40}, expected YYYY-MM-DD")
    try:
        day = date.fromisoformat(key)
    except ValueError:
        raise BadData(f"{where} {key!r} is not a date") from None
    oldest, newest = bounds
    if not oldest <= day <= newest:
        # one bad date makes the whole answer suspect, and a far-future one would stay the
        # series' newest point until that day came: refuse the answer, keep its body
        raise BadData(f"{where} {key} is outside {oldest}..{newest}")
    return day


_MAX_METRIC = 2**63 - 1


def read_number(value: object, where: str) -> float | int | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise BadData(f"{where} is a boolean")
    if isinstance(value, int | float):
        number: float | int = value
    elif isinstance(value, str):
        try:
            number = int(value) if value.strip().lstrip("-").isdigit() else float(value)
        except ValueError:
            raise BadData(f"{where} is {value!r:.40}, expected a number") from None
    else:
        raise BadData(f"{where} is {type(value).__name__}, expected a number")
    if isinstance(number, float) and not math.isfinite(number):
        raise BadData(f"{where} is not finite")
    if number < 0:
        raise BadData(f"{where} is negative ({number})")
    if number > _MAX_METRIC:
        # a BIGINT column (and any sane metric) ends here; larger is a broken body, not data
        raise BadData(f"{where} is out of range (over {_MAX_METRIC})")
    return number


def parse_record_time(value: object) -> datetime | None:
    if value is None:
        return None
    match = _RECORD_TIME_RE.match(value) if isinstance(value, str) else None
    if match is None:
        raise BadData(f"recordTime is {value!r:.40}, expected local ISO time")
    day, hour, minute, second, fraction, offset = match.groups()
    micro = int((fraction or "0").ljust(9, "0")[:6])  # nanosecond digits: keep microseconds
    stamp = f"{day}T{hour}:{minute}:{second}.{micro:06d}"
    if offset:
        local = datetime.fromisoformat(stamp + offset.replace("Z", "+00:00"))
    else:
        local = datetime.fromisoformat(stamp).replace(tzinfo=UPSTREAM_TZ)
    return local.astimezone(UTC)


# --------------------------------------------------------------------------- the wire
