"""Turning bad input into lines a user can act on: ``key.path: message``, every problem at once,
with "did you mean …" from the known names. Shared by the config loader and the command line;
knows nothing of the config's sections (the caller says which keys exist where).
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import timedelta
from typing import Any

from pydantic import BaseModel, ValidationError

from monitor.errors import ConfigError

#: the longest any duration may be, in config or on the command line (ten years)
MAX_DURATION = timedelta(days=3650)


def did_you_mean(word: str, choices: Iterable[str]) -> str | None:
    """The known name closest to ``word`` (case-insensitive), if one is close enough."""
    known = list(choices)
    folded = {c.lower(): c for c in known}
    match = difflib.get_close_matches(word.lower(), list(folded), n=1, cutoff=0.6)
    return folded[match[0]] if match else None


#: the longest word an error shows whole; a longer one shows its start and its length
SHOWN_WORD = 60


def shown_word(word: str) -> str:
    """``word`` quoted as an error shows it: whole when short, else its first 40 characters
    and its length (a pasted file as a creator's name stays a one-line error)."""
    if len(word) <= SHOWN_WORD:
        return repr(word)
    return f"{word[:40] + '…'!r} ({len(word):,} characters)"


def unknown(what: str, word: str, choices: Sequence[str], *, show: int = 12) -> str:
    """``unknown metric 'reads'; did you mean 'read'?`` or, with no close name, the known ones."""
    close = did_you_mean(word, choices) if len(word) <= SHOWN_WORD else None
    shown = shown_word(word)
    if close is not None:
        return f"unknown {what} {shown}; did you mean {close!r}?"
    if not choices:
        return f"unknown {what} {shown}; none is configured"
    listed = ", ".join(choices[:show]) + (", …" if len(choices) > show else "")
    return f"unknown {what} {shown}; known: {listed}"


_WHOLE = re.compile(r"-?[0-9]+")


def whole_number(text: str, low: int, high: int) -> int:
    """``text`` as a whole number from ``low`` to ``high``; a ValueError saying which it is not
    (the command line's argument types and the console API's query parameters alike)."""
    # plain ASCII digits only: int() also takes " 5", "1_0" and other scripts' digits ("１"),
    # which the console's ids and pages refuse
    if _WHOLE.fullmatch(text) is None:
        raise ValueError(f"expected a whole number, got {text[:40]!r}")
    value = int(text[:40])  # longer is out of range anyway (int() refuses 4,300 digits)
    if len(text) > 40 or not low <= value <= high:
        shown = text if len(text) <= 40 else f"{text[:40]}…"
        raise ValueError(f"must be from {low:,} to {high:,}, got {shown}")
    return value


class ConfigProblems(ConfigError):
    """Several config problems found in one pass; ``problems`` holds each as a ConfigError.

    ``path`` and ``message`` are the first problem's, and ``str()`` stays one line (the first
    problem and how many more), so code that logs a ConfigError as one line keeps working; the
    command line prints every problem on its own line."""

    def __init__(self, problems: Sequence[ConfigError]) -> None:
        if not problems:
            raise ValueError("ConfigProblems needs at least one problem")
        self.problems = tuple(problems)
        first = problems[0]
        more = len(problems) - 1
        super().__init__(first.path, first.message + (f" (and {more} more)" if more else ""))


def problems_of(exc: ConfigError) -> tuple[ConfigError, ...]:
    """Each problem a ConfigError stands for (one, unless it gathers several)."""
    return exc.problems if isinstance(exc, ConfigProblems) else (exc,)


def raise_all(problems: Sequence[ConfigError]) -> None:
    """Raise one ConfigError for one problem, a ConfigProblems for several; nothing for none.

    Without the exception being handled as context: pydantic's carries the input values, a
    password in a URL among them, and ``--debug`` prints the whole chain.
    """
    if len(problems) == 1:
        raise problems[0] from None
    if problems:
        raise ConfigProblems(problems) from None


def config_keys(section: type[Any]) -> list[str]:
    """The keys a section (a model or a dataclass list entry) accepts, as written in TOML:
    aliases, not attribute names."""
    if issubclass(section, BaseModel):
        return [info.alias or name for name, info in section.model_fields.items()]
    return [f.name for f in dataclasses.fields(section) if f.init]


def section_keys(
    root: type[BaseModel], loc: Sequence[int | str], *, tagged: Mapping[str, type[BaseModel]]
) -> list[str]:
    """The keys accepted at ``loc`` (pydantic's path to a section), for a "did you mean".

    ``tagged`` maps the tags of a discriminated union (rule kinds) to their models; inside a
    union without its tag, the keys of every member count. Unknown places give no keys."""
    members = set(tagged.values())
    section: Any = root
    for part in loc:
        if isinstance(part, int):
            continue
        if section is _UNION:
            section = tagged.get(part)
            if section is None:
                return []
            continue
        fields = getattr(section, "model_fields", None) or getattr(
            section, "__pydantic_fields__", {}
        )
        info = next((f for name, f in fields.items() if part in {name, f.alias}), None)
        section = None if info is None else _section_type(info.annotation, members)
        if section is None:
            return []
    if section is _UNION:
        return sorted({key for model in members for key in config_keys(model)})
    return config_keys(section)


_UNION = object()  # a field holding one of the tagged union's members


def _section_type(annotation: Any, members: set[type[BaseModel]]) -> Any:
    """The section class a field holds (through tuples, optionals and Annotated), ``_UNION`` for
    the tagged union, or None for a plain value."""
    if isinstance(annotation, type) and annotation in members:
        return _UNION
    if isinstance(annotation, type) and (
        issubclass(annotation, BaseModel) or dataclasses.is_dataclass(annotation)
    ):
        return annotation
    for arg in typing.get_args(annotation):
        found = _section_type(arg, members)
        if found is not None:
            return found
    return None


def _path(loc: Sequence[int | str], tags: Iterable[str]) -> str:
    """pydantic's loc → ``rules[2].metric`` (dropping the union tags pydantic inserts)."""
    out = ""
    previous: int | str | None = None
    tag_names = set(tags)
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif isinstance(previous, int) and part in tag_names:
            pass  # the discriminated-union branch name, not a key the user wrote
        elif part.startswith(("function-", "literal[", "lax-", "union[")) or part in {"timedelta"}:
            pass
        else:
            out += f".{shown_key(part)}" if out else shown_key(part)
        previous = part
    return out


def _number(value: Any) -> str:
    """``10000000`` → ``10,000,000``; ``1e15`` → ``1,000,000,000,000,000``; ``1e300`` → 1e+300."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e16:
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return f"{value:g}" if isinstance(value, float) else str(value)


def pydantic_problems(
    exc: ValidationError,
    *,
    tags: Sequence[str],
    keys_at: Callable[[tuple[int | str, ...]], Sequence[str]],
) -> list[ConfigError]:
    """Every error pydantic found, each as ``key.path: message`` in words a user reads.

    ``tags`` are the discriminator values of tagged unions (rule kinds); ``keys_at(loc)`` lists
    the keys accepted where an unknown key ``loc`` was found, for a "did you mean"."""
    out: list[ConfigError] = []
    for error in exc.errors(include_url=False):
        loc = tuple(error["loc"])
        path = _path(loc, tags)
        kind, msg = error["type"], error["msg"]
        ctx = error.get("ctx") or {}
        given = error.get("input")
        if kind in {"extra_forbidden", "unexpected_keyword_argument"}:  # a model's, a dataclass's
            key = str(loc[-1]) if loc else ""
            known = list(keys_at(loc[:-1]))
            msg = unknown("key", key, known).replace(f"unknown key {key!r}", "unknown key", 1)
        elif kind == "union_tag_invalid":
            path, msg = f"{path}.kind", unknown("rule kind", str(ctx.get("tag")), list(tags))
        elif kind == "union_tag_not_found":
            path, msg = f"{path}.kind", f"missing; one of {', '.join(tags)}"
        elif kind in {"missing", "missing_argument"}:
            msg = "required key is missing"
        elif kind in {"less_than_equal", "less_than"} and isinstance(given, int | float):
            limit = ctx.get("le", ctx.get("lt"))
            word = "at most" if kind == "less_than_equal" else "less than"
            msg = f"must be {word} {_number(limit)}, got {_number(given)}"
        elif kind in {"greater_than_equal", "greater_than"} and isinstance(given, int | float):
            limit = ctx.get("ge", ctx.get("gt"))
            word = "at least" if kind == "greater_than_equal" else "greater than"
            msg = f"must be {word} {_number(limit)}, got {_number(given)}"
        else:
            msg = value_words(kind, msg, ctx, given, secret=_secret(path))
        out.append(ConfigError(path or "config", msg))
    return out


def value_words(
    kind: str,
    msg: str,
    ctx: Mapping[str, Any] | None,
    given: object,
    *,
    secret: bool = False,
) -> str:
    """A bad value's message (pydantic's error ``kind``, ``msg`` and ``ctx``) in the words of
    a TOML or CSV file, never pydantic's own; ``secret``: never echo the value."""
    ctx = ctx or {}
    if kind in _FIXED:
        return _FIXED[kind]
    if kind in {"literal_error", "enum"}:
        expected = f"expected {ctx.get('expected', 'one of the listed values')}"
        close = did_you_mean(given, _quoted(ctx)) if isinstance(given, str) else None
        hint = f"; did you mean {close!r}?" if close else ""
        return f"{expected}, got {shown_value(given)}{hint}"
    if kind == "string_too_long":
        return f"must be at most {ctx.get('max_length')} characters"
    if kind in _EXPECTED:
        return _EXPECTED[kind] if secret else f"{_EXPECTED[kind]}, got {shown_value(given)}"
    if kind.startswith(("value_error", "assertion_error")):
        return msg.removeprefix("Value error, ")  # our own validators' words
    return msg.replace("Input should be", "must be", 1)  # a kind the table above lacks


