"""Deterministic, plausible answers of the simulated follower-history and note-list endpoints
(pure: no I/O, no clock; monitor/upstream/sim_state.py serves them).

Followers: a per-creator trend (a quarter of creators lose followers) with slow drift and daily
noise, a function of (userId, day) so every window agrees with the last. Notes: each creator
posts at its own rate since its own first day; a note's reads grow along a saturating curve
``peak * (1 - exp(-age / tau))`` and likes and collects follow them.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from functools import lru_cache
from itertools import islice
from typing import Any
from zoneinfo import ZoneInfo

from monitor.model import DateType
from monitor.upstream.series import WINDOW_DAYS, Script, unit

SHANGHAI = ZoneInfo("Asia/Shanghai")
#: the day a creator's follower count is at its base level (the trend runs from here)
EPOCH = date(2025, 1, 1)
#: share of creators whose followers fall
LOSING_SHARE = 0.25
PAGE_SIZE = 8
#: how far back a creator's first note can lie before ``EPOCH``
HISTORY_DAYS = 700
INCREASE_TYPES = ("FANS_TOTAL", "FANS_INCREASE")
ORDER_TYPES = ("LATEST", "MOST_READ", "MOST_INTERACT")
NOTE_TYPES = ("ALL", "COOPERATION", "PHOTO_TEXT", "VIDEO")
ADVERTISE = ("ALL", "ORGANIC_ONLY")
THIRD_PLATFORM = ("NO", "YES")
TITLES = (
    "冬季宿舍好物分享～",
    "租房平价厨具分享",
    "一周通勤穿搭合集",
    "新手也能学会的早餐",
    "周末城市漫步路线",
    "平价护肤品真实测评",
    "我的读书笔记｜十二月",
    "家居收纳小技巧",
    "First week in a new city",
    "小户型客厅改造记录",
    "健身三个月的变化",
    "一个人的旅行vlog",
)
BRANDS = ("漫步者蓝牙耳机", "小米生活", "花西子", "安踏", "蕉下", "元气森林")


# --------------------------------------------------------------------------- followers


def fans_trend(user_id: str) -> float:
    """The creator's daily growth rate: -0.2 % … 0 for the losing quarter, 0 … +0.15 % else."""
    u = unit(user_id, "fans-trend")
    if u < LOSING_SHARE:
        return -0.002 * (1 - u / LOSING_SHARE)
    return 0.0015 * (u - LOSING_SHARE) / (1 - LOSING_SHARE)


def fans_base(user_id: str) -> float:
    """The creator's follower count at ``EPOCH``, before drift and noise: 1 000 … 2 000 000."""
    return 1_000 * math.exp(unit(user_id, "fans-base") * math.log(2_000))


def follower_count(user_id: str, day: date, scripts: Sequence[Script] = ()) -> int:
    """Followers on ``day``: base × trend, a slow drift of ±0.3 % and a daily noise of ±0.02 %."""
    n = day.toordinal()
    level = fans_base(user_id) * math.exp(fans_trend(user_id) * (n - EPOCH.toordinal()))
    period = 20 + int(unit(user_id, "fans-period") * 20)
    drift = 0.003 * math.sin(2 * math.pi * (n / period + unit(user_id, "fans-phase")))
    noise = 0.0004 * (unit(user_id, "fans-noise", n) - 0.5)
    count = level * (1 + drift + noise)
    for script in scripts:
        if script.metric == "fans" and day >= script.since:
            count *= script.factor
    return max(0, round(count))


@dataclass(frozen=True, slots=True)
class FansQuery:
    date_type: DateType
    increase_type: str

    @property
    def label(self) -> str:
        return f"{self.date_type.value}/{self.increase_type}"


def read_fans_query(query: Mapping[str, str]) -> FansQuery:
    """The follower-history parameters (upstream defaults); ValueError if one is invalid."""
    increase = query.get("increaseType", "FANS_TOTAL")
    if increase not in INCREASE_TYPES:
        raise ValueError(increase)
    return FansQuery(DateType(query.get("dateType", DateType.DAY_30)), increase)


def fans_data(
    user_id: str, ask: FansQuery, today: date, scripts: Sequence[Script] = ()
) -> dict[str, Any]:
    """``data`` as the upstream sends it: T-1 back over the window, ascending."""
    newest = today - timedelta(days=1)
    days = [newest - timedelta(days=k) for k in range(WINDOW_DAYS[ask.date_type] - 1, -1, -1)]
    counts = [follower_count(user_id, d, scripts) for d in days]
    if ask.increase_type == "FANS_INCREASE":
        before = follower_count(user_id, days[0] - timedelta(days=1), scripts)
        nums = [b - a for a, b in zip([before, *counts], counts, strict=False)]
    else:
        nums = counts
    inc = counts[-1] - counts[0]
    return {
        "fansNumInc": inc,
        "fansNumIncRate": round(inc / counts[0], 4) if counts[0] else 0,
        "list": [{"num": num, "dateKey": d.isoformat()} for num, d in zip(nums, days, strict=True)],
    }


