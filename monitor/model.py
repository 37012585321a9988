"""Frozen value types that flow between the parts: variants, metric points, fetch results.

Nothing here does I/O or reads a clock; these are the nouns every other module shares.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any, Generic, TypeVar


class Business(StrEnum):
    DAILY_NOTE = "DAILY_NOTE"
    COOPERATE_NOTE = "COOPERATE_NOTE"


class NoteType(StrEnum):
    PHOTO_TEXT_AND_VIDEO = "PHOTO_TEXT_AND_VIDEO"
    PHOTO_TEXT = "PHOTO_TEXT"
    VIDEO = "VIDEO"


class DateType(StrEnum):
    DAY_30 = "DAY_30"
    DAY_90 = "DAY_90"


class Advertise(StrEnum):
    ALL = "ALL"
    ORGANIC_ONLY = "ORGANIC_ONLY"


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


#: metrics as the API names them (``thirdUserNum`` becomes ``third_user_num``)
INT_METRICS: tuple[str, ...] = ("imp", "read", "engage", "third_user_num")
COST_METRICS: tuple[str, ...] = ("cpm", "cpe", "cpv", "cpuv")
METRICS: tuple[str, ...] = ("imp", "read", "engage", "cpm", "cpe", "cpv", "cpuv", "third_user_num")
#: derived metric -> (numerator, denominator)
DERIVED_METRICS: dict[str, tuple[str, str]] = {
    "engage_rate": ("engage", "read"),
    "read_rate": ("read", "imp"),
}
ALL_METRICS: tuple[str, ...] = METRICS + tuple(DERIVED_METRICS)
#: the metric of a creator's follower series (the ``fans`` source): the daily follower count
FOLLOWER_METRIC = "fans"
#: a note's totals as the note list shows them (what a ``note`` rule compares)
NOTE_METRICS: tuple[str, ...] = ("reads", "likes", "collects")
#: how a metric is called in messages, per language
METRIC_LABELS: dict[str, dict[str, str]] = {
    "en": {
        "imp": "impressions",
        "read": "reads",
        "engage": "engagements",
        "cpm": "CPM",
        "cpe": "CPE",
        "cpv": "CPV",
        "cpuv": "CPUV",
        "third_user_num": "store visitors",
        "engage_rate": "engagement rate",
        "read_rate": "read rate",
        "fans": "followers",
        "reads": "reads",
        "likes": "likes",
        "collects": "collects",
    },
    "zh": {
        "imp": "曝光",
        "read": "阅读",
        "engage": "互动",
        "cpm": "CPM",
        "cpe": "CPE",
        "cpv": "CPV",
        "cpuv": "CPUV",
        "third_user_num": "进店人数",
        "engage_rate": "互动率",
        "read_rate": "阅读率",
        "fans": "粉丝数",
        "reads": "阅读",
        "likes": "点赞",
        "collects": "收藏",
    },
}
#: a rule's comparison (``op``) as a function
OPS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
}
#: a comparison and the one that holds when it does not ("back to 102 (≥ 100)")
NEGATED_OPS: dict[str, str] = {"<": "≥", "<=": ">", ">": "≤", ">=": "<", "==": "≠", "!=": "="}


#: the endpoints a creator's series come from (issue sources): ``core`` is today's core_data,
#: ``fans`` the follower history, ``notes`` the creator note list
CORE, FANS, NOTES = "core", "fans", "notes"


@dataclass(frozen=True, slots=True)
class Variant:
    """What, with a userId, names one upstream series: the source (the endpoint) and the four
    query parameters core_data takes. A ``fans`` series reads only ``date_type`` (how many days
    one call backfills); a ``notes`` series none of them (see ``for_source``)."""

    business: Business = Business.DAILY_NOTE
    note_type: NoteType = NoteType.PHOTO_TEXT_AND_VIDEO
    date_type: DateType = DateType.DAY_30
    advertise: Advertise = Advertise.ALL
    source: str = CORE

    @classmethod
    def for_source(cls, source: str, date_type: DateType = DateType.DAY_30) -> Variant:
        """The one series a creator has of ``fans`` (over ``date_type``) or ``notes``; the
        other parameters keep their defaults, so equal series are equal values."""
        if source == FANS:
            return cls(date_type=date_type, source=FANS)
        if source == NOTES:
            return cls(source=NOTES)
        raise ValueError(f"a {source!r} series is a core_data variant, not a source series")

    def query(self) -> dict[str, str]:
        """The upstream query parameters for this variant (without token and userId)."""
        return {
            "business": self.business.value,
            "noteType": self.note_type.value,
            "dateType": self.date_type.value,
            "advertiseSwitch": self.advertise.value,
        }

    @property
    def label(self) -> str:
        """The series' name after the user id: core_data's four values (as before sources), or
        ``fans/DAY_30`` and ``notes``."""
        if self.source == FANS:
            return f"{FANS}/{self.date_type.value}"
        if self.source == NOTES:
            return NOTES
        return "/".join(
            (self.business.value, self.note_type.value, self.date_type.value, self.advertise.value)
        )

    @property
    def core(self) -> bool:
        """A core_data series (the daily metrics), not a source's."""
        return self.source == CORE


