"""The config loader: the example loads, every bad input is one line naming its key path."""

from __future__ import annotations

import logging
import math
import os
import re
import tomllib
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from monitor import config as cfg
from monitor.config import (
    ChangeRule,
    Config,
    ConfigError,
    channel_url,
    load_config,
    parse_config,
    parse_duration,
    resolve_token,
)
from monitor.model import Business, Creator, DateType, Variant
from monitor.validation import problems_of

ROOT = Path(__file__).parent.parent.parent
EXAMPLE = ROOT / "config.example.toml"
UID = "5c3bf7f7000000000602fd63"
UID2 = "5a1b2c3d4e5f60718293a4b5"


def test_example_config_loads_with_expected_values() -> None:
    config = load_config(EXAMPLE)
    assert config.budget.calls_per_minute == 30
    assert config.budget.daily_calls == 2000
    assert config.api.timeout == timedelta(seconds=60)
    assert config.schedule.fetch_after is None
    assert [c.user_id for c in config.creators] == [UID, UID2]
    assert config.every_of(config.creators[0]) == timedelta(hours=12)
    assert config.every_of(config.creators[1]) == timedelta(hours=24)
    mia = config.variants_of(config.creators[1])
    assert mia[1] == Variant(business=Business.COOPERATE_NOTE, date_type=DateType.DAY_90)
    change = config.rules[0]
    assert isinstance(change, ChangeRule)
    assert change.baseline == timedelta(days=7)
    assert change.pct == -30
    assert change.for_ == 2
    assert config.rule_channels(config.rules[1]) == ("team-slack", "wecom")


def _fields(model: type[BaseModel] | type[cfg.CreatorConfig]) -> set[str]:
    return set(cfg.config_keys(model))


def test_example_config_mentions_every_key() -> None:
    """The example is the reference: a key added to the models must be documented there."""
    text = EXAMPLE.read_text()
    sections: dict[str, type[BaseModel] | type[cfg.CreatorConfig]] = {
        "api": cfg.ApiConfig,
        "budget": cfg.BudgetConfig,
        "storage": cfg.StorageConfig,
        "schedule": cfg.ScheduleConfig,
        "defaults": cfg.DefaultsConfig,
        "creators": cfg.CreatorConfig,
        "channels": cfg.ChannelConfig,
        "notify": cfg.NotifyConfig,
        "reports": cfg.ReportConfig,
        "http": cfg.HttpConfig,
    }
    rule_models = [
        cfg.ThresholdRule,
        cfg.ChangeRule,
        cfg.StaleRule,
        cfg.ApiErrorRule,
        cfg.AnomalyRule,
        cfg.BudgetRule,
    ]
    keys = set().union(*(_fields(m) for m in [*sections.values(), *rule_models]))
    missing = sorted(
        k for k in keys if not re.search(rf"(^|[\s{{,#]){re.escape(k)}\s*=", text, re.M)
    )
    assert missing == []
    for kind in cfg.RULE_KINDS:
        assert kind in text


_SECTIONS: dict[str, type[BaseModel]] = {
    "api": cfg.ApiConfig,
    "budget": cfg.BudgetConfig,
    "storage": cfg.StorageConfig,
    "schedule": cfg.ScheduleConfig,
    "defaults": cfg.DefaultsConfig,
    "notify": cfg.NotifyConfig,
    "http": cfg.HttpConfig,
    "roster": cfg.RosterConfig,
}


@pytest.mark.parametrize("section", sorted(_SECTIONS))
def test_every_value_the_example_shows_is_the_default(section: str) -> None:
    """A section's keys are shown with the code's defaults: set when it has one, commented out
    (``# key = …``) when the key is unset by default."""
    model = _SECTIONS[section]
    text = EXAMPLE.read_text()
    shown = tomllib.loads(text)[section]
    default = model()
    for key, value in shown.items():
        parsed = model.model_validate({key: value})
        name = next(n for n, f in model.model_fields.items() if (f.alias or n) == key)
        assert getattr(parsed, name) == getattr(default, name), f"{section}.{key} = {value!r}"
    for name, info in model.model_fields.items():
        key = info.alias or name
        if key in shown:
            continue
        assert getattr(default, name) is None, f"{section}.{key} has a default; show it"
        assert re.search(rf"^#\s*{re.escape(key)}\s*=", text, re.M), f"{section}.{key} not shown"