_FIXED = {
    "finite_number": "must be a finite number (not inf or nan)",
    "string_too_short": "must not be empty",
}
#: pydantic's type errors, in the words of a TOML file
_EXPECTED = {
    "string_type": "expected text in quotes",
    "path_type": "expected a file path in quotes",
    "int_type": "expected a whole number (no quotes)",
    "int_parsing": "expected a whole number (no quotes)",
    "int_from_float": "expected a whole number",
    "float_type": "expected a number (no quotes)",
    "float_parsing": "expected a number (no quotes)",
    "bool_type": "expected true or false (no quotes)",
    "bool_parsing": "expected true or false (no quotes)",
    "tuple_type": 'expected an array, e.g. ["a", "b"]',
    "list_type": 'expected an array, e.g. ["a", "b"]',
    "too_short": "has too few entries",
    "too_long": "has too many entries",
    "model_type": "expected a table (a [section] or { key = value })",
    "model_attributes_type": "expected a table (a [section] or { key = value })",
    "dataclass_type": "expected a table (a [[section]] entry or { key = value })",
    "dataclass_args_type": "expected a table (a [[section]] entry or { key = value })",
    "dict_type": "expected a table (a [section] or { key = value })",
}


def _quoted(ctx: Mapping[str, Any]) -> list[str]:
    """The values pydantic lists in ``expected`` (``'zh' or 'en'``)."""
    return re.findall(r"'([^']*)'", str(ctx.get("expected", "")))


