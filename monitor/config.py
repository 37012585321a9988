"""The TOML config, parsed once into frozen, validated pydantic models.

Owns: key names, defaults, validation and one-line errors that name the key path; where the
token and channel URLs come from; ``collector_paused``, which start-up's bulk builders share (a
config may list 100,000 creators). Must not: open network connections or touch the database.
"""

from __future__ import annotations

import gc
import logging
import os
import re
import stat
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import time, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import tomli  # tomllib's own parser, compiled: a 100,000-creator file in 0.2 s instead of 0.7 s
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.dataclasses import dataclass

from monitor.errors import ConfigError
from monitor.model import (
    ALL_METRICS,
    Advertise,
    Business,
    Creator,
    DateType,
    NoteType,
    Severity,
    Variant,
)
from monitor.validation import (
    MAX_DURATION,
    config_keys,  # noqa: F401 - re-exported: the README and config tests list keys with it
    format_duration,
    pydantic_problems,
    raise_all,
    section_keys,
    unknown,
    userinfo_problem,
)

log = logging.getLogger(__name__)

TOKEN_ENV = "JUSTONEAPI_TOKEN"  # noqa: S105 - the variable's name, not a secret
CONFIG_ENV = "CREATOR_MONITOR_CONFIG"
CREDENTIAL_NAME = "justoneapi-token"

_DURATION_RE = re.compile(
    r"^\s*(?:(\d+)\s*w)?\s*(?:(\d+)\s*d)?\s*(?:(\d+)\s*h)?\s*(?:(\d+)\s*m)?\s*(?:(\d+)\s*s)?\s*$"
)
_CLOCK_RE = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")
_USER_ID_RE = re.compile(r"^[0-9a-f]{24}$")


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
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {value!r}; e.g. 'Asia/Shanghai' or 'UTC'") from None
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
Clock = Annotated[time, BeforeValidator(parse_clock)]
ZoneName = Annotated[str, BeforeValidator(_parse_zone)]
Language = Literal["zh", "en"]


class _Section(BaseModel):
    model_config = ConfigDict(
        extra="forbid", frozen=True, populate_by_name=True, allow_inf_nan=False
    )


class ApiConfig(_Section):
    base_url: str = "https://api.justoneapi.com"
    token_file: Path | None = None
    timeout: Hour = timedelta(seconds=60)
    max_response_bytes: int = Field(default=2_000_000, ge=10_000, le=1_000_000_000)
    connect_retries: int = Field(default=2, ge=0, le=10)

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


class BudgetConfig(_Section):
    calls_per_minute: int = Field(default=30, ge=1, le=10_000)
    burst: int = Field(default=5, ge=1, le=10_000)
    daily_calls: int = Field(default=2000, ge=1, le=10_000_000)
    timezone: ZoneName = "Asia/Shanghai"

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


class StorageConfig(_Section):
    url: str = "sqlite+aiosqlite:////var/lib/creator-monitor/history.db"
    raw_retention: Duration = timedelta(days=30)  # at most MAX_DURATION
    #: how long a SQLite writer waits for another process's write lock before giving up
    busy_timeout: Duration = timedelta(seconds=5)
    #: where paid answers the database refused are spilled until it takes them (default:
    #: beside a SQLite file; for PostgreSQL under $STATE_DIRECTORY or ~/.local/state)
    spill_file: Path | None = None

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


class ScheduleConfig(_Section):
    # "auto": sized from the budget and observed latency (policy/concurrency.py); an int: fixed
    max_in_flight: Annotated[Literal["auto"] | int, BeforeValidator(_parse_in_flight)] = "auto"
    fetch_after: Clock | None = None  # local time in budget.timezone; None = any time
    retry_attempts: int = Field(default=3, ge=0, le=20)
    retry_base: Day = timedelta(seconds=30)
    retry_max: Week = timedelta(minutes=15)
    probe_every: Day = timedelta(minutes=15)
    grace: Day = timedelta(seconds=30)
    lease: Day = timedelta(minutes=5)


