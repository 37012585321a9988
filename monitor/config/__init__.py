"""The TOML config, parsed once into frozen, validated pydantic models.

Owns: key names, defaults, validation and one-line errors that name the key path; where the
token and channel URLs come from; ``collector_paused``, which start-up's bulk builders share (a
config may list 100,000 creators). Must not: open network connections or touch the database.

The package re-exports every public name, so ``from monitor.config import X`` is the way in:
fields.py (value types), sections.py, rules.py, document.py (``Config``), survey.py (every
problem in one pass), roster.py (creators in CSV files), collector.py (``collector_paused``),
files.py (regular files of bounded size), loading.py, startup.py (what
``run`` reads beside the config).
"""

from __future__ import annotations

from monitor.config.collector import collector_paused
from monitor.config.document import Config, keys_at
from monitor.config.fields import (
    SOURCES,
    Day,
    Duration,
    Hour,
    Language,
    Metric,
    Month,
    SeriesMetric,
    TimeOfDay,
    Week,
    Year,
    ZoneName,
    parse_clock,
    parse_duration,
    parse_window,
)
from monitor.config.files import file_kind, read_bytes, read_text, read_token_file
from monitor.config.loading import (
    CONFIG_ENV,
    CREDENTIAL_NAME,
    MIN_SECRET,
    TOKEN_ENV,
    channel_url,
    load_config,
    parse_config,
    read_config,
    resolve_token,
    storage_password,
    warn_if_exposed,
)
from monitor.config.rules import (
    RULE_KINDS,
    AnomalyRule,
    ApiErrorRule,
    BalanceRule,
    BudgetRule,
    ChangeRule,
    GroupLabel,
    NewNoteRule,
    NoteRule,
    Rule,
    StaleRule,
    ThresholdRule,
)
from monitor.config.sections import (
    MAX_IN_FLIGHT,
    AccountConfig,
    ApiConfig,
    BudgetConfig,
    ChannelConfig,
    CreatorConfig,
    DefaultsConfig,
    EverySourceConfig,
    HttpConfig,
    NotifyConfig,
    ReportConfig,
    RosterConfig,
    ScheduleConfig,
    StorageConfig,
    VariantConfig,
)
from monitor.config.startup import (
    CONSOLE_TOKEN_MIN,
    HTTP_CREDENTIAL,
    HTTP_READONLY_CREDENTIAL,
    TEMPLATE_NAMES,
    ConsoleTokens,
    console_secrets,
    console_tokens,
    startup_problems,
    template_problems,
)
from monitor.errors import ConfigError
from monitor.model import FOLLOWER_METRIC
from monitor.validation import config_keys  # the README and config tests list keys with it

__all__ = [
    "CONFIG_ENV",
    "CONSOLE_TOKEN_MIN",
    "CREDENTIAL_NAME",
    "FOLLOWER_METRIC",
    "HTTP_CREDENTIAL",
    "HTTP_READONLY_CREDENTIAL",
    "MAX_IN_FLIGHT",
    "MIN_SECRET",
    "RULE_KINDS",
    "SOURCES",
    "TEMPLATE_NAMES",
    "TOKEN_ENV",
    "AccountConfig",
    "AnomalyRule",
    "ApiConfig",
    "ApiErrorRule",
    "BalanceRule",
    "BudgetConfig",
    "BudgetRule",
    "ChangeRule",
    "ChannelConfig",
    "Config",
    "ConfigError",
    "ConsoleTokens",
    "CreatorConfig",
    "Day",
    "DefaultsConfig",
    "Duration",
    "EverySourceConfig",
    "GroupLabel",
    "Hour",
    "HttpConfig",
    "Language",
    "Metric",
    "Month",
    "NewNoteRule",
    "NoteRule",
    "NotifyConfig",
    "ReportConfig",
    "RosterConfig",
    "Rule",
    "ScheduleConfig",
    "SeriesMetric",
    "StaleRule",
    "StorageConfig",
    "ThresholdRule",
    "TimeOfDay",
    "VariantConfig",
    "Week",
    "Year",
    "ZoneName",
    "channel_url",
    "collector_paused",
    "config_keys",
    "console_secrets",
    "console_tokens",
    "file_kind",
    "keys_at",
    "load_config",
    "parse_clock",
    "parse_config",
    "parse_duration",
    "parse_window",
    "read_bytes",
    "read_config",
    "read_text",
    "read_token_file",
    "resolve_token",
    "startup_problems",
    "storage_password",
    "template_problems",
    "warn_if_exposed",
]
