"""Turning bad input into lines a user can act on: ``key.path: message``, every problem at once,
with "did you mean …" from the known names. Shared by the config loader and the command line;
knows nothing of the config's sections (the caller says which keys exist where).
"""

from __future__ import annotations

import dataclasses
import difflib
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


def unknown(what: str, word: str, choices: Sequence[str], *, show: int = 12) -> str:
    """``unknown metric 'reads'; did you mean 'read'?`` or, with no close name, the known ones."""
    close = did_you_mean(word, choices)
    if close is not None:
        return f"unknown {what} {word!r}; did you mean {close!r}?"
    if not choices:
        return f"unknown {what} {word!r}; none is configured"
    listed = ", ".join(choices[:show]) + (", …" if len(choices) > show else "")
    return f"unknown {what} {word!r}; known: {listed}"


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


def format_duration(value: timedelta) -> str:
    """``timedelta(days=365)`` → ``365d``; ``timedelta(hours=36)`` → ``1d12h``."""
    seconds = int(value.total_seconds())
    out = ""
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)):
        count, seconds = divmod(seconds, size)
        if count:
            out += f"{count}{unit}"
    return out or "0s"


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
            out += f".{part}" if out else str(part)
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
        elif kind == "finite_number":
            msg = "must be a finite number (not inf or nan)"
        msg = msg.removeprefix("Value error, ")
        out.append(ConfigError(path or "config", msg))
    return out


def userinfo_problem(url: str) -> str | None:
    """Why a base URL with a user name or password (``user:password@host``) is refused, or None.

    The reason never echoes the URL: the part before the ``@`` is a password.
    """
    authority = url.split("://", 1)[-1].split("/", 1)[0]
    if "@" not in authority:
        return None
    return "must not hold a user name or password (user:password@host); the API takes a token"