class DefaultsConfig(_Section):
    every: Year = timedelta(hours=24)
    business: Business = Business.DAILY_NOTE
    note_type: NoteType = NoteType.PHOTO_TEXT_AND_VIDEO
    date_type: DateType = DateType.DAY_30
    advertise: Advertise = Advertise.ALL


class VariantConfig(_Section):
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

    @field_validator("user_id")
    @classmethod
    def _hex_id(cls, value: str) -> str:
        if not _USER_ID_RE.match(value):
            raise ValueError(
                f"expected a 24-hex creator id like '5c3bf7f7000000000602fd63', got {value!r}"
            )
        return value

    def creator(self) -> Creator:
        return self


class ChannelConfig(_Section):
    name: str = Field(min_length=1)
    url: SecretStr | None = None
    url_env: str | None = None
    language: Language | None = None
    quiet_hours: str | None = None  # "22:00-08:00" in budget.timezone; critical still goes
    min_severity: Severity = Severity.INFO
    digest: bool = True

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


GroupLabel = Literal["rule", "creator", "variant", "severity"]


class _RuleBase(_Section):
    name: str = Field(min_length=1)
    severity: Severity = Severity.WARNING
    channels: tuple[str, ...] | None = None  # None: every channel
    creators: tuple[str, ...] = ()  # user ids in scope; empty with empty tags: everyone
    tags: tuple[str, ...] = ()
    for_: int = Field(default=1, ge=1, le=1_000, alias="for")
    resolve_for: int = Field(default=1, ge=1, le=1_000)  # clear evaluations before resolving
    repeat: Year = timedelta(hours=24)
    max_repeats: int | None = Field(default=None, ge=0, le=10_000)
    #: what one grouped message shares (Alertmanager's group_by): the rule alone gathers every
    #: creator a wave fires for; ["rule", "creator"] keeps one message per creator
    group_by: tuple[GroupLabel, ...] = ("rule",)

    def applies_to(self, creator: Creator) -> bool:
        if not self.creators and not self.tags:
            return True
        return creator.user_id in self.creators or bool(set(self.tags) & set(creator.tags))


class ThresholdRule(_RuleBase):
    kind: Literal["threshold"]
    metric: Metric
    op: Literal["<", "<=", ">", ">=", "==", "!="]
    value: float = Field(ge=-1e15, le=1e15)


def _parse_baseline(value: object) -> object:
    if value == "previous":
        return value
    return parse_duration(value, timedelta(days=365))


class ChangeRule(_RuleBase):
    kind: Literal["change"]
    metric: Metric
    baseline: Annotated[Literal["previous"] | timedelta, BeforeValidator(_parse_baseline)] = (
        "previous"
    )
    pct: float | None = Field(default=None, ge=-100, le=1_000_000)
    abs_: float | None = Field(default=None, ge=-1e15, le=1e15, alias="abs")

    @model_validator(mode="after")
    def _one_size(self) -> ChangeRule:
        if (self.pct is None) == (self.abs_ is None):
            raise ValueError(
                "give exactly one of 'pct' or 'abs' (negative: a fall, positive: a rise)"
            )
        if (self.pct or self.abs_) == 0:
            raise ValueError("'pct'/'abs' must not be 0; its sign gives the direction")
        return self


class StaleRule(_RuleBase):
    kind: Literal["stale"]
    after: Year


class ApiErrorRule(_RuleBase):
    kind: Literal["api_error"]
    codes: tuple[Annotated[int, Field(ge=0, le=99_999)], ...] = ()
    consecutive: int | None = Field(default=None, ge=1, le=10_000)

    @model_validator(mode="after")
    def _something(self) -> ApiErrorRule:
        if not self.codes and self.consecutive is None:
            raise ValueError("give 'codes' or 'consecutive' (or both)")
        return self


