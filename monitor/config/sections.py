"""The config's sections: [api], [budget], [storage], [schedule], [defaults], [[creators]],
[[channels]], [notify], [[reports]], [http], [roster] and [account], as frozen pydantic
models."""

from __future__ import annotations

import re
from datetime import time, timedelta
from pathlib import Path
from typing import Annotated, Literal
from zoneinfo import ZoneInfo

from pydantic import (
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    StrictBool,
    StrictInt,
    field_validator,
    model_validator,
)
from pydantic.dataclasses import dataclass

from monitor.config.fields import (
    Day,
    Duration,
    Hour,
    Language,
    Month,
    Section,
    Sources,
    Switchable,
    TimeOfDay,
    Week,
    Year,
    ZoneName,
    parse_window,
)
from monitor.config.files import file_kind
from monitor.model import Advertise, Business, Creator, DateType, NoteType, Severity
from monitor.validation import userinfo_problem

_USER_ID_RE = re.compile(r"^[0-9a-f]{24}$")
_HEX = "0123456789abcdef"


class ApiConfig(Section):
    base_url: str = "https://api.justoneapi.com"
    token_file: Path | None = None
    timeout: Hour = timedelta(seconds=60)
    max_response_bytes: StrictInt = Field(default=2_000_000, ge=10_000, le=1_000_000_000)
    connect_retries: StrictInt = Field(default=2, ge=0, le=10)

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^\s/?#]+", value) or "?" in value or "#" in value:
            raise ValueError(
                "expected an http(s) URL without query, e.g. 'https://api.justoneapi.com'"
            )
        if (problem := userinfo_problem(value)) is not None:
            raise ValueError(problem)
        return value.rstrip("/")


class BudgetConfig(Section):
    calls_per_minute: StrictInt = Field(default=30, ge=1, le=10_000)
    burst: StrictInt = Field(default=5, ge=1, le=10_000)
    daily_calls: StrictInt = Field(default=2000, ge=1, le=10_000_000)
    timezone: ZoneName = "Asia/Shanghai"

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


class StorageConfig(Section):
    url: str = "sqlite+aiosqlite:////var/lib/creator-monitor/history.db"
    raw_retention: Duration = timedelta(days=30)  # at most MAX_DURATION
    #: how long a scheduled report's HTML is kept in ``report_runs`` (its row stays)
    report_html_retention: Duration = timedelta(days=14)
    #: how long a SQLite writer waits for another process's write lock before giving up
    busy_timeout: Duration = timedelta(seconds=5)
    #: where paid answers the database refused are spilled until it takes them (default:
    #: beside a SQLite file; for PostgreSQL under $STATE_DIRECTORY or ~/.local/state)
    spill_file: Path | None = None

    @field_validator("spill_file")
    @classmethod
    def _a_file(cls, value: Path | None) -> Path | None:
        # a replay removes the file: a device, a FIFO or a folder named here must not be
        if value is not None and (kind := file_kind(value)) is not None:
            raise ValueError(f"{value} is {kind}, not a file; name a file (it is made when needed)")
        return value

    @field_validator("url")
    @classmethod
    def _known_driver(cls, value: str) -> str:
        if not value.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
            raise ValueError(
                "expected 'sqlite+aiosqlite:///PATH' or 'postgresql+asyncpg://USER@HOST/DB'"
            )
        return value


MAX_IN_FLIGHT = 256


def _parse_in_flight(value: object) -> object:
    """``"auto"`` or a whole number from 1 to 256, with one message for anything else."""
    if value == "auto":
        return value
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f'must be "auto" or a whole number from 1 to {MAX_IN_FLIGHT}')
    if value > MAX_IN_FLIGHT:
        raise ValueError(f"must be at most {MAX_IN_FLIGHT}, got {value}")
    if value < 1:
        raise ValueError(f"must be at least 1, got {value}")
    return value


class ScheduleConfig(Section):
    # "auto": sized from the budget and observed latency (policy/concurrency.py); an int: fixed
    max_in_flight: Annotated[Literal["auto"] | int, BeforeValidator(_parse_in_flight)] = "auto"
    fetch_after: TimeOfDay | None = None  # local time in budget.timezone; None = any time
    retry_attempts: StrictInt = Field(default=3, ge=0, le=20)
    retry_base: Day = timedelta(seconds=30)
    retry_max: Week = timedelta(minutes=15)
    probe_every: Day = timedelta(minutes=15)
    grace: Day = timedelta(seconds=30)
    lease: Day = timedelta(minutes=5)


class EverySourceConfig(Section):
    """``every_source``: a cadence per source, overriding ``every`` for that source."""

    core: Year | None = None
    fans: Year | None = None
    notes: Year | None = None


class DefaultsConfig(Section):
    every: Year = timedelta(hours=24)
    business: Business = Business.DAILY_NOTE
    note_type: NoteType = NoteType.PHOTO_TEXT_AND_VIDEO
    date_type: DateType = DateType.DAY_30
    advertise: Advertise = Advertise.ALL
    #: what each creator is tracked with: core only by default, so nothing new is paid for
    sources: Sources = ("core",)
    every_source: EverySourceConfig | None = None
    #: note-list pages read per visit at most: page 1 always, the next only while all are new
    notes_pages: StrictInt = Field(default=2, ge=1, le=50)


