"""The follower-history source: its path, its query and its parser into daily follower counts.

Pure (no I/O, no clock), like monitor/upstream/parse.py, whose envelope handling and bounds it
shares. Reads ``increaseType = FANS_TOTAL`` answers only; must not store or derive growth.
"""

from __future__ import annotations

from datetime import date

from monitor.errors import UnreadableAnswer
from monitor.model import Answer, DateType, FollowerHistory, FollowerPoint
from monitor.upstream.parse import (
    BadData,
    body_text,
    date_bounds,
    parse_record_time,
    read_day,
    read_envelope,
    read_number,
)

SOURCE = "fans"
FANS_PATH = "/api/xiaohongshu-pgy/api/solar/kol/data/userId/fans_overall_new_history/v1"
#: the follower count per day (``FANS_INCREASE``, new followers per day, has no sample)
INCREASE_TYPE = "FANS_TOTAL"


def fans_params(user_id: str, date_type: DateType = DateType.DAY_30) -> dict[str, str]:
    """The query of one follower-history call (without the token)."""
    return {"userId": user_id, "dateType": date_type.value, "increaseType": INCREASE_TYPE}


def parse_fans(
    body: str | bytes, *, http_status: int = 200, latency_ms: int = 0, today: date | None = None
) -> Answer[FollowerHistory]:
    """One follower-history body: the daily counts, or the matching UpstreamError.

    ``fansNumInc`` and ``fansNumIncRate`` are derivable from the counts and not read. A code 0
    answer whose ``data`` cannot be read raises ``UnreadableAnswer`` with the whole body.
    ``today`` bounds the dates as for core_data. The body must already be redacted.
    """
    text = body_text(body)
    envelope = read_envelope(text, http_status=http_status, latency_ms=latency_ms)
    try:
        history = _history(envelope.get("data"), envelope.get("recordTime"), today)
    except BadData as exc:
        raise UnreadableAnswer(
            f"unreadable follower history: {exc}",
            source=SOURCE,
            code=0,
            raw_body=text,
            http_status=http_status,
            latency_ms=latency_ms,
        ) from None
    return Answer(history, http_status=http_status, latency_ms=latency_ms, raw_body=text)


def _history(data: object, record_time: object, today: date | None) -> FollowerHistory:
    if not isinstance(data, dict):
        raise BadData(f"data is {type(data).__name__}, expected an object")
    if "list" not in data:
        raise BadData("data has no list")  # another endpoint's shape, or a new one
    raw_list = data["list"]
    if raw_list is None:
        raw_list = []  # a creator without data
    if not isinstance(raw_list, list):
        raise BadData(f"list is {type(raw_list).__name__}, expected a list")
    bounds = date_bounds(today)
    by_day: dict[date, FollowerPoint] = {}
    for index, raw in enumerate(raw_list):
        where = f"list[{index}]"
        if not isinstance(raw, dict):
            raise BadData(f"{where} is {type(raw).__name__}, expected an object")
        day = read_day(raw.get("dateKey"), f"{where}.dateKey", bounds)
        count = read_number(raw.get("num"), f"{where}.num")
        if count is None:
            raise BadData(f"{where}.num is missing")
        if count != int(count):
            raise BadData(f"{where}.num is {count}, expected a whole count")
        by_day[day] = FollowerPoint(day, int(count))  # a repeated day: the later one wins
    points = tuple(by_day[day] for day in sorted(by_day))
    return FollowerHistory(points=points, record_time=parse_record_time(record_time))