class AnomalyRule(_RuleBase):
    kind: Literal["anomaly"]
    metric: Metric
    k: float = Field(default=3.5, gt=0, le=100)
    window: int = Field(default=14, ge=3, le=365)
    min_points: int = Field(default=7, ge=3, le=365)


class BudgetRule(_RuleBase):
    kind: Literal["budget"]
    level_pct: float = Field(default=80, gt=0, le=100)


Rule = Annotated[
    ThresholdRule | ChangeRule | StaleRule | ApiErrorRule | AnomalyRule | BudgetRule,
    Field(discriminator="kind"),
]
RULE_KINDS = ("threshold", "change", "stale", "api_error", "anomaly", "budget")


class NotifyConfig(_Section):
    language: Language = "en"
    templates_dir: Path | None = None
    max_attempts: int = Field(default=12, ge=1, le=1_000)
    max_age: Month = timedelta(hours=24)
    backoff_base: Day = timedelta(seconds=30)
    backoff_max: Week = timedelta(hours=1)
    digest_at: Clock | None = None  # local time in budget.timezone
    #: a new group waits this long for more alerts of the same wave before its first message
    group_wait: Duration = timedelta(seconds=30)
    #: alerts joining a group already notified wait this long after its last message
    group_interval: Duration = timedelta(minutes=5)
    #: entries listed in a grouped message before "and K more"
    group_limit: int = Field(default=10, ge=1, le=1000)


class ReportConfig(_Section):
    """One ``[[reports]]`` entry: the HTML report and its summary, sent by itself."""

    name: str = Field(min_length=1, max_length=100)
    cadence: Literal["daily", "weekly", "monthly"] = "weekly"
    at: Clock = time(9, 0)  # local time in budget.timezone
    weekday: Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"] = "mon"  # weekly
    day: int = Field(default=1, ge=1, le=28)  # monthly: the day of the month
    creators: tuple[str, ...] = ()  # scope: user ids and/or tags; both empty: everyone
    tags: tuple[str, ...] = ()
    channels: tuple[str, ...] | None = None  # None: every channel
    language: Language | None = None  # default: notify.language


class HttpConfig(_Section):
    listen: str | None = None  # "127.0.0.1:9464"
    # the console (monitor/web): admin token (else the systemd credential
    # creator-monitor-http-token) and an optional read-only one; cookies get Secure behind TLS
    # (X-Forwarded-Proto counts only with trust_proxy) or always with secure_cookies
    token_file: Path | None = None
    readonly_token_file: Path | None = None
    trust_proxy: bool = False
    secure_cookies: bool = False

    @field_validator("listen")
    @classmethod
    def _loopback_port(cls, value: str | None) -> str | None:
        if value is None:
            return value
        host, sep, port = value.rpartition(":")
        if not sep or not port.isdigit() or not 0 < int(port) < 65536 or not host:
            raise ValueError(f"expected 'HOST:PORT' like '127.0.0.1:9464', got {value!r}")
        return value


class RosterConfig(_Section):
    """``[roster] files``: CSV files of creators (globs relative to the config file's folder),
    added to ``[[creators]]``; read by monitor/roster.py."""

    files: tuple[str, ...] = ()


