"""The TOML config, parsed once into frozen, validated pydantic models.

Owns: key names, defaults, validation and one-line errors that name the key path; where the
token and channel URLs come from; ``collector_paused``, which start-up's bulk builders share (a
config may list 100,000 creators). Must not: open network connections or touch the database.
"""

from __future__ import annotations

import dataclasses
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

log = logging.getLogger(__name__)

TOKEN_ENV = "JUSTONEAPI_TOKEN"  # noqa: S105 - the variable's name, not a secret
CONFIG_ENV = "CREATOR_MONITOR_CONFIG"
CREDENTIAL_NAME = "justoneapi-token"

_DURATION_RE = re.compile(
    r"^\s*(?:(\d+)\s*w)?\s*(?:(\d+)\s*d)?\s*(?:(\d+)\s*h)?\s*(?:(\d+)\s*m)?\s*(?:(\d+)\s*s)?\s*$"
)
_CLOCK_RE = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")
_USER_ID_RE = re.compile(r"^[0-9a-f]{24}$")


def parse_duration(value: object) -> timedelta:
    """``"90s"``, ``"15m"``, ``"12h"``, ``"7d"``, ``"1d12h"`` → timedelta (strictly positive)."""
    if isinstance(value, timedelta):
        return value
    if not isinstance(value, str):
        raise ValueError(f"expected a duration string like '15m' or '7d', got {value!r}")
    match = _DURATION_RE.match(value)
    if not value.strip() or match is None or not any(match.groups()):
        raise ValueError(f"bad duration {value!r}; use a number with s, m, h, d or w, e.g. '15m'")
    weeks, days, hours, minutes, seconds = (int(g) if g else 0 for g in match.groups())
    delta = timedelta(weeks=weeks, days=days, hours=hours, minutes=minutes, seconds=seconds)
    if delta <= timedelta(0):
        raise ValueError(f"duration {value!r} must be greater than zero")
    return delta


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


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]
Clock = Annotated[time, BeforeValidator(parse_clock)]
ZoneName = Annotated[str, BeforeValidator(_parse_zone)]
Language = Literal["zh", "en"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class ApiConfig(_Section):
    base_url: str = "https://api.justoneapi.com"
    token_file: Path | None = None
    timeout: Duration = timedelta(seconds=60)
    max_response_bytes: int = Field(default=2_000_000, ge=10_000)
    connect_retries: int = Field(default=2, ge=0, le=10)

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^\s/?#]+", value) or "?" in value or "#" in value:
            raise ValueError(
                "expected an http(s) URL without query, e.g. 'https://api.justoneapi.com'"
            )
        return value.rstrip("/")


class BudgetConfig(_Section):
    calls_per_minute: int = Field(default=30, ge=1, le=10_000)
    burst: int = Field(default=5, ge=1)
    daily_calls: int = Field(default=2000, ge=1)
    timezone: ZoneName = "Asia/Shanghai"

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


class StorageConfig(_Section):
    url: str = "sqlite+aiosqlite:////var/lib/creator-monitor/history.db"
    raw_retention: Duration = timedelta(days=30)
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


class ScheduleConfig(_Section):
    max_in_flight: int = Field(default=4, ge=1, le=256)
    fetch_after: Clock | None = None  # local time in budget.timezone; None = any time
    retry_attempts: int = Field(default=3, ge=0, le=20)
    retry_base: Duration = timedelta(seconds=30)
    retry_max: Duration = timedelta(minutes=15)
    probe_every: Duration = timedelta(minutes=15)
    grace: Duration = timedelta(seconds=30)
    lease: Duration = timedelta(minutes=5)


class DefaultsConfig(_Section):
    every: Duration = timedelta(hours=24)
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

    every: Duration | None = None
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
        raise ValueError(f"unknown metric {value!r}; known: {', '.join(ALL_METRICS)}")
    return value


Metric = Annotated[str, BeforeValidator(lambda v: _check_metric(v) if isinstance(v, str) else v)]


class _RuleBase(_Section):
    name: str = Field(min_length=1)
    severity: Severity = Severity.WARNING
    channels: tuple[str, ...] | None = None  # None: every channel
    creators: tuple[str, ...] = ()  # user ids in scope; empty with empty tags: everyone
    tags: tuple[str, ...] = ()
    for_: int = Field(default=1, ge=1, alias="for")
    resolve_for: int = Field(default=1, ge=1)  # clear evaluations before resolving
    repeat: Duration = timedelta(hours=24)
    max_repeats: int | None = Field(default=None, ge=0)

    def applies_to(self, creator: Creator) -> bool:
        if not self.creators and not self.tags:
            return True
        return creator.user_id in self.creators or bool(set(self.tags) & set(creator.tags))


class ThresholdRule(_RuleBase):
    kind: Literal["threshold"]
    metric: Metric
    op: Literal["<", "<=", ">", ">=", "==", "!="]
    value: float


def _parse_baseline(value: object) -> object:
    if value == "previous":
        return value
    return parse_duration(value)


class ChangeRule(_RuleBase):
    kind: Literal["change"]
    metric: Metric
    baseline: Annotated[Literal["previous"] | timedelta, BeforeValidator(_parse_baseline)] = (
        "previous"
    )
    pct: float | None = None
    abs_: float | None = Field(default=None, alias="abs")

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
    after: Duration


class ApiErrorRule(_RuleBase):
    kind: Literal["api_error"]
    codes: tuple[int, ...] = ()
    consecutive: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _something(self) -> ApiErrorRule:
        if not self.codes and self.consecutive is None:
            raise ValueError("give 'codes' or 'consecutive' (or both)")
        return self


class AnomalyRule(_RuleBase):
    kind: Literal["anomaly"]
    metric: Metric
    k: float = Field(default=3.5, gt=0)
    window: int = Field(default=14, ge=3)
    min_points: int = Field(default=7, ge=3)


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
    max_attempts: int = Field(default=12, ge=1)
    max_age: Duration = timedelta(hours=24)
    backoff_base: Duration = timedelta(seconds=30)
    backoff_max: Duration = timedelta(hours=1)
    digest_at: Clock | None = None  # local time in budget.timezone


class HttpConfig(_Section):
    listen: str | None = None  # "127.0.0.1:9464"

    @field_validator("listen")
    @classmethod
    def _loopback_port(cls, value: str | None) -> str | None:
        if value is None:
            return value
        host, sep, port = value.rpartition(":")
        if not sep or not port.isdigit() or not 0 < int(port) < 65536 or not host:
            raise ValueError(f"expected 'HOST:PORT' like '127.0.0.1:9464', got {value!r}")
        return value


class Config(_Section):
    api: ApiConfig = ApiConfig()
    budget: BudgetConfig = BudgetConfig()
    storage: StorageConfig = StorageConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    defaults: DefaultsConfig = DefaultsConfig()
    creators: tuple[CreatorConfig, ...] = ()
    channels: tuple[ChannelConfig, ...] = ()
    rules: tuple[Rule, ...] = ()
    notify: NotifyConfig = NotifyConfig()
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


def config_keys(section: type[BaseModel] | type[CreatorConfig]) -> list[str]:
    """The keys a section (or list entry) accepts, as written in TOML: aliases, not attributes."""
    if issubclass(section, BaseModel):
        return [info.alias or name for name, info in section.model_fields.items()]
    return [f.name for f in dataclasses.fields(section) if f.init]


def _overrides(creator: VariantConfig | CreatorConfig) -> bool:
    return not (
        creator.business is None
        and creator.note_type is None
        and creator.date_type is None
        and creator.advertise is None
    )


def _cross_check(config: Config) -> None:
    """Checks that span sections; each raises a ConfigError naming the offending key."""
    _no_duplicates("creators", [c.user_id for c in config.creators], "user_id")
    _no_duplicates("channels", [c.name for c in config.channels], "name")
    _no_duplicates("rules", [r.name for r in config.rules], "name")
    channel_names = [c.name for c in config.channels]
    known_ids = (
        {c.user_id for c in config.creators} if any(r.creators for r in config.rules) else set()
    )
    for i, rule in enumerate(config.rules):
        for name in rule.channels or ():
            if name not in channel_names:
                known = ", ".join(channel_names) or "(no channels defined)"
                raise ConfigError(
                    f"rules[{i}].channels", f"unknown channel {name!r}; known: {known}"
                )
        for user_id in rule.creators:
            if user_id not in known_ids:
                raise ConfigError(f"rules[{i}].creators", f"{user_id!r} is not a tracked creator")
    for i, creator in enumerate(config.creators):
        if len(creator.variants) < 2:
            continue  # nothing to repeat
        variants = config.variants_of(creator)
        if len(set(variants)) != len(variants):
            raise ConfigError(f"creators[{i}].variants", "the same variant is listed twice")
    if config.budget.burst > config.budget.calls_per_minute:
        raise ConfigError("budget.burst", "must not exceed budget.calls_per_minute")


def _no_duplicates(section: str, values: list[str], key: str) -> None:
    seen: set[str] = set()
    for i, value in enumerate(values):
        if value in seen:
            raise ConfigError(f"{section}[{i}].{key}", f"duplicate {key} {value!r}")
        seen.add(value)


def _error_path(loc: tuple[int | str, ...]) -> str:
    """pydantic's loc → ``rules[2].metric`` (dropping the union tag pydantic inserts)."""
    out = ""
    previous: int | str | None = None
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif isinstance(previous, int) and part in RULE_KINDS:
            pass  # the discriminated-union branch name, not a key the user wrote
        elif part.startswith(("function-", "literal[", "lax-", "union[")) or part in {"timedelta"}:
            pass
        else:
            out += f".{part}" if out else str(part)
        previous = part
    return out


def _one_line(exc: ValidationError) -> ConfigError:
    first = exc.errors(include_url=False)[0]
    path = _error_path(tuple(first["loc"]))
    kind, msg = first["type"], first["msg"]
    if kind in {"extra_forbidden", "unexpected_keyword_argument"}:  # a model's, a dataclass's
        msg = "unknown key (misspelt?)"
    elif kind == "union_tag_invalid":
        tag = (first.get("ctx") or {}).get("tag")
        path, msg = f"{path}.kind", f"unknown rule kind {tag!r}; known: {', '.join(RULE_KINDS)}"
    elif kind == "union_tag_not_found":
        path, msg = f"{path}.kind", f"missing; one of {', '.join(RULE_KINDS)}"
    elif kind in {"missing", "missing_argument"}:
        msg = "required key is missing"
    msg = msg.removeprefix("Value error, ")
    return ConfigError(path or "config", msg)


def parse_config(data: Mapping[str, Any]) -> Config:
    """Validate a parsed TOML document; raises ConfigError with the first problem's path."""
    try:
        with collector_paused():
            config = Config.model_validate(data)
    except ValidationError as exc:
        raise _one_line(exc) from None
    _cross_check(config)
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
    config = parse_config(data)
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
