"""What a user types on the command line, checked before anything is sent, billed or stored:
argument types with ranges (durations, dates, metrics, variants, numbers) and the one place a
creator reference (a 24-hex user id or a configured name) becomes a user id.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from monitor.config import Config, CreatorConfig, parse_duration
from monitor.config.references import (
    ACCOUNT,
    DEFAULT_NOTES,
    EARLIEST,
    MAX_NOTES,
    USER_ID_RE,
    CreatorRef,
    channel_name,
    check_name,
    daily_source,
    parse_since,
    parse_variant,
    resolve_creator,
    rule_name,
    source_name,
    tag_name,
)
from monitor.errors import ConfigError
from monitor.model import ALL_METRICS, Variant
from monitor.validation import MAX_DURATION, unknown, whole_number

__all__ = [
    "ACCOUNT",
    "DEFAULT_NOTES",
    "EARLIEST",
    "MAX_NOTES",
    "USER_ID_RE",
    "CreatorRef",
    "channel_name",
    "check_name",
    "parse_since",
    "parse_variant",
    "resolve_creator",
    "rule_name",
    "tag_name",
]

# --- argument types (argparse calls them; their errors become one usage line, exit 2) --------


def duration(most: timedelta = MAX_DURATION) -> Callable[[str], timedelta]:
    """An argument type: a duration like ``2d`` or ``12h``, greater than zero, at most ``most``."""

    def parse(text: str) -> timedelta:
        try:
            return parse_duration(text, most)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse.__name__ = "duration"  # argparse names the type in its own messages
    return parse


def since(text: str) -> str:
    """An argument type: ``30d`` back from today or a date ``2025-12-01``; kept as text (the
    command reads it against its own clock with ``parse_since``)."""
    try:
        parse_since(text, datetime.now(UTC).date())
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(exc.message) from None
    return text


def metric(text: str) -> str:
    """An argument type: a metric's name as rules take it (stored or derived, e.g.
    ``engage_rate``), with a "did you mean" for a near miss."""
    if text not in ALL_METRICS:
        raise argparse.ArgumentTypeError(unknown("metric", text, ALL_METRICS))
    return text


def source(text: str) -> str:
    """An argument type: a source's name (``core``, ``fans``, ``notes``)."""
    try:
        return source_name(text, arg="--source")
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(exc.message) from None


def series_source(text: str) -> str:
    """An argument type: a source with a daily series (``core``, ``fans``); ``notes`` is
    refused with the command that lists them."""
    try:
        return daily_source(
            text, arg="--source", notes_instead="`creator-monitor notes CREATOR` lists them"
        )
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(exc.message) from None


def variant(text: str) -> Variant:
    """An argument type: ``BUSINESS/NOTE_TYPE/DATE_TYPE/ADVERTISE``, e.g.
    ``DAILY_NOTE/VIDEO/DAY_30/ALL``."""
    try:
        found = parse_variant(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(exc.message) from None
    assert found is not None
    return found


def number(low: int, high: int) -> Callable[[str], int]:
    """An argument type: a whole number from ``low`` to ``high``."""

    def parse(text: str) -> int:
        try:
            return whole_number(text, low, high)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse.__name__ = "number"
    return parse


def decimal(low: float, high: float) -> Callable[[str], float]:
    """An argument type: a number from ``low`` to ``high`` (finite)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not low <= value <= high:  # also refuses nan
            raise argparse.ArgumentTypeError(f"must be from {low:g} to {high:g}, got {text}")
        return value

    parse.__name__ = "number"
    return parse


PORT = number(0, 65_535)


# --- creator references and other configured names: one validation with the console API,
# in monitor/config/references.py (re-exported here for the commands)


def nearest_creator(config: Config, user_id: str) -> CreatorConfig | None:
    """The configured creator whose id differs from ``user_id`` in the fewest digits (a typo is
    a digit off); None when none is configured."""

    def distance(entry: CreatorConfig) -> int:
        return sum(a != b for a, b in zip(user_id, entry.user_id, strict=True))

    return min(config.creators, key=distance, default=None)


def refuse_unconfigured(config: Config, ref: CreatorRef, *, arg: str) -> None:
    """A ConfigError (exit 2) for a well-formed id that no ``[[creators]]`` entry has: a paid
    call for a typo is refused; ``--adhoc`` says it is meant. With no creator configured there
    is nothing to mistype: every fetch is ad hoc (a first try before the roster is written)."""
    near = nearest_creator(config, ref.user_id)
    if ref.entry is not None or near is None:
        return
    named = f" ({near.name})" if near.name else ""
    raise ConfigError(
        arg,
        f"{ref.user_id} is configured nowhere; the nearest configured creator is "
        f"{near.user_id}{named}. Add --adhoc to fetch it anyway (a paid call; it is not "
        "tracked afterwards)",
    )