def _secret(path: str) -> bool:
    """Whether the value at a key path may be a secret that no message may echo."""
    return path.lower().endswith("url")  # a channel's URL, or a base_url with a password


def shown_value(value: object) -> str:
    """A value as TOML writes it (``"30"``, ``true``, ``an array``), short, for ``got …``."""
    if isinstance(value, bool):
        shown = "true" if value else "false"
    elif isinstance(value, str):
        text = value if len(value) <= 40 else value[:37] + "…"
        shown = '"' + _escaped(text).replace('"', '\\"') + '"'
    elif isinstance(value, float):
        shown = repr(value)  # 30.0, not 30: the point is why a whole number is refused
    elif isinstance(value, int):
        shown = _number(value)
    elif isinstance(value, list | tuple):
        shown = "an array"
    elif isinstance(value, Mapping):
        shown = "a table"
    elif hasattr(value, "isoformat"):
        shown = f"the date/time {value.isoformat()}"
    else:
        shown = type(value).__name__
    return shown


def shown_key(key: object) -> str:
    """A key as a key path shows it: control characters escaped, never written raw."""
    return _escaped(str(key))


def _escaped(text: str) -> str:
    """``text`` with each control character written as a TOML escape (``\\u0000``)."""
    return CONTROL.sub(lambda found: f"\\u{ord(found.group()):04x}", text)


def userinfo_problem(url: str) -> str | None:
    """Why a base URL with a user name or password (``user:password@host``) is refused, or None.

    The reason never echoes the URL: the part before the ``@`` is a password.
    """
    authority = url.split("://", 1)[-1].split("/", 1)[0]
    if "@" not in authority:
        return None
    return "must not hold a user name or password (user:password@host); the API takes a token"


#: C0 and C1 control characters and DEL (Unicode category Cc): never part of a name, an id, a
#: path or a URL; a NUL breaks PostgreSQL, a newline or tab a log line, a table or a CSV cell
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_CONTROL_NAMES = {0: "NUL", 9: "tab", 10: "line feed", 13: "carriage return", 27: "escape"}


def control_problem(text: str) -> str | None:
    """Why ``text`` is refused when it holds a control character (naming the first), or None.

    The text itself is never echoed: it may be a channel URL with a password in it."""
    found = CONTROL.search(text)
    if found is None:
        return None
    code = ord(found.group())
    name = _CONTROL_NAMES.get(code, "a control character")
    return f"holds U+{code:04X} ({name})"


#: a UTF-16 surrogate: no character of its own. Bytes that are not UTF-8 reach a command-line
#: argument as one (``os.fsdecode``), and JSON may spell one (``"\ud800"``); neither can be
#: encoded for the database or a message
SURROGATE = re.compile(r"[\ud800-\udfff]")


def text_problem(text: str) -> str | None:
    """Why free text a user gives (a silence's reason) is refused, or None: a control
    character, or a surrogate (not UTF-8 text). Never echoes the text."""
    if (why := control_problem(text)) is not None:
        return why
    found = SURROGATE.search(text)
    if found is None:
        return None
    return f"holds U+{ord(found.group()):04X} (not UTF-8 text)"


def path_too_long(exc: OSError) -> ConfigError:
    """An ENAMETOOLONG from a path the config or the command line gave, as the one-line
    mistake it is: the path's start and its length, never all of it."""
    name = exc.filename if isinstance(exc.filename, str) else ""
    if not name:
        name = "a path"
    elif len(name) > SHOWN_WORD:
        name = f"{name[:40]}… ({len(name):,} characters)"
    return ConfigError(
        name, "path too long (a file name has at most 255 bytes, a whole path 4,096); fix it"
    )
