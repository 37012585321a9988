"""The config's value types: durations, clock times, zones and metric names, each parsed with
a one-line message, and the frozen, strict base every section model shares."""

from __future__ import annotations

import re
from datetime import time, timedelta
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from monitor.display import format_duration
from monitor.model import ALL_METRICS, FOLLOWER_METRIC
from monitor.validation import MAX_DURATION, shown_word, unknown

_DURATION_RE = re.compile(
    r"^\s*(?:(\d+)\s*w)?\s*(?:(\d+)\s*d)?\s*(?:(\d+)\s*h)?\s*(?:(\d+)\s*m)?\s*(?:(\d+)\s*s)?\s*$"
)
_CLOCK_RE = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")


def parse_duration(value: object, most: timedelta = MAX_DURATION) -> timedelta:
    """``"90s"``, ``"15m"``, ``"12h"``, ``"7d"``, ``"1d12h"`` → timedelta, greater than zero and
    at most ``most``; never overflows, however many digits it is given."""
    if isinstance(value, timedelta):
        if not timedelta(0) < value <= most:
            raise ValueError(f"duration must be above zero and at most {format_duration(most)}")
        return value
    if not isinstance(value, str):
        raise ValueError(f"expected a duration string like '15m' or '7d', got {value!r}")
    match = _DURATION_RE.match(value)
    if not value.strip() or match is None or not any(match.groups()):
        raise ValueError(f"bad duration {value!r}; use a number with s, m, h, d or w, e.g. '15m'")
    longest = format_duration(most)
    if any(len(g) > 9 for g in match.groups() if g):  # int() and timedelta would overflow
        raise ValueError(f"duration {value!r} is too long; at most {longest}")
    weeks, days, hours, minutes, seconds = (int(g) if g else 0 for g in match.groups())
    total = (((weeks * 7 + days) * 24 + hours) * 60 + minutes) * 60 + seconds
    if total <= 0:
        raise ValueError(f"duration {value!r} must be greater than zero")
    if total > most.total_seconds():
        raise ValueError(f"duration {value!r} is too long; at most {longest}")
    return timedelta(seconds=total)


def parse_clock(value: object) -> time:
    """``"09:00"`` → time."""
    if isinstance(value, time):
        return value
    if not isinstance(value, str) or (m := _CLOCK_RE.match(value.strip())) is None:
        raise ValueError(f"expected a local time 'HH:MM', got {value!r}")
    return time(int(m.group(1)), int(m.group(2)))


def _parse_zone(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected an IANA time zone name, got {value!r}")
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: longer than a file name
        shown = shown_word(value)
        raise ValueError(f"unknown time zone {shown}; e.g. 'Asia/Shanghai' or 'UTC'") from None
    return value


def _up_to(most: timedelta) -> BeforeValidator:
    return BeforeValidator(lambda value: parse_duration(value, most))


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]  # at most ten years
#: durations bounded per key
Hour = Annotated[timedelta, _up_to(timedelta(hours=1))]
Day = Annotated[timedelta, _up_to(timedelta(days=1))]
Week = Annotated[timedelta, _up_to(timedelta(days=7))]
Month = Annotated[timedelta, _up_to(timedelta(days=31))]
Year = Annotated[timedelta, _up_to(timedelta(days=365))]
TimeOfDay = Annotated[time, BeforeValidator(parse_clock)]
ZoneName = Annotated[str, BeforeValidator(_parse_zone)]
Language = Literal["zh", "en"]


class Section(BaseModel):
    model_config = ConfigDict(
        extra="forbid", frozen=True, populate_by_name=True, allow_inf_nan=False
    )


def parse_window(value: str) -> tuple[time, time]:
    """``"22:00-08:00"`` → (start, end); a window may wrap past midnight."""
    start, sep, end = value.partition("-")
    if not sep:
        raise ValueError(f"expected 'HH:MM-HH:MM', got {value!r}")
    first, last = parse_clock(start.strip()), parse_clock(end.strip())
    if first == last:
        raise ValueError(f"window {value!r} is empty")
    return first, last


def _check_metric(value: str) -> str:
    if value not in ALL_METRICS:
        raise ValueError(unknown("metric", value, ALL_METRICS))
    return value


Metric = Annotated[str, BeforeValidator(lambda v: _check_metric(v) if isinstance(v, str) else v)]


#: the sources a creator can be tracked with (issue sources): ``core`` is today's core_data,
#: ``fans`` the follower history, ``notes`` the creator note list
SOURCES: tuple[str, ...] = ("core", "fans", "notes")
#: a ``threshold``/``change``/``anomaly`` rule reads ``FOLLOWER_METRIC`` from the ``fans`` source
SERIES_METRICS: tuple[str, ...] = (*ALL_METRICS, FOLLOWER_METRIC)


def _check_sources(value: object) -> object:
    """A non-empty list of known source names, each once (anything not a list of strings is
    left to the type check and its usual message)."""
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        return value
    if not value:
        raise ValueError('must name at least one source, e.g. ["core"]')
    for name in value:
        if name not in SOURCES:
            raise ValueError(unknown("source", name, SOURCES))
    if len(set(value)) != len(value):
        twice = next(name for name in value if value.count(name) > 1)
        raise ValueError(f"source {twice!r} is listed twice")
    return tuple(value)


SourceName = Literal["core", "fans", "notes"]
Sources = Annotated[tuple[SourceName, ...], BeforeValidator(_check_sources), Field(min_length=1)]


def _check_series_metric(value: str) -> str:
    if value not in SERIES_METRICS:
        raise ValueError(unknown("metric", value, SERIES_METRICS))
    return value


#: a metric of a creator's daily series: a core metric, or ``fans`` (the follower count)
SeriesMetric = Annotated[
    str, BeforeValidator(lambda v: _check_series_metric(v) if isinstance(v, str) else v)
]

#: the shortest ``[account] balance_every``: reading the balance more often only spends calls
MIN_BALANCE_EVERY = timedelta(minutes=1)


def parse_switchable(value: object) -> timedelta | None:
    """A cadence that ``"off"`` disables: ``"1h"`` → timedelta, ``"off"`` → None; between
    1m and 7d."""
    if value == "off" or value is None:
        return None
    if not isinstance(value, str | timedelta):
        raise ValueError(f'expected a duration like "1h", or "off", got {value!r}')
    every = parse_duration(value, timedelta(days=7))
    if every < MIN_BALANCE_EVERY:
        raise ValueError(f'must be at least {format_duration(MIN_BALANCE_EVERY)}, or "off"')
    return every


#: a cadence from 1m to 7d, or ``"off"`` (None)
Switchable = Annotated[timedelta | None, BeforeValidator(parse_switchable)]
