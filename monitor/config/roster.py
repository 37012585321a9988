"""Roster files: creators kept in CSV (as a spreadsheet saves them) beside those in the TOML.

Owns: finding the files (``[roster] files``, globs relative to the config file), reading them
(UTF-8 with or without Excel's BOM), reducing Pugongying profile URLs to user ids, and one problem
per bad row naming ``file:line``. The row values are validated by the config's own creator model.
Must not: open the database or the network.
"""

from __future__ import annotations

import csv
import glob
import os
import re
import sys
from array import array
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli
from pydantic import TypeAdapter, ValidationError

from monitor.config.collector import collector_paused
from monitor.config.document import Config
from monitor.config.files import CONFIG_LIMIT, ROSTER_LIMIT, opened, read_text
from monitor.config.sections import CreatorConfig
from monitor.errors import ConfigError
from monitor.validation import CONTROL, control_problem, value_words

#: the columns a roster file may have; ``user_id`` is required
COLUMNS = (
    "user_id",
    "name",
    "tags",
    "every",
    "business",
    "note_type",
    "date_type",
    "advertise",
    "sources",
)
_PGY_URL = re.compile(
    r"^https?://pgy\.xiaohongshu\.com/solar/pre-trade/blogger-detail/([0-9a-f]{24})/?(?:[?#].*)?$"
)
#: how many problems the one-line error of a daemon or command shows (``roster check``: all)
_SHOWN = 1


