"""Reads the command examples of the docs: every ```console block of README.md and docs/*.md.

A block is a transcript, as a user would see it in a terminal::

    $ export JUSTONEAPI_TOKEN=example-token
    $ creator-monitor -c config.toml fetch Lilyy
    date_key    impressions  reads ...
    ...
    $ creator-monitor fetch Lily
    error: CREATOR: unknown creator 'Lily'; did you mean 'Lilyy'? ...
    [2]

Lines starting with ``$ `` are commands: ``creator-monitor …`` (run as the installed script) or
``export NAME=value`` (sets a variable for the commands after it); nothing else may be run from a
console block, so nothing on a page shows an output that was not produced. The lines after a
command are its output (stdout and stderr, in order), compared line by line after stripping
trailing spaces: ``...`` on a line of its own stands for any number of lines, and inside a line
for any text. A last line ``[N]`` is the exit status (0 when there is none).

A page's console blocks run in a fresh folder holding the page's files: every fenced block with a
``title="NAME"`` (```toml title="config.toml"```, ```csv title="creators/a.csv"```) is written
there under its name. In them ``http://127.0.0.1:8765`` is the simulated upstream the tests start
(on a free port, shown as 8765 in outputs). An HTML comment
``<!-- example: balance=N tokens=a,b -->`` just before a console block sets the simulator's knobs
for that block (the balance of billed calls left, the accepted tokens); ``sources=Lilyy,Anna``
stores, before the block, the follower counts and notes the simulator serves for those
configured creators, as fetching their ``fans`` and ``notes`` sources stores them
(``support.sources``: a first note-list visit six days before the simulator's now, then one
at it).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
#: the simulator's address as the docs show it; the tests substitute the real one
DOC_BASE_URL = "http://127.0.0.1:8765"

_BLOCK = re.compile(
    r"(?:<!-- example: (?P<knobs>[^>]*?) -->\n)?"
    r"^```(?P<lang>[a-z]+)(?P<attrs>[^\n]*)\n(?P<body>.*?)^```$",
    re.M | re.S,
)
_STATUS = re.compile(r"^\[(\d+)\]$")


@dataclass
class Step:
    """One ``$`` line and what it prints."""

    line: int  # 1-based line number in the page
    command: str
    expected: list[str] = field(default_factory=list)
    status: int = 0

    @property
    def argv(self) -> list[str]:
        return shlex.split(self.command)


@dataclass
class Block:
    page: Path
    line: int
    steps: list[Step]
    knobs: dict[str, str]

    @property
    def id(self) -> str:
        return f"{self.page.name}:{self.line}"


@dataclass
class Page:
    path: Path
    files: dict[str, str]  # name -> content, from the blocks with a title
    blocks: list[Block]


def parse_page(path: Path) -> Page:
    text = path.read_text(encoding="utf-8")
    files: dict[str, str] = {}
    blocks: list[Block] = []
    for match in _BLOCK.finditer(text):
        start = text.count("\n", 0, match.start("body")) + 1
        lang, attrs, body = match["lang"], match["attrs"], match["body"]
        title = re.search(r'title="([^"]+)"', attrs)
        if title:
            name = title.group(1)
            if name.startswith("/") or ".." in name or name in files:
                raise ValueError(f"{path.name}:{start}: bad or repeated file name {name!r}")
            files[name] = body
        if lang != "console":
            continue
        knobs = dict(k.split("=", 1) for k in (match["knobs"] or "").split())
        steps: list[Step] = []
        for offset, raw in enumerate(body.splitlines()):
            if raw.startswith("$ "):
                steps.append(Step(start + offset, raw[2:].strip()))
            elif not steps:
                raise ValueError(f"{path.name}:{start + offset}: output before the first '$' line")
            else:
                steps[-1].expected.append(raw.rstrip())
        for step in steps:
            if step.expected and _STATUS.match(step.expected[-1]):
                step.status = int(step.expected.pop()[1:-1])
        blocks.append(Block(path, start, steps, knobs))
    return Page(path, files, blocks)


def pages() -> list[Page]:
    """Every page that has console blocks."""
    return [page for page in map(parse_page, PAGES) if page.blocks]


def output_pattern(expected: list[str]) -> re.Pattern[str]:
    """A regex for the whole output: ``...`` alone matches any lines, inside a line any text."""
    parts = []
    for line in expected:
        if line == "...":
            parts.append(r"(?:[^\n]*\n)*?")
        else:
            parts.append(".*?".join(map(re.escape, line.split("..."))) + r"\n")
    return re.compile("".join(parts))


def matches(expected: list[str], output: str) -> bool:
    lines = [line.rstrip() for line in output.splitlines()]
    text = "".join(f"{line}\n" for line in lines)
    return output_pattern(expected).fullmatch(text) is not None
