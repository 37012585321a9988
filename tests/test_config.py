"""The config loader: the example loads, every bad input is one line naming its key path."""

from __future__ import annotations

import logging
import re
import tomllib
from datetime import time, timedelta
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

ROOT = Path(__file__).parent.parent
EXAMPLE = ROOT / "config.example.toml"
UID = "5c3bf7f7000000000602fd63"
UID2 = "5a1b2c3d4e5f60718293a4b5"


def test_example_config_loads_with_expected_values() -> None:
    config = load_config(EXAMPLE)
    assert config.budget.calls_per_minute == 30
    assert config.budget.daily_calls == 2000
    assert config.api.timeout == timedelta(seconds=60)
    assert config.schedule.fetch_after == time(9, 0)
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


def test_defaults_without_any_file() -> None:
    config = parse_config({})
    assert config.storage.url.startswith("sqlite+aiosqlite:///")
    assert config.defaults.every == timedelta(hours=24)
    assert config.creators == ()


def _creator(**kw: Any) -> dict[str, Any]:
    return {"user_id": UID, **kw}


BAD: list[tuple[dict[str, Any], str, str]] = [
    ({"api": {"tiemout": "60s"}}, "api.tiemout", "unknown key"),
    ({"nonsense": 1}, "nonsense", "unknown key"),
    ({"api": {"timeout": "60"}}, "api.timeout", "bad duration '60'"),
    ({"api": {"timeout": "0s"}}, "api.timeout", "greater than zero"),
    ({"api": {"base_url": "api.justoneapi.com"}}, "api.base_url", "http(s) URL"),
    ({"budget": {"timezone": "Asia/Beijing"}}, "budget.timezone", "unknown time zone"),
    ({"budget": {"daily_calls": 0}}, "budget.daily_calls", "greater than or equal to 1"),
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
    ({"creators": [_creator(name="a", nick="b")]}, "creators[0].nick", "unknown key"),
    ({"creators": [{"name": "a"}]}, "creators[0].user_id", "required key is missing"),
    ({"creators": [_creator(tags="a")]}, "creators[0].tags", "valid tuple"),
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
        "unknown metric 'reads'; known: imp, read, engage",
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
        "unknown channel 'slack'",
    ),
    (
        {"rules": [{"name": "r", "kind": "stale", "after": "1d", "creators": [UID2]}]},
        "rules[0].creators",
        "is not a tracked creator",
    ),
    (
        {"rules": [{"name": "r", "kind": "stale", "after": "1d", "for": 0}]},
        "rules[0].for",
        "greater than or equal to 1",
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
