"""How values read on every surface (CLI, console, report, messages): times in the operator's
zone with the zone named once, metric names from one table, numbers in one format, and the
width a string takes in a terminal. Pure functions; no I/O, no clock.

Conventions:
- a time is 'YYYY-MM-DD HH:MM' in ``budget.timezone``; where times are listed (a table column),
  the column header names the zone ("fired (Asia/Shanghai)"); a lone time in a sentence carries
  it after the time ("2025-12-11 10:00 Asia/Shanghai");
- a metric is shown by its label in ``METRIC_LABELS`` (e.g. ``engage`` is "engagements" /
  "互动"); commands, query parameters, CSV and JSON keep the config's names (``engage``);
- a count is '1,000'; a cost is '253.89'; a rate is '6.73 %'; a missing value is 'n/a';
- untrusted text (a note's title) is ``one_line`` in a terminal or a message, cut to a width
  with ``cut_width``;
- money is '1,234.56 CNY', a price per call '0.0500 CNY'; days left '12.3';
- a duration is ``format_duration`` where a user writes it back into the config ('90m'),
  ``human_duration`` where a message's reader reads it ('2d 3h'), and ``format_age`` for how
  long ago (or how soon) a moment is in a table ('5m ago', 'in 2h').
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from monitor.model import COST_METRICS, DERIVED_METRICS, METRIC_LABELS, Note

#: the note that belongs once beside any list of alerts on rolling-median metrics
ROLLING_NOTE = {
    "en": "Values are rolling medians per note over the window, not daily totals: "
    "a value can fall when a strong note leaves the window.",
    "zh": "数值为窗口内每篇笔记的滚动中位数，而非每日总量：表现好的笔记移出窗口时数值可能下降。",
}


def zone_name(zone: ZoneInfo) -> str:
    """How a zone is named wherever a time is shown: its IANA key ('Asia/Shanghai')."""
    return zone.key


def local_time(moment: datetime | None, zone: ZoneInfo, missing: str = "-") -> str:
    """A stored (aware) time in ``zone``: '2025-12-11 10:00'; the zone is named by the caller,
    once, in the column header (see ``with_zone``) or by ``labelled_time``."""
    if moment is None:
        return missing
    return f"{moment.astimezone(zone):%Y-%m-%d %H:%M}"


def labelled_time(moment: datetime | None, zone: ZoneInfo, missing: str = "-") -> str:
    """A lone time in a sentence: '2025-12-11 10:00 Asia/Shanghai'."""
    if moment is None:
        return missing
    return f"{local_time(moment, zone)} {zone_name(zone)}"


def with_zone(header: str, zone: ZoneInfo) -> str:
    """A column header of times: 'fired (Asia/Shanghai)'."""
    return f"{header} ({zone_name(zone)})"


def metric_label(metric: str | None, language: str = "en") -> str:
    """A metric as people read it: 'engage' → 'engagements' / '互动' (unknown names as given)."""
    if metric is None:
        return ""
    return METRIC_LABELS.get(language, METRIC_LABELS["en"]).get(metric, metric)


def format_number(value: float | None, missing: str = "n/a") -> str:
    """A count or amount: 7100 → '7,100'; 253.891 → '253.89'."""
    if value is None:
        return missing
    if float(value).is_integer():
        return f"{value:,.0f}"
    return f"{value:,.2f}"


def format_value(metric: str | None, value: float | None, missing: str = "n/a") -> str:
    """A metric value: 7100 → '7,100'; a cost → '253.89'; a rate → '6.73 %'; None → 'n/a'."""
    if value is None:
        return missing
    if metric in DERIVED_METRICS:
        return f"{value * 100:.2f} %"
    if metric in COST_METRICS:
        return f"{value:,.2f}"
    return format_number(value, missing)


_NOTE_WORDS = {
    "en": {
        "video": "video",
        "photo": "photo",
        "published": "published ",
        "ad": "ad",
        "untitled": "(untitled)",
        "title": "“{}”",
        "parts": " ({})",
        "comma": ", ",
        "colon": ": ",
    },
    "zh": {
        "video": "视频",
        "photo": "图文",
        "published": "发布于 ",
        "ad": "广告",
        "untitled": "（无标题）",
        "title": "「{}」",
        "parts": "（{}）",
        "comma": "，",
        "colon": "：",
    },
}


def note_type_text(note: Note, language: str = "en") -> str:
    """A note's type as a reader says it: 'video' or 'photo' ('视频' / '图文')."""
    words = _NOTE_WORDS.get(language, _NOTE_WORDS["en"])
    return words["video"] if note.video else words["photo"]


def note_text(note: Note, language: str = "en") -> str:
    """A note as a message names it: its title, type, publishing day and, for a cooperation
    note, 'ad' and the brand: '“Winter care” (video, published 2026-11-05, ad: Lancôme)' /
    '「Winter care」（视频，发布于 2026-11-05，广告：Lancôme）'."""
    words = _NOTE_WORDS.get(language, _NOTE_WORDS["en"])
    title = " ".join(note.title.split())  # a line break in a title would break the message
    parts = [note_type_text(note, language), words["published"] + note.published.isoformat()]
    if note.cooperation:
        parts.append(words["ad"] + (words["colon"] + note.brand if note.brand else ""))
    named = words["title"].format(title) if title else words["untitled"]
    return named + words["parts"].format(words["comma"].join(parts))


