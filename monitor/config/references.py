"""Names a user gives that must match the config: a creator (a 24-hex user id or a configured
name), a rule, a tag, a metric; and a silence request as a whole. The one validation the command
line and the console API share, so both accept and refuse the same input with the same words.

Raises ConfigError (``path: message``) naming the option or key the user wrote; knows nothing of
argparse or HTTP.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta

from monitor.config.document import Config
from monitor.config.fields import SOURCES, parse_duration
from monitor.config.sections import CreatorConfig
from monitor.errors import ConfigError
from monitor.model import Advertise, Business, DateType, NoteType, Variant
from monitor.validation import (
    MAX_DURATION,
    raise_all,
    shown_word,
    text_problem,
    unknown,
    whole_number,
)

USER_ID_RE = re.compile(r"^[0-9a-f]{24}$")
_HEX_RE = re.compile(r"^[0-9a-fA-F]+$")
#: the scope word that stands for the account (budget rules) instead of a creator
ACCOUNT = "account"
#: the longest silence, from ``silence add --for`` or the console
LONGEST_SILENCE = timedelta(days=365)
#: the keys of a silence request, as the console API takes them
SILENCE_KEYS = ("creator", "rule", "tag", "for", "reason")
#: the longest reason a silence keeps
MAX_REASON = 500
#: notes a listing (``notes``, the console API) shows unless told otherwise, and the most
DEFAULT_NOTES = 20
MAX_NOTES = 500
#: the earliest date a ``since`` accepts: anything before is a typo (no series goes back that far)
EARLIEST = date(2000, 1, 1)


@dataclass(frozen=True, slots=True)
class CreatorRef:
    """A creator as the user named them: the user id, and the config entry when configured."""

    user_id: str
    entry: CreatorConfig | None


def resolve_creator(config: Config, ref: str, *, arg: str = "creator") -> CreatorRef:
    """A user id or a configured name → the user id; a name is never passed on as an id.

    Raises a ConfigError (exit 2) naming ``arg`` for an id of the wrong shape, an unknown or an
    ambiguous name."""
    text = ref.strip()
    by_id = next((c for c in config.creators if c.user_id == text), None)
    if USER_ID_RE.match(text):
        return CreatorRef(text, by_id)
    named = [c for c in config.creators if c.name == text]
    if len(named) == 1:
        return CreatorRef(named[0].user_id, named[0])
    if len(named) > 1:
        ids = ", ".join(c.user_id for c in named)
        raise ConfigError(
            arg, f"{len(named)} configured creators are named {text!r} ({ids}); give the user id"
        )
    if _HEX_RE.match(text) and len(text) >= 16:
        problem = (
            "has upper-case letters" if len(text) == 24 else f"has {len(text)} characters, not 24"
        )
        shown = shown_word(text)
        raise ConfigError(arg, f"user id {shown} {problem}; a user id is 24 hex digits (0-9, a-f)")
    names = sorted({c.name for c in config.creators if c.name})
    message = unknown("creator", text, names)
    raise ConfigError(arg, f"{message} (give a 24-hex user id or a configured name)")


def parse_since(text: str | None, today: date, *, arg: str = "--since") -> date | None:
    """``30d`` (back from today) or ``2025-12-01``; a ConfigError (exit 2, a 400) for anything
    else."""
    if text is None:
        return None
    try:
        day = date.fromisoformat(text)
    except ValueError:
        pass
    else:
        if day < EARLIEST:
            raise ConfigError(arg, f"date {text} is before {EARLIEST}")
        if day > today + timedelta(days=1):  # a day of slack: the user's today may be UTC's next
            raise ConfigError(arg, f"date {text} is in the future")
        return day
    try:
        return today - parse_duration(text, MAX_DURATION)
    except ValueError as exc:
        if "too long" in str(exc):
            raise ConfigError(arg, str(exc)) from None
        raise ConfigError(
            arg, f"expected a duration like 30d or a date like 2025-12-01, got {text[:40]!r}"
        ) from None


def parse_variant(text: str | None, *, arg: str = "--variant") -> Variant | None:
    """``BUSINESS/NOTE_TYPE/DATE_TYPE/ADVERTISE`` in any case (``history --variant``, the
    console API's ``variant=``); None for None; else a ConfigError naming ``arg``."""
    if text is None:
        return None
    parts = text.split("/")
    enums = {
        "business": Business,
        "note type": NoteType,
        "date type": DateType,
        "advertise": Advertise,
    }
    if len(parts) != len(enums):
        raise ConfigError(arg, f"expected BUSINESS/NOTE_TYPE/DATE_TYPE/ADVERTISE, got {text!r}")
    values = []
    for (what, enum), part in zip(enums.items(), parts, strict=True):
        choices = [e.value for e in enum]
        if part.upper() not in choices:
            raise ConfigError(arg, unknown(what, part, choices))
        values.append(enum(part.upper()))
    return Variant(*values)  # type: ignore[arg-type]


def source_name(text: str, *, arg: str, known: Sequence[str] = SOURCES) -> str:
    """``text`` if it is one of the ``known`` sources (``core``, ``fans``, ``notes``); else a
    ConfigError with a "did you mean"."""
    return check_name("source", text, known, arg=arg)


def daily_source(text: str, *, arg: str, notes_instead: str) -> str:
    """A source with a daily series (``core`` or ``fans``), as ``history --source`` and the
    console API's ``series?source=`` take it; ``notes`` is refused, saying (``notes_instead``)
    where the surface lists notes."""
    source = source_name(text, arg=arg)
    if source == "notes":
        raise ConfigError(arg, f"notes are not a daily series; {notes_instead}")
    return source


def count_of(text: str, low: int, high: int, *, arg: str) -> int:
    """A whole number from ``low`` to ``high`` given as text (a ``--limit``, a ``limit=``);
    else a ConfigError in the words the command line's argument types use."""
    try:
        return whole_number(text, low, high)
    except ValueError as exc:
        raise ConfigError(arg, str(exc)) from None


def check_name(what: str, name: str, known: Sequence[str], *, arg: str) -> str:
    """``name`` if it is one of ``known``; else a ConfigError with a "did you mean"."""
    if name not in known:
        raise ConfigError(arg, unknown(what, name, list(known)))
    return name


def rule_name(config: Config, name: str, *, arg: str = "--rule") -> str:
    return check_name("rule", name, [r.name for r in config.rules], arg=arg)


def channel_name(config: Config, name: str, *, arg: str = "channel") -> str:
    return check_name("channel", name, [c.name for c in config.channels], arg=arg)


def tag_name(config: Config, tag: str, *, arg: str = "--tag") -> str:
    tags = sorted({t for c in config.creators for t in c.tags})
    return check_name("tag", tag, tags, arg=arg)


@dataclass(frozen=True, slots=True)
class SilenceRequest:
    """A checked silence: whom it covers (a user id or ``account``), which rule and tag, for
    how long, and why."""

    user_id: str | None
    rule: str | None
    tag: str | None
    length: timedelta
    reason: str


def silence_request(
    config: Config,
    *,
    creator: str | None,
    rule: str | None,
    tag: str | None,
    length: str | timedelta,
    reason: str = "",
    option: Callable[[str], str] = str,
) -> SilenceRequest:
    """Check a silence as ``silence add`` and the console take it: at least one of creator,
    rule and tag; a creator by user id, configured name or ``account``; a configured rule and
    tag; a duration above zero and at most 365 days; a reason of at most 500 characters of
    text (no control character, nothing that is not UTF-8). Every problem is raised at once;
    ``option`` turns a key into the name the user wrote (``--rule`` on the command line)."""
    creator, rule, tag = ((v.strip() or None) if v else None for v in (creator, rule, tag))
    problems: list[ConfigError] = []
    if not (creator or rule or tag):
        keys = ", ".join(option(k) for k in ("creator", "rule", "tag"))
        problems.append(ConfigError("silence add", f"give at least one of {keys}"))
    user_id = creator

    def check(key: str, run: Callable[[], object]) -> object:
        try:
            return run()
        except ConfigError as exc:
            problems.append(exc)
        except ValueError as exc:  # parse_duration's words
            problems.append(ConfigError(option(key), str(exc)))
        return None

    if creator is not None and creator != ACCOUNT:
        found = check("creator", lambda: resolve_creator(config, creator, arg=option("creator")))
        user_id = found.user_id if isinstance(found, CreatorRef) else None
    if rule is not None:
        check("rule", lambda: rule_name(config, rule, arg=option("rule")))
    if tag is not None:
        check("tag", lambda: tag_name(config, tag, arg=option("tag")))
    took = check("for", lambda: parse_duration(length, LONGEST_SILENCE))
    if len(reason) > MAX_REASON:
        problems.append(ConfigError(option("reason"), f"at most {MAX_REASON} characters"))
    elif (why := text_problem(reason)) is not None:  # a NUL breaks PostgreSQL, a surrogate both
        problems.append(ConfigError(option("reason"), f"{why}; remove it"))
    raise_all(problems)
    assert isinstance(took, timedelta)
    return SilenceRequest(user_id, rule, tag, took, reason.strip())


def silence_body(body: object) -> Mapping[str, str | None]:
    """A silence request's JSON object: only the known keys, each a string (or null)."""
    if not isinstance(body, dict):
        raise ConfigError("body", 'expected a JSON object like {"rule": "…", "for": "2h"}')
    problems = [
        ConfigError(str(key), unknown("key", str(key), SILENCE_KEYS))
        for key in body
        if key not in SILENCE_KEYS
    ]
    problems += [
        ConfigError(key, f"expected a string, got {type(value).__name__}")
        for key, value in body.items()
        if key in SILENCE_KEYS and value is not None and not isinstance(value, str)
    ]
    raise_all(problems)
    return {key: body.get(key) for key in SILENCE_KEYS}