def test_defaults_without_any_file() -> None:
    config = parse_config({})
    assert config.storage.url.startswith("sqlite+aiosqlite:///")
    assert config.defaults.every == timedelta(hours=24)
    assert config.creators == ()


def _creator(**kw: Any) -> dict[str, Any]:
    return {"user_id": UID, **kw}


BAD: list[tuple[dict[str, Any], str, str]] = [
    ({"api": {"tiemout": "60s"}}, "api.tiemout", "unknown key; did you mean 'timeout'?"),
    ({"nonsense": 1}, "nonsense", "unknown key; known: api, budget, storage"),
    ({"api": {"timeout": "60"}}, "api.timeout", "bad duration '60'"),
    ({"api": {"timeout": "0s"}}, "api.timeout", "greater than zero"),
    ({"api": {"base_url": "api.justoneapi.com"}}, "api.base_url", "http(s) URL"),
    ({"budget": {"timezone": "Asia/Beijing"}}, "budget.timezone", "unknown time zone"),
    # longer than a file name may be: ZoneInfo's OSError was an "unexpected" error
    ({"budget": {"timezone": "A" * 5000}}, "budget.timezone", "unknown time zone 'AAAA"),
    ({"budget": {"daily_calls": 0}}, "budget.daily_calls", "must be at least 1, got 0"),
    ({"budget": {"calls_per_minute": 10, "burst": 20}}, "budget.burst", "must not exceed"),
    ({"storage": {"url": "mysql://x/y"}}, "storage.url", "sqlite+aiosqlite"),
    ({"defaults": {"business": "DAILY"}}, "defaults.business", "'DAILY_NOTE' or 'COOPERATE_NOTE'"),
    ({"defaults": {"date_type": "DAY_7"}}, "defaults.date_type", "DAY_30"),
    ({"creators": [_creator(every="12x")]}, "creators[0].every", "bad duration"),
    ({"creators": [{"user_id": "lilyy"}]}, "creators[0].user_id", "24-hex"),
    ({"creators": [_creator(), _creator()]}, "creators[1].user_id", "duplicate user_id"),
    (
        {"creators": [_creator(variants=[{"note_type": "GIF"}])]},
        "creators[0].variants[0].note_type",
        "PHOTO_TEXT",
    ),
    ({"creators": [_creator(name="a", nick="b")]}, "creators[0].nick", "unknown key; known: "),
    ({"creators": [_creator(tagz=["a"])]}, "creators[0].tagz", "did you mean 'tags'?"),
    ({"creators": [{"name": "a"}]}, "creators[0].user_id", "required key is missing"),
    ({"creators": [_creator(tags="a")]}, "creators[0].tags", "expected an array"),
    ({"channels": [{"name": "a"}]}, "channels[0]", "exactly one of 'url' or 'url_env'"),
    (
        {"channels": [{"name": "a", "url": "json://x"}, {"name": "a", "url": "json://y"}]},
        "channels[1].name",
        "duplicate name",
    ),
    (
        {"channels": [{"name": "a", "url": "json://x", "quiet_hours": "22:00"}]},
        "channels[0].quiet_hours",
        "HH:MM-HH:MM",
    ),
    (
        {"rules": [{"name": "r", "kind": "change", "metric": "reads", "pct": -30}]},
        "rules[0].metric",
        "unknown metric 'reads'; did you mean 'read'?",
    ),
    (
        {"rules": [{"name": "r", "kind": "change", "metric": "read"}]},
        "rules[0]",
        "exactly one of 'pct' or 'abs'",
    ),
    (
        {
            "rules": [
                {"name": "r", "kind": "change", "metric": "read", "pct": -30, "baseline": "last"}
            ]
        },
        "rules[0].baseline",
        "bad duration 'last'",
    ),
    ({"rules": [{"name": "r", "kind": "trend"}]}, "rules[0].kind", "unknown rule kind 'trend'"),
    (
        {"rules": [{"name": "r", "kind": "stale", "after": "1d", "severty": "info"}]},
        "rules[0].severty",
        "unknown key; did you mean 'severity'?",
    ),
    ({"rules": [{"name": "r"}]}, "rules[0].kind", "missing"),
    (
        {"rules": [{"name": "r", "kind": "threshold", "metric": "read", "op": "=<", "value": 1}]},
        "rules[0].op",
        "'<'",
    ),
    (
        {"rules": [{"name": "r", "kind": "stale", "after": "48h", "severity": "fatal"}]},
        "rules[0].severity",
        "'info', 'warning' or 'critical'",
    ),
    (
        {"rules": [{"name": "r", "kind": "stale", "after": "1d", "channels": ["slack"]}]},
        "rules[0].channels",
        "unknown channel 'slack'; none is configured",
    ),
    (
        {"rules": [{"name": "r", "kind": "stale", "after": "1d", "creators": [UID2]}]},
        "rules[0].creators",
        "is not a tracked creator",
    ),
    (
        {"rules": [{"name": "r", "kind": "stale", "after": "1d", "for": 0}]},
        "rules[0].for",
        "must be at least 1, got 0",
    ),
    ({"rules": [{"name": "r", "kind": "api_error"}]}, "rules[0]", "'codes' or 'consecutive'"),
    (
        {
            "rules": [
                {"name": "r", "kind": "stale", "after": "1d"},
                {"name": "r", "kind": "stale", "after": "2d"},
            ]
        },
        "rules[1].name",
        "duplicate name",
    ),
    ({"notify": {"language": "fr"}}, "notify.language", "'zh' or 'en'"),
    ({"http": {"listen": "9464"}}, "http.listen", "HOST:PORT"),
    ({"schedule": {"fetch_after": "9am"}}, "schedule.fetch_after", "HH:MM"),
]


