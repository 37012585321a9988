"""Command-line input checked in process: creator references, argument ranges, global options
anywhere on the line (the subprocess tests in test_cli_errors.py show the printed lines)."""

from __future__ import annotations

import argparse
from datetime import date, timedelta
from pathlib import Path

import pytest

from monitor.cli import arguments
from monitor.cli.parser import build_parser
from monitor.config import parse_config
from monitor.errors import ConfigError
from monitor.model import Business, DateType, NoteType, Variant

LILYY = "5c3bf7f7000000000602fd63"
MIA = "5a1b2c3d4e5f60718293a4b5"
TWIN = "5a1b2c3d4e5f60718293a4b6"
CONFIG = parse_config(
    {
        "creators": [
            {"user_id": LILYY, "name": "Lilyy", "tags": ["fitness"]},
            {"user_id": MIA, "name": "Mia"},
            {"user_id": TWIN, "name": "Mia"},
        ],
        "rules": [{"name": "engagement-floor", "kind": "stale", "after": "2d"}],
        "channels": [{"name": "team", "url": "json://127.0.0.1:9/x"}],
    }
)


def test_a_configured_name_or_an_id_gives_the_id() -> None:
    by_name = arguments.resolve_creator(CONFIG, "Lilyy")
    assert by_name.user_id == LILYY
    assert by_name.entry is CONFIG.creators[0]
    assert arguments.resolve_creator(CONFIG, LILYY) == by_name
    # an id that is not configured is still a creator (history of a removed one, a first fetch)
    other = "0123456789abcdef01234567"
    assert arguments.resolve_creator(CONFIG, other) == arguments.CreatorRef(other, None)


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        (LILYY[:-1], f"CREATOR: user id '{LILYY[:-1]}' has 23 characters, not 24"),
        (LILYY + "0", f"CREATOR: user id '{LILYY}0' has 25 characters, not 24"),
        (LILYY.upper(), f"CREATOR: user id '{LILYY.upper()}' has upper-case letters"),
        ("lilyy", "CREATOR: unknown creator 'lilyy'; did you mean 'Lilyy'?"),
        ("Zed", "CREATOR: unknown creator 'Zed'; known: Lilyy, Mia (give a 24-hex"),
        ("Mia", f"CREATOR: 2 configured creators are named 'Mia' ({MIA}, {TWIN}); give the"),
    ],
)
def test_a_bad_reference_is_refused_with_the_fix(ref: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        arguments.resolve_creator(CONFIG, ref, arg="CREATOR")
    assert str(info.value).startswith(message)


@pytest.mark.parametrize("ref", ["a" * 100_000, "Zed" * 30_000, "5c3bf7f7" * 20_000])
def test_a_huge_reference_is_one_short_line(ref: str) -> None:
    """A pasted file or a runaway script as the creator: the error names its start and its
    length, not 100,000 characters (the console's URLs carry up to 8 kB)."""
    with pytest.raises(ConfigError) as info:
        arguments.resolve_creator(CONFIG, ref, arg="CREATOR")
    text = str(info.value)
    assert len(text) < 300, text[:400]
    assert repr(ref[:40])[:-1] in text
    assert f"({len(ref):,} characters)" in text


def test_rules_tags_and_channels_are_checked_against_the_config() -> None:
    assert arguments.rule_name(CONFIG, "engagement-floor") == "engagement-floor"
    assert arguments.tag_name(CONFIG, "fitness") == "fitness"
    assert arguments.channel_name(CONFIG, "team") == "team"
    with pytest.raises(ConfigError, match=r"^--rule: unknown rule 'engagement'; did you mean"):
        arguments.rule_name(CONFIG, "engagement")
    with pytest.raises(ConfigError, match=r"^--tag: unknown tag 'beauty'; known: fitness$"):
        arguments.tag_name(CONFIG, "beauty")
    with pytest.raises(ConfigError, match=r"none is configured"):
        arguments.rule_name(parse_config({}), "x")


def test_since_is_a_bounded_duration_or_a_past_date() -> None:
    today = date(2026, 12, 3)
    assert arguments.parse_since("30d", today) == date(2026, 11, 3)
    assert arguments.parse_since("2025-12-01", today) == date(2025, 12, 1)
    assert arguments.parse_since(None, today) is None
    assert arguments.parse_since("2026-12-04", today) == date(2026, 12, 4)  # east of UTC
    for bad, fragment in [
        ("99999999999d", "too long; at most 3650d"),
        ("1e400s", "expected a duration like 30d"),
        ("2026-12-05", "date 2026-12-05 is in the future"),
        ("1999-12-31", "date 1999-12-31 is before 2000-01-01"),
    ]:
        with pytest.raises(ConfigError, match=fragment):
            arguments.parse_since(bad, today)


def test_argument_types_have_ranges() -> None:
    assert arguments.duration(timedelta(days=365))("2d") == timedelta(days=2)
    assert arguments.PORT("0") == 0
    assert arguments.variant("daily_note/video/day_90/all") == Variant(
        Business.DAILY_NOTE, NoteType.VIDEO, DateType.DAY_90
    )
    for parse, text in [
        (arguments.duration(timedelta(days=365)), "366d"),
        (arguments.duration(), "9" * 400 + "d"),
        (arguments.PORT, "65536"),
        (arguments.PORT, "-1"),
        (arguments.number(1, 10), "1e3"),
        # int() takes these; the console's ids and pages do not, so neither does the CLI
        (arguments.number(1, 10), "\uff11"),  # a full-width digit one
        (arguments.number(1, 10), "\u0662"),  # an Arabic-Indic digit two
        (arguments.number(1, 10), " 5"),
        (arguments.number(1, 100), "1_0"),
        (arguments.decimal(0, 60), "nan"),
        (arguments.decimal(0, 60), "inf"),
        (arguments.metric, "engagement"),
        (arguments.variant, "DAILY_NOTE/VIDEO"),
    ]:
        with pytest.raises(argparse.ArgumentTypeError):
            parse(text)


@pytest.mark.parametrize(
    ("argv", "config", "debug"),
    [
        (["check"], "config.toml", False),
        (["-c", "a.toml", "check"], "a.toml", False),
        (["check", "-c", "a.toml", "--debug"], "a.toml", True),
        (["--debug", "silence", "add", "--for", "1d", "--config", "b.toml"], "b.toml", True),
        (["-c", "a.toml", "db", "upgrade", "-c", "b.toml"], "b.toml", False),
    ],
)
def test_global_options_anywhere_on_the_line(
    argv: list[str], config: str, debug: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CREATOR_MONITOR_CONFIG", raising=False)
    args = build_parser().parse_args(argv)
    assert (args.config, args.debug) == (Path(config), debug)
