"""Every problem of a config document in one pass: the schema, control characters, the roster
and the references between sections, each as ``key.path: message`` naming the key as written.

A problem in one entry must not hide the others: what is valid is kept (an entry or key with a
problem is left out) and the checks that need a whole config run on that. Must not: read any
file but the roster (``check`` reads the token files and templates after this).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import tomli
from pydantic import ValidationError

from monitor.config.collector import collector_paused
from monitor.config.document import Config, cross_check, keys_at
from monitor.config.roster import RosterError, merge_roster
from monitor.config.rules import RULE_KINDS
from monitor.errors import ConfigError
from monitor.validation import CONTROL, control_problem, pydantic_problems, shown_key

#: the array-of-tables sections, whose entries are numbered in key paths
_LISTS = frozenset({"creators", "channels", "rules", "reports"})
_NUMBERED = re.compile(r"^(creators|channels|rules|reports)\[(\d+)\]")
#: what in TOML text can make a control character in a string: an escape, a raw tab, a
#: multi-line string (raw line breaks) or a raw C1 character
_MAY_HOLD_CONTROL = re.compile(r"\\|\t|\"\"\"|'''|[\x80-\x9f]")
#: the same in UTF-8 bytes, each found by a plain byte search: a regex over a 10 MB config
#: costs 8 times more. The byte C2 leads every C1 character (and a few others: then the walk
#: looks closer)
_MARKS = (b"\\", b"\t", b'"""', b"'''", b"\xc2")


def may_hold_control(raw: bytes) -> bool:
    """Whether TOML bytes may hold a string with a control character (False: surely not)."""
    return any(mark in raw for mark in _MARKS)


#: kept entries: for each list section, the index each kept entry had in the file
Kept = dict[str, list[int]]


def survey(
    data: Mapping[str, Any],
    *,
    base: Path,
    source: tuple[Path, str] | None = None,
    suspect: bool = True,
) -> tuple[Config, list[ConfigError]]:
    """The valid part of a parsed TOML document as a Config, and every problem in it.

    ``source`` (the file and its text) lets a control character's problem name its line;
    ``suspect`` False (``may_hold_control`` of its bytes) skips looking for them. Roster
    files are read relative to ``base``."""
    controls = control_problems(data, source) if suspect else []
    config, schema, kept, dropped = _validated(data)
    flagged = {p.path for p in controls}
    problems = [*controls, *(p for p in schema if p.path not in flagged)]
    listed = None
    if config.roster.files:
        numbers = kept["creators"]
        listed = {
            c.user_id: f"creators[{numbers[i]}] in the config"
            for i, c in enumerate(config.creators)
        }
    config, bad_rows = merge_roster(config, base, listed)
    if bad_rows:
        problems.append(RosterError(bad_rows))
    problems += (
        _renumber(p, kept)
        for p in cross_check(
            config,
            unknown_channels=dropped.get("channels", set()),
            unknown_creators=dropped.get("creators", set()),
        )
    )
    return config, problems


def _validated(
    data: Mapping[str, Any],
) -> tuple[Config, list[ConfigError], Kept, dict[str, set[str]]]:
    """The document validated; on errors, every error and the Config of what is left once each
    place pydantic named is left out (list entries, or keys of a table). Also: which entries
    were kept, and the names of those left out (a rule naming one is not told it is unknown)."""
    kept: Kept = {name: list(range(_length(data.get(name)))) for name in _LISTS}
    dropped: dict[str, set[str]] = {}
    try:
        with collector_paused():
            return Config.model_validate(data), [], kept, dropped
    except ValidationError as exc:
        problems = pydantic_problems(exc, tags=RULE_KINDS, keys_at=keys_at)
        errors = exc
    document = dict(data)
    for _ in range(3):  # one pass leaves a valid document; the bound is for safety only
        _prune(document, [tuple(e["loc"]) for e in errors.errors()], kept, dropped)
        try:
            return Config.model_validate(document), problems, kept, dropped
        except ValidationError as exc:
            errors = exc
    return Config(), problems, {name: [] for name in _LISTS}, dropped