@pytest.mark.parametrize(("data", "path", "fragment"), BAD, ids=[b[1] for b in BAD])
def test_bad_config_is_one_line_with_its_path(
    data: dict[str, Any], path: str, fragment: str
) -> None:
    if "creators" in str(data.get("rules")) and "creators" not in data:
        data = {**data, "creators": [_creator()]}
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    message = str(info.value)
    assert "\n" not in message
    assert info.value.path == path, message
    assert message.startswith(f"{path}: ")
    assert fragment in message


def test_bad_toml_and_missing_file(tmp_path: Path) -> None:
    broken = tmp_path / "c.toml"
    broken.write_text("[budget\ncalls_per_minute = 3\n")
    with pytest.raises(ConfigError, match=r"invalid TOML"):
        load_config(broken)
    with pytest.raises(ConfigError, match=r"config file not found"):
        load_config(tmp_path / "absent.toml")


def test_config_is_frozen() -> None:
    config = parse_config({})
    with pytest.raises(ValueError, match="frozen"):
        config.budget.daily_calls = 5  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", timedelta(seconds=90)),
        ("15m", timedelta(minutes=15)),
        ("12h", timedelta(hours=12)),
        ("7d", timedelta(days=7)),
        ("1d12h", timedelta(days=1, hours=12)),
        ("2w", timedelta(weeks=2)),
    ],
)
def test_durations(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


def test_token_sources_in_order(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("from-file\n")
    token_file.chmod(0o600)
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "justoneapi-token").write_text("from-credential")
    with_file = parse_config({"api": {"token_file": str(token_file)}})
    without = parse_config({})
    env = {"CREDENTIALS_DIRECTORY": str(creds)}
    assert (
        resolve_token(with_file, {"JUSTONEAPI_TOKEN": "from-env", **env}).get_secret_value()
        == "from-env"
    )
    assert resolve_token(with_file, env).get_secret_value() == "from-file"
    assert resolve_token(without, env).get_secret_value() == "from-credential"
    with pytest.raises(ConfigError, match="no API token"):
        resolve_token(without, {})
    missing = parse_config({"api": {"token_file": str(tmp_path / "nope")}})
    with pytest.raises(ConfigError, match=r"^api.token_file: token file .* not found"):
        resolve_token(missing, {})


def test_world_readable_secret_files_warn(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-token")
    token_file.chmod(0o644)
    config_file = tmp_path / "config.toml"
    config_file.write_text('[[channels]]\nname = "a"\nurl = "json://127.0.0.1:1/hook"\n')
    config_file.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="monitor.config"):
        config = load_config(config_file)
        resolve_token(parse_config({"api": {"token_file": str(token_file)}}), {})
    warnings = [r.getMessage() for r in caplog.records]
    assert any("config.toml holds channel URLs" in w and "chmod 600" in w for w in warnings)
    assert any("holds the API token" in w for w in warnings)
    assert not any("s3cret-token" in w or "127.0.0.1:1/hook" in w for w in warnings)
    caplog.clear()
    config_file.chmod(0o600)
    with caplog.at_level(logging.WARNING, logger="monitor.config"):
        load_config(config_file)
    assert caplog.records == []
    assert "json://" not in repr(config)


def test_a_readable_config_without_secrets_does_not_warn(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The systemd guide's layout: config 0644 with url_env only, the token in a 0600 file (or
    the credential): nothing secret is readable, so nothing is said."""
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-token")
    token_file.chmod(0o600)
    config_file = tmp_path / "config.toml"
    config_file.write_text(
        f'[api]\ntoken_file = "{token_file}"\n[[channels]]\nname = "a"\nurl_env = "HOOK"\n'
    )
    config_file.chmod(0o644)
    with caplog.at_level(logging.DEBUG, logger="monitor.config"):
        config = load_config(config_file)
        assert resolve_token(config, {}).get_secret_value() == "s3cret-token"
    assert caplog.records == []


def test_the_example_installed_as_the_systemd_guide_says_does_not_warn(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    installed = tmp_path / "config.toml"
    installed.write_text(EXAMPLE.read_text())
    installed.chmod(0o644)  # the install guide: chmod 0644 /etc/creator-monitor/config.toml
    with caplog.at_level(logging.WARNING, logger="monitor.config"):
        load_config(installed)
    assert caplog.records == []
    guide = (ROOT / "docs" / "install.md").read_text()
    assert "chmod 0644 /etc/creator-monitor/config.toml" in guide


def test_channel_url_from_environment() -> None:
    config = parse_config({"channels": [{"name": "a", "url_env": "HOOK"}]})
    assert (
        channel_url(config.channels[0], {"HOOK": "json://h/x"}).get_secret_value() == "json://h/x"
    )
    with pytest.raises(ConfigError, match="'HOOK' is not set"):
        channel_url(config.channels[0], {})


def test_example_is_valid_toml_for_the_documented_sections() -> None:
    data = tomllib.loads(EXAMPLE.read_text())
    assert set(data) == set(Config.model_fields)


def test_a_creator_entry_is_the_creator_it_names() -> None:
    """100,000 entries: each is the ``Creator`` itself, and entries without variant overrides
    share one tuple of variants."""
    entries = [_creator(name="Lilyy", tags=["a"]), {"user_id": UID2, "every": "12h"}]
    config = parse_config({"creators": entries})
    first, second = config.creators
    assert first.creator() is first
    assert isinstance(first, Creator)
    assert (first.user_id, first.name, first.tags) == (UID, "Lilyy", ("a",))
    assert config.every_of(second) == timedelta(hours=12)
    assert config.variants_of(first) is config.variants_of(second)
    assert config.variants_of(first) == (Variant(),)
    other = config.model_copy(update={"defaults": cfg.DefaultsConfig(date_type=DateType.DAY_90)})
    assert other.variants_of(first) == (Variant(date_type=DateType.DAY_90),)


# --- bounds: every numeric and duration key has a range, reported with its key path ----------

OUT_OF_RANGE: list[tuple[dict[str, Any], str]] = [
    (
        {"budget": {"daily_calls": 99999999999999999999}},
        "budget.daily_calls: must be at most 10,000,000, got 99,999,999,999,999,999,999",
    ),
    (
        {"budget": {"calls_per_minute": 10_001}},
        "budget.calls_per_minute: must be at most 10,000, got 10,001",
    ),
    ({"budget": {"burst": 10**30}}, "budget.burst: must be at most 10,000, got " + f"{10**30:,}"),
    (
        {"defaults": {"every": "999999999d"}},
        "defaults.every: duration '999999999d' is too long; at most 365d",
    ),
    ({"defaults": {"every": "366d"}}, "defaults.every: duration '366d' is too long; at most 365d"),
    (
        {"creators": [_creator(every="53w")]},
        "creators[0].every: duration '53w' is too long; at most 365d",
    ),
    ({"defaults": {"every": "1e400s"}}, "defaults.every: bad duration '1e400s'"),
    (
        {"defaults": {"every": "9" * 5000 + "s"}},
        f"defaults.every: duration '{'9' * 5000}s' is too long; at most 365d",
    ),
    ({"api": {"timeout": "2h"}}, "api.timeout: duration '2h' is too long; at most 1h"),
    (
        {"api": {"max_response_bytes": 10**12}},
        "api.max_response_bytes: must be at most 1,000,000,000",
    ),
    ({"api": {"connect_retries": 11}}, "api.connect_retries: must be at most 10, got 11"),
    ({"schedule": {"retry_attempts": 21}}, "schedule.retry_attempts: must be at most 20"),
    ({"schedule": {"retry_base": "2d"}}, "schedule.retry_base: duration '2d' is too long"),
    (
        {"schedule": {"retry_max": "8d"}},
        "schedule.retry_max: duration '8d' is too long; at most 7d",
    ),
    ({"schedule": {"probe_every": "25h"}}, "schedule.probe_every: duration '25h' is too long"),
    ({"schedule": {"grace": "2d"}}, "schedule.grace: duration '2d' is too long; at most 1d"),
    ({"schedule": {"lease": "2d"}}, "schedule.lease: duration '2d' is too long; at most 1d"),
    ({"schedule": {"max_in_flight": 257}}, "schedule.max_in_flight: must be at most 256"),
    ({"storage": {"raw_retention": "3651d"}}, "storage.raw_retention: duration '3651d' is too"),
    ({"notify": {"max_attempts": 1001}}, "notify.max_attempts: must be at most 1,000"),
    ({"notify": {"max_age": "32d"}}, "notify.max_age: duration '32d' is too long; at most 31d"),
    ({"notify": {"backoff_base": "2d"}}, "notify.backoff_base: duration '2d' is too long"),
    ({"notify": {"backoff_max": "8d"}}, "notify.backoff_max: duration '8d' is too long"),
    ({"notify": {"send_timeout": "2h"}}, "notify.send_timeout: duration '2h' is too long"),
    ({"notify": {"send_timeout": "0s"}}, "notify.send_timeout: duration '0s' must be greater"),
    (
        {"rules": [{"name": "r", "kind": "stale", "after": "400d"}]},
        "rules[0].after: duration '400d' is too long; at most 365d",
    ),
    (
        {"rules": [{"name": "r", "kind": "stale", "after": "1d", "repeat": "400d"}]},
        "rules[0].repeat: duration '400d' is too long",
    ),
    (
        {"rules": [{"name": "r", "kind": "stale", "after": "1d", "for": 10**9}]},
        "rules[0].for: must be at most 1,000",
    ),
    (
        {"rules": [{"name": "r", "kind": "stale", "after": "1d", "max_repeats": 10**9}]},
        "rules[0].max_repeats: must be at most 10,000",
    ),
    (
        {
            "rules": [
                {"name": "r", "kind": "threshold", "metric": "read", "op": "<", "value": 1e300}
            ]
        },
        "rules[0].value: must be at most 1,000,000,000,000,000, got 1e+300",
    ),
    (
        {
            "rules": [
                {"name": "r", "kind": "threshold", "metric": "read", "op": "<", "value": math.nan}
            ]
        },
        "rules[0].value: must be a finite number",
    ),
    (
        {"rules": [{"name": "r", "kind": "change", "metric": "read", "pct": -101}]},
        "rules[0].pct: must be at least -100",
    ),
    (
        {"rules": [{"name": "r", "kind": "change", "metric": "read", "pct": -5, "baseline": "2y"}]},
        "rules[0].baseline: bad duration '2y'",
    ),
    (
        {
            "rules": [
                {"name": "r", "kind": "change", "metric": "read", "pct": -5, "baseline": "400d"}
            ]
        },
        "rules[0].baseline: duration '400d' is too long; at most 365d",
    ),
    (
        {"rules": [{"name": "r", "kind": "api_error", "codes": [10**6]}]},
        "rules[0].codes[0]: must be at most 99,999",
    ),
    (
        {"rules": [{"name": "r", "kind": "api_error", "consecutive": 10**6}]},
        "rules[0].consecutive: must be at most 10,000",
    ),
    (
        {"rules": [{"name": "r", "kind": "anomaly", "metric": "read", "window": 10**6}]},
        "rules[0].window: must be at most 365",
    ),
    (
        {"rules": [{"name": "r", "kind": "anomaly", "metric": "read", "k": math.inf}]},
        "rules[0].k: must be a finite number",
    ),
]


@pytest.mark.parametrize(("data", "line"), OUT_OF_RANGE, ids=[o[1][:40] for o in OUT_OF_RANGE])
def test_out_of_range_values_name_the_key_and_the_limit(data: dict[str, Any], line: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    assert str(info.value).startswith(line)
    assert "\n" not in str(info.value)


def test_the_bounds_themselves_are_accepted() -> None:
    config = parse_config(
        {
            "budget": {"daily_calls": 10_000_000, "calls_per_minute": 10_000, "burst": 10_000},
            "defaults": {"every": "365d"},
            "api": {"timeout": "1h"},
            "schedule": {"retry_max": "7d", "probe_every": "1d"},
            "storage": {"raw_retention": "3650d"},
        }
    )
    assert config.defaults.every == timedelta(days=365)
    assert config.budget.daily_calls == 10_000_000


@pytest.mark.parametrize(
    "text", ["999999999d", "99999999999999999999w", "1e400s", "inf", "-1d", "0s", "9" * 10_000]
)
def test_parse_duration_never_overflows(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(
            {
                "budget": {"daily_calls": 99999999999999999999},
                "defaults": {"every": "999999999d"},
                "api": {"tiemout": "60s"},
                "rules": [{"name": "r", "kind": "change", "metric": "reads", "pct": -30}],
            }
        )
    lines = [str(p) for p in problems_of(info.value)]
    assert lines == [
        "api.tiemout: unknown key; did you mean 'timeout'?",
        "budget.daily_calls: must be at most 10,000,000, got 99,999,999,999,999,999,999",
        "defaults.every: duration '999999999d' is too long; at most 365d",
        "rules[0].metric: unknown metric 'reads'; did you mean 'read'?",
    ]
    # logged as one line: the first problem and how many more
    assert str(info.value) == ("api.tiemout: unknown key; did you mean 'timeout'? (and 3 more)")


def test_cross_section_problems_are_reported_together() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(
            {
                "budget": {"calls_per_minute": 10, "burst": 20},
                "channels": [{"name": "team", "url": "json://x"}],
                "rules": [
                    {"name": "r", "kind": "stale", "after": "1d", "channels": ["teem"]},
                    {"name": "r", "kind": "stale", "after": "1d"},
                ],
            }
        )
    assert [str(p) for p in problems_of(info.value)] == [
        "rules[1].name: duplicate name 'r'",
        "rules[0].channels: unknown channel 'teem'; did you mean 'team'?",
        "budget.burst: must not exceed budget.calls_per_minute",
    ]


def test_a_report_names_known_channels_and_creators_and_a_name_of_its_own() -> None:
    """A report to a mistyped channel would be claimed for its period and sent nowhere."""
    with pytest.raises(ConfigError) as info:
        parse_config(
            {
                "channels": [{"name": "team", "url": "json://x"}],
                "creators": [{"user_id": "5c3bf7f7000000000602fd63"}],
                "reports": [
                    {"name": "weekly", "channels": ["teem"]},
                    {"name": "weekly", "creators": ["5c3bf7f7000000000602fd64"]},
                ],
            }
        )
    assert [str(p) for p in problems_of(info.value)] == [
        "reports[1].name: duplicate name 'weekly'",
        "reports[0].channels: unknown channel 'teem'; did you mean 'team'?",
        "reports[1].creators: '5c3bf7f7000000000602fd64' is not a tracked creator",
    ]


@pytest.mark.parametrize("kind", ["a character device", "a directory", "a FIFO (named pipe)"])
def test_a_spill_file_that_is_no_file_is_refused(tmp_path: Path, kind: str) -> None:
    # a replay removes the spill file: as root, storage.spill_file = "/dev/null" would have
    # unlinked the device
    where = {"a character device": Path("/dev/null"), "a directory": tmp_path}.get(kind)
    if where is None:
        where = tmp_path / "spill.fifo"
        os.mkfifo(where)
    with pytest.raises(ConfigError) as refused:
        parse_config({"storage": {"spill_file": str(where)}})
    assert str(refused.value) == (
        f"storage.spill_file: {where} is {kind}, not a file; name a file (it is made when needed)"
    )
    assert parse_config({"storage": {"spill_file": str(tmp_path / "x.spill")}})


@pytest.mark.parametrize(
    ("own", "follows"),
    [
        ({}, True),
        ({"name": "A", "tags": ["x"]}, True),  # who it is, not what is fetched
        ({"every": "6h"}, False),
        ({"business": "COOPERATE_NOTE"}, False),
        ({"note_type": "VIDEO"}, False),
        ({"date_type": "DAY_90"}, False),
        ({"advertise": "ORGANIC_ONLY"}, False),
        ({"variants": [{"date_type": "DAY_90"}]}, False),
        ({"sources": ["core", "fans"]}, False),
        ({"every_source": {"fans": "24h"}}, False),
    ],
)
def test_a_creator_follows_the_defaults_only_when_it_sets_nothing_of_its_own(
    own: dict[str, Any], follows: bool
) -> None:
    """The start-up's shortcut (one schedule plan and one cost for all such creators) holds
    exactly when the creator's series and cadences are ``[defaults]``'."""
    config = cfg.parse_config(
        {
            "defaults": {"sources": ["core", "fans"], "every_source": {"fans": "12h"}},
            "creators": [{"user_id": "5c3bf7f7000000000602fd63", **own}],
        }
    )
    creator = config.creators[0]
    assert config.follows_defaults(creator) is follows
    if follows:
        plain = cfg.parse_config(
            {
                "defaults": {"sources": ["core", "fans"], "every_source": {"fans": "12h"}},
                "creators": [{"user_id": "5c3bf7f7000000000602fd64"}],
            }
        ).creators[0]
        assert config.series_of(creator) == config.series_of(plain)
        assert all(
            config.every_source_of(creator, source) == config.every_source_of(plain, source)
            for source in ("core", "fans")
        )