@dataclass(frozen=True, slots=True)
class DailyPoint:
    """One dated point of the series. Cost 0 from the API is None here ("no price")."""

    date_key: date
    imp: int | None = None
    read: int | None = None
    engage: int | None = None
    cpm: float | None = None
    cpe: float | None = None
    cpv: float | None = None
    cpuv: float | None = None
    third_user_num: int | None = None

    def value(self, metric: str) -> float | None:
        """A stored or derived metric; a derived one is None when its denominator is 0/None."""
        if metric in DERIVED_METRICS:
            num_name, den_name = DERIVED_METRICS[metric]
            num, den = getattr(self, num_name), getattr(self, den_name)
            if num is None or not den:
                return None
            return float(num) / float(den)
        raw = getattr(self, metric)
        return None if raw is None else float(raw)


@dataclass(frozen=True, slots=True)
class CoreData:
    """A successful core_data response: ``sumData`` and every ``dailyData`` point (ascending)."""

    summary: DailyPoint
    daily: tuple[DailyPoint, ...]
    record_time: datetime | None = None  # upstream collection time, converted to UTC


@dataclass(frozen=True, slots=True)
class FetchResult:
    """What one successful call returned, with the facts the ``fetches`` table records."""

    data: CoreData
    http_status: int
    latency_ms: int
    raw_body: str  # the response body as received; never contains the token
    code: int = 0
    billed: bool = True


# --- the sources beyond core_data: follower history, the note list, the account balance


@dataclass(frozen=True, slots=True)
class FollowerPoint:
    """The creator's follower count on one (Asia/Shanghai) day."""

    date_key: date
    fans: int

    def value(self, metric: str) -> float | None:
        """The count as a rule reads it (``fans``); None for any other metric."""
        return float(self.fans) if metric == FOLLOWER_METRIC else None


#: one dated point of a series a metric rule reads: core_data's, or the follower count
SeriesPoint = DailyPoint | FollowerPoint


@dataclass(frozen=True, slots=True)
class FollowerHistory:
    """A follower-history answer: one count per day, ascending (empty: no data)."""

    points: tuple[FollowerPoint, ...]
    record_time: datetime | None = None  # upstream collection time, converted to UTC


@dataclass(frozen=True, slots=True)
class Note:
    """What does not change about a note once published."""

    note_id: str  # 24 lowercase hex
    title: str
    published: date  # the publishing day, Asia/Shanghai
    video: bool
    ad: bool  # the platform marks it an advertisement
    brand: str | None = None  # the brand of a cooperation note

    @property
    def cooperation(self) -> bool:
        """A paid note: marked as an ad, or naming a brand (live answers show brand notes
        with ``isAdvertise`` false)."""
        return self.ad or self.brand is not None

    @property
    def url(self) -> str:
        return note_url(self.note_id)


def note_url(note_id: str) -> str:
    """A note's public page."""
    return f"https://www.xiaohongshu.com/explore/{note_id}"


@dataclass(frozen=True, slots=True)
class NoteStats:
    """A note's totals so far, as one answer showed them (None: not in the answer)."""

    reads: int | None = None
    likes: int | None = None
    collects: int | None = None


@dataclass(frozen=True, slots=True)
class NoteObservation:
    """A note's totals as one note-list page showed them."""

    seen_at: datetime
    stats: NoteStats


@dataclass(frozen=True, slots=True)
class NoteRecord:
    """A stored note, when the monitor first listed it, and its first and latest observation
    (the same one when it was seen once)."""

    note: Note
    first_seen_at: datetime
    first: NoteObservation
    latest: NoteObservation

    def growth(self, metric: str) -> int | None:
        """How much ``metric`` (``reads``, ``likes``, ``collects``) grew since first seen;
        None when either observation lacks it."""
        old, new = getattr(self.first.stats, metric), getattr(self.latest.stats, metric)
        return None if old is None or new is None else new - old


@dataclass(frozen=True, slots=True)
class NotesWanted:
    """Which of a creator's stored notes its note rules may speak of: those first listed at or
    after ``seen_since``, or published on or after ``published_since`` (None: no bound of that
    kind asked for)."""

    seen_since: datetime | None = None
    published_since: date | None = None


@dataclass(frozen=True, slots=True)
class ListedNote:
    """One entry of the note list: the note and its totals when the page was read."""

    note: Note
    stats: NoteStats