class RosterError(ConfigError):
    """Bad rows in roster files: every problem, each ``file:line: key: message``."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = tuple(problems)
        more = len(self.problems) - _SHOWN
        tail = f" (and {more} more; see: creator-monitor roster check)" if more > 0 else ""
        super().__init__("", self.problems[0] + tail)


@dataclass(frozen=True, slots=True)
class Roster:
    """The creators read from roster files, in file order, and where each came from."""

    creators: tuple[CreatorConfig, ...]
    files: tuple[Path, ...]


def user_id_of(value: str) -> str:
    """A user id as written, or the id inside a Pugongying profile URL."""
    value = value.strip()
    match = _PGY_URL.match(value)
    return match.group(1) if match else value


def find_files(patterns: Sequence[str], base: Path) -> tuple[list[Path], list[str]]:
    """The files the globs name (relative to ``base``), each once; a pattern that matches
    nothing is a problem (a typo must not drop a team's creators quietly)."""
    found: dict[Path, None] = {}
    problems = []
    for i, pattern in enumerate(patterns):
        matches = sorted(glob.glob(str(base / Path(pattern).expanduser())))
        if not matches:
            problems.append(f"roster.files[{i}]: {pattern!r} matches no file (relative to {base})")
        for match in matches:
            found.setdefault(Path(match), None)
    return list(found), problems


#: rows validated per step: the parsed rows of a chunk are freed before the next is read
_CHUNK = 2000
_CREATORS = TypeAdapter(list[CreatorConfig])


@dataclass
class _Reader:
    """Reads roster files a chunk of rows at a time into validated creators; where each row
    came from is kept as numbers (a place string per row would cost 7 MB at 100,000 rows)."""

    base: Path
    problems: list[str]
    creators: list[CreatorConfig] = field(default_factory=list)
    shown: list[str] = field(default_factory=list)  # file names as the user knows them
    file_of: array[int] = field(default_factory=lambda: array("H"))  # per creator
    line_of: array[int] = field(default_factory=lambda: array("L"))
    tags: dict[tuple[str, ...], tuple[str, ...]] = field(default_factory=dict)

    def place(self, index: int) -> str:
        return f"{self.shown[self.file_of[index]]}:{self.line_of[index]}"

    def read(self, path: Path) -> None:
        self.shown.append(_shown(path, self.base))
        shown = self.shown[-1]
        entries: list[dict[str, Any]] = []
        lines: list[int] = []
        try:
            # a regular file of bounded size, opened without blocking (a FIFO or /dev/zero a
            # glob matches is a problem, not a hang); utf-8-sig: with or without a BOM;
            # streamed, never the whole file as text
            with (
                opened(path, key=str(path), what="roster file", limit=ROSTER_LIMIT) as fd,
                open(os.dup(fd), encoding="utf-8-sig", newline="", closefd=True) as stream,
            ):
                reader = csv.reader(stream)
                header = self._header(next(reader, []), shown)
                if header is None:
                    return
                for row in reader:
                    entry = self._entry(header, row, f"{shown}:{reader.line_num}")
                    if entry is not None:
                        entries.append(entry)
                        lines.append(reader.line_num)
                    if len(entries) == _CHUNK:
                        self._validate(entries, lines)
                        entries, lines = [], []
        except UnicodeDecodeError:
            self.problems.append(f"{shown}: not UTF-8 text (save it as 'CSV UTF-8')")
            return
        except FileNotFoundError:
            self.problems.append(f"{shown}: not found (removed since the glob matched it?)")
            return
        except ConfigError as exc:  # not a regular file, or too large
            self.problems.append(f"{shown}: {exc.message}")
            return
        except OSError as exc:
            self.problems.append(f"{shown}: cannot read: {exc.strerror}")
            return
        except csv.Error as exc:
            self.problems.append(f"{shown}: not a CSV file: {exc}")
            return
        self._validate(entries, lines)

    def _header(self, cells: list[str], shown: str) -> list[str] | None:
        header = [h.strip().lower() for h in cells]
        unknown = [h for h in header if h not in COLUMNS]
        twice = next((h for h in header if header.count(h) > 1), None)
        if twice is not None and not unknown:  # the second would silently win over the first
            first = header.index(twice) + 1
            second = header.index(twice, first) + 1
            self.problems.append(
                f"{shown}:1: column {twice!r} appears twice (columns {first} and {second}); "
                "keep one"
            )
            return None
        if not unknown and "user_id" in header:
            return header
        what = (
            "no 'user_id' column" if "user_id" not in header else f"unknown column {unknown[0]!r}"
        )
        self.problems.append(f"{shown}:1: {what}; columns: {', '.join(COLUMNS)} (user_id required)")
        return None

    def _entry(self, header: list[str], row: list[str], place: str) -> dict[str, Any] | None:
        """One row as a creator entry; None for an empty row or one with too many cells."""
        if not any(cell.strip() for cell in row):
            return None  # blank lines, and the empty rows spreadsheets leave at the end
        if len(row) > len(header):
            self.problems.append(f"{place}: {len(row)} cells for {len(header)} columns")
            return None
        entry: dict[str, Any] = {}
        for key, cell in zip(header, row, strict=False):
            value = cell.strip()
            if not value:
                continue  # an empty cell: the default
            if not value.isprintable() and CONTROL.search(value) is not None:  # fast first
                self.problems.append(f"{place}: {key}: {control_problem(value)}; remove it")
                return None
            if key == "user_id":
                entry[key] = user_id_of(value)
            elif key == "tags":
                # a team's few tags, shared by its many rows: one tuple of each
                tags = tuple(sys.intern(t.strip()) for t in value.split(";") if t.strip())
                entry[key] = self.tags.setdefault(tags, tags)
            elif key == "sources":
                # "core;fans;notes": a list, as in the TOML, checked by the creator model
                entry[key] = [s.strip() for s in value.split(";") if s.strip()]
            else:
                entry[key] = value
        return entry

    def _validate(self, entries: list[dict[str, Any]], lines: list[int]) -> None:
        """A chunk through the config's creator model; a problem per bad value."""
        try:
            with collector_paused():
                valid = _CREATORS.validate_python(entries)
        except ValidationError as exc:
            shown = self.shown[-1]
            for error in exc.errors(include_url=False):
                index, *rest = error["loc"]
                key = ".".join(str(part) for part in rest if not str(part).startswith("function-"))
                msg = value_words(error["type"], error["msg"], error.get("ctx"), error["input"])
                if error["type"] in {"missing", "missing_argument"}:
                    msg = "required, and empty here"
                self.problems.append(f"{shown}:{lines[int(index)]}: {key or 'row'}: {msg}")
            return
        self.creators.extend(valid)
        self.file_of.extend([len(self.shown) - 1] * len(valid))
        self.line_of.extend(lines)


def _shown(path: Path, base: Path) -> str:
    """The path as a user knows it: relative to the config file's folder when inside it."""
    try:
        return str(path.relative_to(base))
    except ValueError:
        return str(path)


def read_roster(
    patterns: Sequence[str], base: Path, listed: Mapping[str, str]
) -> tuple[Roster, list[str]]:
    """The creators of every roster file, and every problem found in them.

    ``listed`` maps user ids already in the config to where (``creators[3]``): a creator in
    both, or in two rows, is a problem naming both places."""
    files, problems = find_files(patterns, base)
    reader = _Reader(base, problems)
    for path in files:
        reader.read(path)
    seen: dict[str, str | int] = dict(listed)
    twice: list[int] = []
    for index, creator in enumerate(reader.creators):
        first = seen.setdefault(creator.user_id, index)
        if first != index:
            where = first if isinstance(first, str) else reader.place(first)
            problems.append(
                f"{reader.place(index)}: user_id: {creator.user_id} is listed twice; "
                f"also at {where}"
            )
            twice.append(index)
    creators = reader.creators
    if twice:  # told once, here: the merged config must not hold them a second time
        skip = set(twice)
        creators = [c for i, c in enumerate(creators) if i not in skip]
    return Roster(tuple(creators), tuple(files)), problems


def with_roster(config: Config, base: Path) -> Config:
    """``config`` with the roster files' creators after its own; RosterError on any bad row."""
    config, problems = merge_roster(config, base)
    if problems:
        raise RosterError(problems)
    return config


def merge_roster(
    config: Config, base: Path, listed: Mapping[str, str] | None = None
) -> tuple[Config, list[str]]:
    """``config`` with the valid rows of its roster files after its own creators, and every
    problem of the rest. ``listed``: where each of the config's own creators is written
    (default: ``creators[i] in the config``)."""
    if not config.roster.files:
        return config, []
    if listed is None:
        listed = {c.user_id: f"creators[{i}] in the config" for i, c in enumerate(config.creators)}
    roster, problems = read_roster(config.roster.files, base, listed)
    if roster.creators:
        config = config.model_copy(update={"creators": config.creators + roster.creators})
    return config, problems


def check(config_path: Path) -> tuple[Roster, list[str]]:
    """``roster check``: the roster files a config names, validated without the rest of it."""
    try:
        text = read_text(config_path, key=str(config_path), what="config file", limit=CONFIG_LIMIT)
        data = tomli.loads(text)
    except FileNotFoundError:
        raise ConfigError(str(config_path), "config file not found") from None
    except (OSError, tomli.TOMLDecodeError, RecursionError) as exc:
        raise ConfigError(str(config_path), f"cannot read config: {exc}") from None
    section = data.get("roster", {})
    files = section.get("files", []) if isinstance(section, dict) else []
    if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
        raise ConfigError("roster.files", "expected a list of file names or globs")
    if not files:
        raise ConfigError("roster.files", "no roster files configured ([roster] files = [...])")
    listed = {
        str(entry.get("user_id")): f"creators[{i}] in {config_path.name}"
        for i, entry in enumerate(data.get("creators", []))
        if isinstance(entry, dict)
    }
    return read_roster(files, config_path.parent, listed)
