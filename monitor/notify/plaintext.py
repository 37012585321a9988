"""PURE: a rendered message's Markdown body laid out for a plain-text reader (the text part of
an e-mail). Our templates write a small, known Markdown (headings, bullets, bold, italics,
inline code, links); this gives each its text form instead of letting a mail library derive
text from HTML, which split inline code onto lines of its own and dropped every link's URL.

- ``[Open in Pugongying](https://…)`` → ``Open in Pugongying: https://…`` (a link whose label is
  its URL stays one URL);
- ``**Lilyy**``, ``_note_``, `` `code` `` → their text, on the line where they stand;
- ``## Top movers`` → the heading, underlined;
- bullets, line breaks and blank lines are kept as written.
"""

from __future__ import annotations

import re

from monitor.display import text_width

_LINK = re.compile(r"\[([^\]\n]+)\]\(([^)\s]+)\)")
_CODE = re.compile(r"`([^`\n]+)`")
_BOLD = re.compile(r"\*\*([^*\n]+)\*\*|__([^_\n]+)__")
_ITALIC = re.compile(r"(?<![\w*])[_*]([^_*\n]+)[_*](?![\w*])")
_HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$")
_ESCAPED = re.compile(r"\\([\\`*_{}\[\]()#+\-.!|<>])")
#: an escaped mark is held as a private-use character while the marks around it are read
_HELD = 0xE000


def _link(match: re.Match[str]) -> str:
    label, url = match[1], match[2]
    return url if label.strip() == url else f"{label}: {url}"


def _line(line: str) -> str:
    line = _ESCAPED.sub(lambda m: chr(_HELD + ord(m[1])), line)
    # code first: what is inside backticks is literal, even if it looks like emphasis
    pieces = _CODE.split(line)
    out = []
    for index, piece in enumerate(pieces):
        if index % 2:
            out.append(piece)
            continue
        text = _LINK.sub(_link, piece)
        text = _BOLD.sub(lambda m: m[1] or m[2], text)
        text = _ITALIC.sub(lambda m: m[1], text)
        out.append(text)
    return re.sub("[\ue000-\ue0ff]", lambda m: chr(ord(m[0]) - _HELD), "".join(out))


def plain_text(markdown: str) -> str:
    """``markdown`` (as our templates write it) as plain text (see the module docstring)."""
    lines: list[str] = []
    for raw in markdown.splitlines():
        heading = _HEADING.match(raw)
        if heading:
            text = _line(heading[1])
            lines += [text, "-" * text_width(text)]
        else:
            lines.append(_line(raw.rstrip()))
    return "\n".join(lines).strip("\n") + "\n"