class VariantConfig(Section):
    business: Business | None = None
    note_type: NoteType | None = None
    date_type: DateType | None = None
    advertise: Advertise | None = None


@dataclass(frozen=True, slots=True, config=ConfigDict(extra="forbid"))
class CreatorConfig(Creator):
    """One ``[[creators]]`` entry: the ``Creator`` itself (user_id, name, tags), its cadence and
    the variant keys of ``[defaults]`` it overrides.

    A slotted pydantic dataclass rather than a model: a config may list 100,000 creators, and a
    model instance (its ``__dict__`` and fields set) costs five times the memory and three
    times the validation time. Validation and error paths are the same as a model's. Being the
    ``Creator`` it describes, it is what the schedule, alerts and messages hold: no second
    object per creator. (It equals other ``CreatorConfig``s, not a plain ``Creator``.)
    """

    every: Year | None = None
    business: Business | None = None
    note_type: NoteType | None = None
    date_type: DateType | None = None
    advertise: Advertise | None = None
    variants: tuple[VariantConfig, ...] = ()
    sources: Sources | None = None
    every_source: EverySourceConfig | None = None

    @field_validator("user_id")
    @classmethod
    def _hex_id(cls, value: str) -> str:
        if len(value) == 24 and not value.strip(_HEX):
            return value  # 24 hex digits, without the regex: 100,000 times at a start
        if not _USER_ID_RE.match(value):
            raise ValueError(
                f"expected a 24-hex creator id like '5c3bf7f7000000000602fd63', got {value!r}"
            )
        return value

    def creator(self) -> Creator:
        return self


class ChannelConfig(Section):
    name: str = Field(min_length=1)
    url: SecretStr | None = None
    url_env: str | None = None
    language: Language | None = None
    quiet_hours: str | None = None  # "22:00-08:00" in budget.timezone; critical still goes
    min_severity: Severity = Severity.INFO
    digest: StrictBool = True

    @model_validator(mode="after")
    def _one_url(self) -> ChannelConfig:
        if (self.url is None) == (self.url_env is None):
            raise ValueError("give exactly one of 'url' or 'url_env'")
        return self

    @field_validator("quiet_hours")
    @classmethod
    def _window(cls, value: str | None) -> str | None:
        if value is not None:
            parse_window(value)
        return value

    @property
    def quiet_window(self) -> tuple[time, time] | None:
        return None if self.quiet_hours is None else parse_window(self.quiet_hours)


class NotifyConfig(Section):
    language: Language = "en"
    templates_dir: Path | None = None
    max_attempts: StrictInt = Field(default=12, ge=1, le=1_000)
    max_age: Month = timedelta(hours=24)
    backoff_base: Day = timedelta(seconds=30)
    backoff_max: Week = timedelta(hours=1)
    digest_at: TimeOfDay | None = None  # local time in budget.timezone
    #: a new group waits this long for more alerts of the same wave before its first message
    group_wait: Duration = timedelta(seconds=30)
    #: alerts joining a group already notified wait this long after its last message
    group_interval: Duration = timedelta(minutes=5)
    #: entries listed in a grouped message before "and K more"
    group_limit: StrictInt = Field(default=10, ge=1, le=1000)
    #: one send to a channel that does not answer (or trickles) is given up after this long
    send_timeout: Hour = Field(default=timedelta(seconds=30), ge=timedelta(seconds=1))


class ReportConfig(Section):
    """One ``[[reports]]`` entry: the HTML report and its summary, sent by itself."""

    name: str = Field(min_length=1, max_length=100)
    cadence: Literal["daily", "weekly", "monthly"] = "weekly"
    at: TimeOfDay = time(9, 0)  # local time in budget.timezone
    weekday: Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"] = "mon"  # weekly
    day: StrictInt = Field(default=1, ge=1, le=28)  # monthly: the day of the month
    creators: tuple[str, ...] = ()  # scope: user ids and/or tags; both empty: everyone
    tags: tuple[str, ...] = ()
    channels: tuple[str, ...] | None = None  # None: every channel
    language: Language | None = None  # default: notify.language


class HttpConfig(Section):
    listen: str | None = None  # "127.0.0.1:9464"
    # the console (monitor/web): admin token (else the systemd credential
    # creator-monitor-http-token) and an optional read-only one; cookies get Secure behind TLS
    # (X-Forwarded-Proto counts only with trust_proxy) or always with secure_cookies
    token_file: Path | None = None
    readonly_token_file: Path | None = None
    trust_proxy: StrictBool = False
    secure_cookies: StrictBool = False

    @field_validator("listen")
    @classmethod
    def _loopback_port(cls, value: str | None) -> str | None:
        if value is None:
            return value
        host, sep, port = value.rpartition(":")
        if not sep or not port.isdigit() or not 0 < int(port) < 65536 or not host:
            raise ValueError(f"expected 'HOST:PORT' like '127.0.0.1:9464', got {value!r}")
        return value


class RosterConfig(Section):
    """``[roster] files``: CSV files of creators (globs relative to the config file's folder),
    added to ``[[creators]]``; read by monitor/config/roster.py."""

    files: tuple[str, ...] = ()


class AccountConfig(Section):
    """``[account]``: the account balance, read through the gate like any call."""

    balance_every: Switchable = timedelta(hours=1)  # "off": never read