def empty_fans() -> dict[str, Any]:
    return {"fansNumInc": 0, "fansNumIncRate": 0, "list": []}


# --------------------------------------------------------------------------- notes


@dataclass(frozen=True, slots=True)
class SimNote:
    """One simulated note and the curve its totals follow."""

    note_id: str
    title: str
    published: datetime  # aware
    video: bool
    ad: bool
    brand: str | None
    peak_reads: float
    tau_hours: float
    like_rate: float
    collect_rate: float  # of likes

    def totals(self, now: datetime) -> tuple[int, int, int]:
        """(reads, likes, collects) at ``now``: never falling, saturating at the peak."""
        age_h = max(0.0, (now - self.published).total_seconds() / 3600)
        reads = self.peak_reads * (1 - math.exp(-age_h / self.tau_hours))
        likes = reads * self.like_rate
        return round(reads), round(likes), round(likes * self.collect_rate)

    def item(self, now: datetime) -> dict[str, Any]:
        """The note as a list entry (API key names)."""
        reads, likes, collects = self.totals(now)
        return {
            "noteId": self.note_id,
            "title": self.title,
            "date": self.published.astimezone(SHANGHAI).date().isoformat(),
            "readNum": reads,
            "likeNum": likes,
            "collectNum": collects,
            "isAdvertise": self.ad,
            "isVideo": self.video,
            "brandName": self.brand,
            "imgUrl": f"http://ci.xiaohongshu.com/{self.note_id}?imageView2/2/w/540/format/jpg",
            "thirdReadUserNum": 0,
        }


def note_id(published: datetime, *parts: object) -> str:
    """24 hex like the platform's: the publishing second, then 16 stable digits."""
    tail = hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=8).hexdigest()
    return f"{int(published.timestamp()) & 0xFFFFFFFF:08x}{tail}"


def posting_rate(user_id: str) -> float:
    """Notes per day: from one a day to one a week."""
    return 1 / (1 + 6 * unit(user_id, "post-rate"))


def first_day(user_id: str) -> date:
    return EPOCH - timedelta(days=30 + int(unit(user_id, "first") * HISTORY_DAYS))


def posts_on(user_id: str, day: date) -> bool:
    """Whether ``user_id`` publishes a note on ``day`` (Shanghai)."""
    return day >= first_day(user_id) and unit(user_id, "post", day) < posting_rate(user_id)


def publishing_time(user_id: str, day: date) -> datetime:
    minutes = 8 * 60 + int(unit(user_id, "minute", day) * 15 * 60)  # 08:00 … 23:00
    return datetime.combine(day, time(), SHANGHAI) + timedelta(minutes=minutes)


def note_of_day(user_id: str, day: date) -> SimNote | None:
    """The note ``user_id`` publishes on ``day`` (Shanghai), if it posts that day."""
    if not posts_on(user_id, day):
        return None
    published = publishing_time(user_id, day)
    base = 300 * math.exp(unit(user_id, "reads") * math.log(300))  # 300 … 90 000
    spread = math.exp(1.2 * (sum(unit(user_id, "spread", day, i) for i in range(3)) - 1.5))
    hit = 10.0 if unit(user_id, "hit", day) < 0.05 else 1.0
    kind = unit(user_id, "kind", day)
    return SimNote(
        note_id=note_id(published, user_id, day),
        title=TITLES[int(unit(user_id, "title", day) * len(TITLES))],
        published=published,
        video=unit(user_id, "video", day) < unit(user_id, "video-share"),
        ad=kind < 0.10,
        brand=BRANDS[int(unit(user_id, "brand", day) * len(BRANDS))] if kind < 0.15 else None,
        peak_reads=base * spread * hit,
        tau_hours=12 + 60 * unit(user_id, "tau", day),
        like_rate=0.02 + 0.06 * unit(user_id, "like", day),
        collect_rate=0.3 + 0.3 * unit(user_id, "collect", day),
    )


def published_notes(
    user_id: str, now: datetime, extra: Sequence[SimNote] = ()
) -> Iterator[SimNote]:
    """Every note published by ``now``, newest first (``extra``: notes published by a script)."""
    today = now.astimezone(SHANGHAI).date()
    scripted = sorted((n for n in extra if n.published <= now), key=lambda n: n.published)
    day, oldest = today, first_day(user_id)
    while day >= oldest:
        note = note_of_day(user_id, day)
        todays = [n for n in scripted if n.published.astimezone(SHANGHAI).date() == day]
        if note is not None and note.published <= now:
            todays.append(note)
        yield from sorted(todays, key=lambda n: n.published, reverse=True)
        day -= timedelta(days=1)