def _length(value: object) -> int:
    return len(value) if isinstance(value, list) else 0


def _prune(
    document: dict[str, Any],
    locs: Sequence[tuple[int | str, ...]],
    kept: Kept,
    dropped: dict[str, set[str]],
) -> None:
    """Leave out, in place, each list entry or table key a loc points into."""
    entries: dict[str, set[int]] = {}
    keys: dict[str, set[str]] = {}
    for loc in locs:
        section = str(loc[0]) if loc else ""
        if len(loc) >= 2 and section in _LISTS and isinstance(loc[1], int):
            entries.setdefault(section, set()).add(loc[1])
        elif len(loc) >= 2 and isinstance(document.get(section), dict):
            keys.setdefault(section, set()).add(str(loc[1]))
        else:
            document.pop(section, None)
            if section in _LISTS:
                kept[section] = []
    for section, names in keys.items():
        if isinstance(table := document.get(section), dict):
            document[section] = {k: v for k, v in table.items() if k not in names}
    for section, indexes in entries.items():
        items = document.get(section)
        if not isinstance(items, list):
            continue
        for i in indexes:
            if i < len(items) and isinstance(items[i], dict):
                name = items[i].get("user_id" if section == "creators" else "name")
                if isinstance(name, str):
                    dropped.setdefault(section, set()).add(name)
        document[section] = [item for i, item in enumerate(items) if i not in indexes]
        kept[section] = [n for i, n in enumerate(kept[section]) if i not in indexes]


def _renumber(problem: ConfigError, kept: Kept) -> ConfigError:
    """A problem found in the pruned document, with the entry's number as in the file."""
    match = _NUMBERED.match(problem.path)
    if match is None:
        return problem
    section, index = match.group(1), int(match.group(2))
    numbers = kept.get(section, [])
    if index >= len(numbers) or numbers[index] == index:
        return problem
    path = f"{section}[{numbers[index]}]" + problem.path[match.end() :]
    return ConfigError(path, problem.message)


def control_problems(
    data: Mapping[str, Any], source: tuple[Path, str] | None = None
) -> list[ConfigError]:
    """A problem for each string holding a control character, naming its key path and, when
    the text is given, the file and line it is written on."""
    found = [(path, text) for path, text in _strings(data) if CONTROL.search(text)]
    if not found:
        return []
    lines = _lines_with_control(source[1]) if source is not None else []
    problems = []
    for path, text in found:
        why = control_problem(text)
        where = ""
        for number, strings in lines:
            if text in strings:
                strings.remove(text)  # two equal values on two lines: each its own line
                where = f" ({source[0].name if source else 'config'} line {number})"
                break
        problems.append(ConfigError(path, f"{why}{where}; remove it"))
    return problems


def _strings(data: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """Every string value in a parsed document with its key path, in document order; without
    recursion (a document may nest 400 levels)."""
    stack: list[tuple[str, object]] = [("", data)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, str):
            yield path or "config", value
        elif isinstance(value, Mapping):
            children = [
                (f"{path}.{shown_key(k)}" if path else shown_key(k), v) for k, v in value.items()
            ]
            stack.extend(reversed(children))
        elif isinstance(value, list | tuple):
            stack.extend(reversed([(f"{path}[{i}]", v) for i, v in enumerate(value)]))


def _lines_with_control(text: str) -> list[tuple[int, list[str]]]:
    """(line number, its strings holding a control character) for each line of TOML text
    that parses by itself and has such strings (a multi-line string's lines do not)."""
    out = []
    for number, line in enumerate(text.split("\n"), 1):
        if _MAY_HOLD_CONTROL.search(line) is None:
            continue
        try:
            parsed = tomli.loads(line)
        except (tomli.TOMLDecodeError, RecursionError):
            continue
        strings = [s for _, s in _strings(parsed) if CONTROL.search(s)]
        if strings:
            out.append((number, strings))
    return out