def note_age_text(word: str, age: str, language: str = "en") -> str:
    """When a ``note`` rule judges a note (``word``: ``within`` or ``after``; ``age``: '3d'):
    'within 3d of publishing' / '3d after publishing' ('发布3天内' / '发布3天后')."""
    if language == "zh":
        return f"发布{age}{'内' if word == 'within' else '后'}"
    return f"within {age} of publishing" if word == "within" else f"{age} after publishing"


def format_money(
    amount: Decimal | float | None,
    currency: str = "CNY",
    *,
    places: int = 2,
    missing: str = "n/a",
) -> str:
    """An amount of money with its currency, always with cents: '1,150.00 CNY'; a price per
    call takes ``places=4`` ('0.0500 CNY'); None → ``missing``."""
    if amount is None:
        return missing
    return f"{amount:,.{places}f} {currency}"


def format_days(days: float | None, missing: str = "n/a") -> str:
    """Days left: '12.3', '0.4'; a hundred and more whole: '140'; None → ``missing``."""
    if days is None:
        return missing
    return f"{days:,.0f}" if days >= 100 else f"{days:.1f}"


def format_pct(pct: float | None) -> str:
    """A signed percentage: '+4.2 %', '-40.0 %', '0.0 %'; None → 'n/a'."""
    return "n/a" if pct is None else f"{pct:+.1f} %".replace("+0.0 %", "0.0 %")


def text_width(text: str) -> int:
    """Columns ``text`` takes in a terminal: wide and fullwidth (CJK) characters take two,
    combining marks none."""
    return sum(
        0
        if unicodedata.combining(ch)
        else 2
        if unicodedata.east_asian_width(ch) in ("W", "F")
        else 1
        for ch in text
    )


#: bidirectional formatting characters: an RTL override in a note's title would turn the rest
#: of a terminal line (or a message) around
_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def one_line(text: str) -> str:
    """Untrusted text (a note's title) as one line a terminal shows as written: control
    characters (an escape sequence among them) and bidirectional formatting marks dropped,
    runs of whitespace as one space."""
    kept = (
        " " if ch.isspace() else ch
        for ch in text
        if ch not in _BIDI and (ch.isspace() or unicodedata.category(ch) != "Cc")
    )
    return " ".join("".join(kept).split())


def cut_width(text: str, width: int) -> str:
    """``text`` in at most ``width`` terminal columns, ending in "…" when cut (a wide character
    is never split)."""
    if text_width(text) <= width:
        return text
    out, used = [], 0
    for ch in text:
        size = text_width(ch)
        if used + size > width - 1:
            break
        out.append(ch)
        used += size
    return "".join(out) + "…"


def sparkline(values: Sequence[float | None], width: int) -> str:
    """One character per column (values resampled to ``width``); a gap is a space.

    Our own rather than a plotting library: a terminal or a chat message needs only the shape
    of a series, and eight block characters show it with output a test can assert exactly.
    """
    if not values:
        return ""
    width = max(1, min(width, len(values)))
    columns = [values[i * len(values) // width] for i in range(width)]
    known = [v for v in values if v is not None]  # the scale spans every value, not the sample
    if not known:
        return " " * width
    low, high = min(known), max(known)
    span = high - low
    top = len(_BLOCKS) - 1
    return "".join(
        " " if v is None else _BLOCKS[round((v - low) / span * top) if span else top // 2]
        for v in columns
    )


_BLOCKS = "▁▂▃▄▅▆▇█"


def pad(text: str, width: int, *, right: bool = False) -> str:
    """``text`` padded with spaces to ``width`` terminal columns (to the left when ``right``)."""
    fill = " " * max(0, width - text_width(text))
    return fill + text if right else text + fill


def format_duration(delta: timedelta) -> str:
    """``timedelta`` → the config's duration syntax in its largest exact unit: ``365d``,
    ``36h``, ``90m``, ``45s``. What a bound, an advice or a setting shows for a user to write
    back."""
    seconds = int(delta.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def human_duration(delta: timedelta, language: str) -> str:
    """timedelta → '2d 3h' / '2天3小时' for a message's reader: rounded down, minutes only under
    a day."""
    minutes = max(0, int(delta.total_seconds() // 60))
    days, rest = divmod(minutes, 1440)
    hours, mins = divmod(rest, 60)
    units = ("天", "小时", "分钟") if language == "zh" else ("d", "h", "m")
    parts = [f"{days}{units[0]}" if days else "", f"{hours}{units[1]}" if hours else ""]
    if not days:
        parts.append(f"{mins}{units[2]}" if mins or not hours else "")
    return ("" if language == "zh" else " ").join(p for p in parts if p)


def format_age(moment: datetime | None, now: datetime) -> str:
    """How long before ``now`` a moment was, in its largest unit: '5m ago', '2d ago'; 'in 3h'
    for one still ahead; 'never' for None."""
    if moment is None:
        return "never"
    seconds = (now - moment).total_seconds()
    sign = "" if seconds >= 0 else "in "
    seconds = abs(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            text = f"{seconds / size:.0f}{unit}"
            return f"{sign}{text}" if sign else f"{text} ago"
    return f"{sign}{seconds:.0f}s" if sign else f"{seconds:.0f}s ago"