@dataclass(frozen=True, slots=True)
class NotePage:
    """One page of the creator note list, in the upstream's order (newest first for
    ``LATEST``). ``total`` counts all the creator's notes (None: not in the answer)."""

    page: int
    notes: tuple[ListedNote, ...]
    total: int | None = None
    record_time: datetime | None = None


@dataclass(frozen=True, slots=True)
class Balance:
    """The account balance: exact money, never a float."""

    amount: Decimal
    currency: str = "CNY"
    record_time: datetime | None = None


SourceData = TypeVar("SourceData")


@dataclass(frozen=True, slots=True)
class Answer(Generic[SourceData]):
    """One successful call of a source beyond core_data, with the facts a fetch row records
    (``FetchResult`` is core_data's)."""

    data: SourceData
    http_status: int
    latency_ms: int
    raw_body: str  # the response body as received; never contains the token
    code: int = 0
    billed: bool = True


@dataclass(frozen=True, slots=True)
class Creator:
    """A tracked creator as the config names it."""

    user_id: str
    name: str = ""
    tags: tuple[str, ...] = field(default_factory=tuple)

    @property
    def pgy_url(self) -> str:
        return f"https://pgy.xiaohongshu.com/solar/pre-trade/blogger-detail/{self.user_id}"


#: the rule kinds that are events about one note: each fires once per note (its alert's variant
#: is ``note_variant(note_id)``), never repeats and never sends a resolution
EVENT_KINDS: frozenset[str] = frozenset({"new_note", "note"})
#: how an event alert's ``variant`` starts: ``note:<noteId>``
NOTE_VARIANT_PREFIX = "note:"


def note_variant(note_id: str) -> str:
    """The ``AlertState.variant`` of an event about one note: ``note:<24 hex>``."""
    return f"{NOTE_VARIANT_PREFIX}{note_id}"


# --- rule outcomes: made by rules.py, folded into AlertState by lifecycle.py (leaves that must not
# import each other, so the noun they share lives here)


class Verdict(StrEnum):
    FIRING = "firing"
    CLEAR = "clear"
    UNKNOWN = "unknown"  # not enough data: the alert state is left as it is


@dataclass(frozen=True, slots=True)
class Finding:
    """Why a rule fires (or the reading that cleared it). ``details`` holds JSON-ready values."""

    summary: str
    metric: str | None = None
    value: float | None = None
    baseline: float | None = None  # the value compared against (previous point, median …)
    change_abs: float | None = None
    change_pct: float | None = None
    newest_date: date | None = None
    baseline_date: date | None = None
    details: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Outcome:
    """One rule evaluation. ``scope`` is the creator's user_id or ``'account'``."""

    verdict: Verdict
    scope: str
    finding: Finding | None = None  # FIRING: the reason; CLEAR: the reading, when there is one
    reason: str = ""  # UNKNOWN: why the rule could not decide

    @property
    def firing(self) -> bool:
        return self.verdict is Verdict.FIRING


# --- the alert row: written by policy.lifecycle (pure), stored by store/outbox.py (leaves again)


class Phase(StrEnum):
    PENDING = "pending"
    FIRING = "firing"
    RESOLVED = "resolved"


#: ``AlertState.variant`` of an account-wide alert (and of rows stored before alerts had one)
NO_VARIANT = ""


@dataclass(frozen=True, slots=True)
class AlertState:
    """One row of the ``alerts`` table, field for field. Times are aware UTC datetimes.

    Identity: (rule, scope, variant); ``variant`` is the series' ``Variant.label``, '' for an
    account-wide alert. ``hits``: consecutive FIRING evaluations; ``clears``: consecutive CLEARs
    while firing; ``firing_sent``: the 'firing' event was emitted (the glue writes it to the
    outbox in the same transaction), so a resolution is owed; ``repeats_sent``: 'repeat' events
    emitted so far.
    """

    rule: str
    scope: str  # the creator's user_id, or 'account'
    severity: Severity
    state: Phase
    variant: str = NO_VARIANT
    id: int | None = None  # None until the glue inserts the row
    creator_id: int | None = None  # None: account-wide
    metric: str | None = None
    value: float | None = None
    baseline: float | None = None
    pending_since: datetime | None = None
    fired_at: datetime | None = None
    resolved_at: datetime | None = None
    last_seen_at: datetime | None = None
    hits: int = 0
    clears: int = 0
    firing_sent: bool = False
    last_notified_at: datetime | None = None
    repeats_sent: int = 0
    summary: str = ""
    details: Mapping[str, Any] = field(default_factory=dict)
    acked_at: datetime | None = None  # acknowledged: repeats stop until it resolves
    acked_by: str | None = None

    @property
    def open(self) -> bool:
        return self.state is not Phase.RESOLVED