@dataclass(frozen=True, slots=True)
class NotesQuery:
    order: str
    note_type: str
    advertise: str
    third_platform: str
    page: int

    @property
    def label(self) -> str:
        filters = f"{self.order}/{self.note_type}/{self.advertise}/{self.third_platform}"
        return f"{filters}/page={self.page}"

    def keeps(self, note: SimNote) -> bool:
        if self.advertise == "ORGANIC_ONLY" and note.ad:
            return False
        return {
            "ALL": True,
            "COOPERATION": note.ad or note.brand is not None,
            "PHOTO_TEXT": not note.video,
            "VIDEO": note.video,
        }[self.note_type]


def read_notes_query(query: Mapping[str, str]) -> NotesQuery:
    """The note-list parameters (upstream defaults); ValueError if one is invalid."""
    values = {
        "orderType": (query.get("orderType", "LATEST"), ORDER_TYPES),
        "noteType": (query.get("noteType", "ALL"), NOTE_TYPES),
        "advertiseSwitch": (query.get("advertiseSwitch", "ALL"), ADVERTISE),
        "isThirdPlatform": (query.get("isThirdPlatform", "NO"), THIRD_PLATFORM),
    }
    for name, (value, allowed) in values.items():
        if value not in allowed:
            raise ValueError(f"{name}={value}")
    page_text = query.get("pageNumber", "1")
    if not page_text.isdigit() or not 1 <= int(page_text) <= 10_000:
        raise ValueError(f"pageNumber={page_text}")
    order, note_type, advertise, third_platform = (value for value, _ in values.values())
    return NotesQuery(order, note_type, advertise, third_platform, int(page_text))


def notes_data(
    user_id: str, ask: NotesQuery, now: datetime, extra: Sequence[SimNote] = ()
) -> dict[str, Any]:
    """``data`` of one page: ``total`` counts every matching note, ``list`` holds up to 8."""
    start = (ask.page - 1) * PAGE_SIZE
    if (ask.order, ask.note_type, ask.advertise) == ("LATEST", "ALL", "ALL"):
        # the monitor's query: count cheaply and build only the notes up to this page
        page = list(islice(published_notes(user_id, now, extra), start, start + PAGE_SIZE))
        return {"total": count_notes(user_id, now, extra), "list": [n.item(now) for n in page]}
    notes = [n for n in published_notes(user_id, now, extra) if ask.keeps(n)]
    if ask.order != "LATEST":
        weight = (lambda n: n.totals(now)[0]) if ask.order == "MOST_READ" else _interactions(now)
        notes.sort(key=weight, reverse=True)
    return {"total": len(notes), "list": [n.item(now) for n in notes[start : start + PAGE_SIZE]]}


def count_notes(user_id: str, now: datetime, extra: Sequence[SimNote] = ()) -> int:
    """How many notes ``user_id`` has published by ``now``."""
    today = now.astimezone(SHANGHAI).date()
    count = _posting_days_through(user_id, today.toordinal())
    if posts_on(user_id, today) and publishing_time(user_id, today) > now:
        count -= 1
    return count + sum(n.published <= now for n in extra)


@lru_cache(maxsize=20_000)
def _posting_days_through(user_id: str, last: int) -> int:
    """Days from the creator's first day to day ordinal ``last`` on which it posted (cached:
    a day's answer never changes, and the walk is the costly part of a note-list answer)."""
    rate = posting_rate(user_id)
    days = range(first_day(user_id).toordinal(), last + 1)
    return sum(unit(user_id, "post", date.fromordinal(n)) < rate for n in days)


def _interactions(now: datetime) -> Any:
    return lambda note: sum(note.totals(now)[1:])


def empty_notes() -> dict[str, Any]:
    return {"total": 0, "list": []}


# --------------------------------------------------------------------------- faults


def spoil_core(data: Any) -> None:
    """The ``wrong_type`` fault: one value of ``data`` that no parser can read."""
    data["dailyData"][-1]["read"] = data["sumData"]["read"] = "abc"


def spoil_fans(data: Any) -> None:
    if data["list"]:
        data["list"][-1]["num"] = "abc"
    else:
        data["list"] = "abc"


def spoil_notes(data: Any) -> None:
    if data["list"]:
        data["list"][0]["readNum"] = "abc"
    else:
        data["list"] = "abc"


def spoil_balance(data: Any) -> None:
    data["balance"] = "abc"