class Config(_Section):
    api: ApiConfig = ApiConfig()
    budget: BudgetConfig = BudgetConfig()
    storage: StorageConfig = StorageConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    defaults: DefaultsConfig = DefaultsConfig()
    creators: tuple[CreatorConfig, ...] = ()
    roster: RosterConfig = RosterConfig()
    channels: tuple[ChannelConfig, ...] = ()
    rules: tuple[Rule, ...] = ()
    notify: NotifyConfig = NotifyConfig()
    reports: tuple[ReportConfig, ...] = ()
    http: HttpConfig = HttpConfig()

    def variants_of(self, creator: CreatorConfig) -> tuple[Variant, ...]:
        """The variants tracked for a creator: its own overrides on top of ``[defaults]``.

        Creators without overrides share one tuple (and one ``Variant``): compare with ``is``
        to group them."""
        if not creator.variants and not _overrides(creator):
            return self._default_variants()  # the common case, 100,000 times at start-up
        base = {
            key: getattr(creator, key) or getattr(self.defaults, key)
            for key in ("business", "note_type", "date_type", "advertise")
        }
        if not creator.variants:
            return (Variant(**base),)
        return tuple(
            Variant(**{key: getattr(v, key) or base[key] for key in base}) for v in creator.variants
        )

    def _default_variants(self) -> tuple[Variant, ...]:
        """The variants of a creator without overrides: ``[defaults]``' one, as one tuple that
        all of them share. Kept beside the ``defaults`` it was made from, so a ``model_copy``
        with other defaults makes its own."""
        made = self.__dict__.get("_default_variants_of")
        if made is None or made[0] is not self.defaults:
            d = self.defaults
            made = (d, (Variant(d.business, d.note_type, d.date_type, d.advertise),))
            self.__dict__["_default_variants_of"] = made  # a cache, not a field: frozen holds
        return made[1]

    def every_of(self, creator: CreatorConfig) -> timedelta:
        return creator.every or self.defaults.every

    def rule_channels(self, rule: _RuleBase) -> tuple[str, ...]:
        return rule.channels if rule.channels is not None else tuple(c.name for c in self.channels)


def _overrides(creator: VariantConfig | CreatorConfig) -> bool:
    return not (
        creator.business is None
        and creator.note_type is None
        and creator.date_type is None
        and creator.advertise is None
    )


def _cross_check(config: Config) -> list[ConfigError]:
    """Checks that span sections; each problem is a ConfigError naming the offending key."""
    problems = [
        *_duplicates("creators", [c.user_id for c in config.creators], "user_id"),
        *_duplicates("channels", [c.name for c in config.channels], "name"),
        *_duplicates("rules", [r.name for r in config.rules], "name"),
    ]
    channel_names = [c.name for c in config.channels]
    known_ids = (
        {c.user_id for c in config.creators} if any(r.creators for r in config.rules) else set()
    )
    for i, rule in enumerate(config.rules):
        problems += (
            ConfigError(f"rules[{i}].channels", unknown("channel", name, channel_names))
            for name in rule.channels or ()
            if name not in channel_names
        )
        problems += (
            ConfigError(f"rules[{i}].creators", f"{user_id!r} is not a tracked creator")
            for user_id in rule.creators
            if user_id not in known_ids
        )
    for i, creator in enumerate(config.creators):
        if len(creator.variants) < 2:
            continue  # nothing to repeat
        variants = config.variants_of(creator)
        if len(set(variants)) != len(variants):
            problems.append(
                ConfigError(f"creators[{i}].variants", "the same variant is listed twice")
            )
    if config.budget.burst > config.budget.calls_per_minute:
        problems.append(ConfigError("budget.burst", "must not exceed budget.calls_per_minute"))
    return problems


def _duplicates(section: str, values: list[str], key: str) -> list[ConfigError]:
    seen: set[str] = set()
    found: list[ConfigError] = []
    for i, value in enumerate(values):
        if value in seen:
            found.append(ConfigError(f"{section}[{i}].{key}", f"duplicate {key} {value!r}"))
        seen.add(value)
    return found


_RULE_MODELS: dict[str, type[BaseModel]] = {
    "threshold": ThresholdRule,
    "change": ChangeRule,
    "stale": StaleRule,
    "api_error": ApiErrorRule,
    "anomaly": AnomalyRule,
    "budget": BudgetRule,
}


def keys_at(loc: tuple[int | str, ...]) -> list[str]:
    """The keys accepted at a place in the config (pydantic's loc), for "did you mean"."""
    return section_keys(Config, loc, tagged=_RULE_MODELS)


def parse_config(data: Mapping[str, Any], *, base: Path | None = None) -> Config:
    """Validate a parsed TOML document; raises a ConfigError naming every problem's key path
    (a ``ConfigProblems`` when there are several). Roster files are read relative to ``base``
    (the config file's folder; default: the working directory)."""
    try:
        with collector_paused():
            config = Config.model_validate(data)
    except ValidationError as exc:
        raise_all(pydantic_problems(exc, tags=RULE_KINDS, keys_at=keys_at))
        raise  # unreachable: pydantic reports at least one error
    if config.roster.files:
        from monitor.roster import with_roster  # roster builds on this module's models

        config = with_roster(config, Path.cwd() if base is None else base)
    raise_all(_cross_check(config))
    return config


@contextmanager
def collector_paused() -> Iterator[None]:
    """Hold Python's cyclic garbage collector while a large, long-lived structure is built
    (the creators, the schedule): it would walk the new objects every 700 allocations and all
    of them each time they grew by a quarter, half a second of a 100,000-creator start. Nothing
    is lost meanwhile: garbage with cycles waits for the collector, the rest goes as always."""
    if not gc.isenabled():
        yield  # an outer pause holds it already
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def load_config(path: Path) -> Config:
    """Read and validate a config file; a world-readable file holding a secret gets a warning."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            str(path), "config file not found (pass -c PATH or set CREATOR_MONITOR_CONFIG)"
        ) from None
    except OSError as exc:
        raise ConfigError(str(path), f"cannot read config: {exc.strerror}") from None
    try:
        with collector_paused():
            data = tomli.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(str(path), "config is not UTF-8 text") from None
    except tomli.TOMLDecodeError as exc:
        raise ConfigError(str(path), f"invalid TOML: {exc}") from None
    config = parse_config(data, base=path.parent)
    if any(c.url is not None for c in config.channels):
        warn_if_exposed(path, "holds channel URLs")
    return config


def warn_if_exposed(path: Path, what: str) -> bool:
    """Log a warning when a file with a secret can be read by group or others; True if so."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return False
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        log.warning(
            "%s %s and is readable by other users (mode %o); run: chmod 600 %s",
            path,
            what,
            stat.S_IMODE(mode),
            path,
        )
        return True
    return False


def resolve_token(config: Config, environ: Mapping[str, str] | None = None) -> SecretStr:
    """The API token: ``JUSTONEAPI_TOKEN``, else ``api.token_file``, else systemd's credential."""
    env = os.environ if environ is None else environ
    if token := env.get(TOKEN_ENV, "").strip():
        return SecretStr(token)
    candidates: list[tuple[str, Path]] = []
    if config.api.token_file is not None:
        candidates.append(("api.token_file", config.api.token_file))
    if cred_dir := env.get("CREDENTIALS_DIRECTORY"):
        candidates.append(("CREDENTIALS_DIRECTORY", Path(cred_dir) / CREDENTIAL_NAME))
    for key, path in candidates:
        try:
            token = path.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            if key == "api.token_file":
                raise ConfigError(key, f"token file {path} not found") from None
            continue
        except OSError as exc:
            raise ConfigError(key, f"cannot read token file {path}: {exc.strerror}") from None
        if not token:
            raise ConfigError(key, f"token file {path} is empty")
        if key == "api.token_file":
            warn_if_exposed(path, "holds the API token")
        return SecretStr(token)
    raise ConfigError(
        "api.token_file",
        f"no API token: set {TOKEN_ENV}, api.token_file, "
        f"or a systemd credential '{CREDENTIAL_NAME}'",
    )


def channel_url(channel: ChannelConfig, environ: Mapping[str, str] | None = None) -> SecretStr:
    """A channel's apprise URL, from the file or from the environment variable it names."""
    if channel.url is not None:
        return channel.url
    env = os.environ if environ is None else environ
    value = env.get(channel.url_env or "", "").strip()
    if not value:
        raise ConfigError(
            f"channels[{channel.name}].url_env",
            f"environment variable {channel.url_env!r} is not set or empty",
        )
    return SecretStr(value)
