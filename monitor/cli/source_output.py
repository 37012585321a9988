"""The follower and note listings on the terminal and in files: ``history --source fans`` (a table
of daily counts with their change, CSV, JSON, a sparkline) and ``notes`` (a table, CSV, JSON).
Formats only; no I/O but the stream it is handed. Titles are untrusted: a table shows them as
one line without control or bidirectional formatting characters, cut to a width.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from typing import Any, TextIO

from monitor.cli.history_output import csv_cell
from monitor.cli.output import table
from monitor.display import (
    cut_width,
    format_number,
    format_pct,
    metric_label,
    one_line,
    sparkline,
)

#: terminal columns a note's title takes in the ``notes`` table (two per CJK character)
TITLE_WIDTH = 32
_NOTE_METRICS = ("reads", "likes", "collects")


def signed(value: int | None) -> str:
    """A change as every listing writes it: '+1,234', '-56', '0'; '-' when unknown."""
    if value is None:
        return "-"
    return f"+{value:,}" if value > 0 else f"{value:,}"


def print_followers(days: Sequence[Any], fmt: str, out: TextIO) -> None:
    """Daily follower counts: CSV and JSON keep the names (``fans``, ``change``) and raw values;
    the table shows the label and the change signed."""
    if fmt == "csv":
        writer = csv.writer(out)
        writer.writerow(["date_key", "fans", "change"])
        writer.writerows([d.day.isoformat(), d.fans, d.change] for d in days)
    elif fmt == "json":
        records = [
            {"date_key": d.day.isoformat(), "fans": d.fans, "change": d.change} for d in days
        ]
        json.dump(records, out, indent=1)
        out.write("\n")
    else:
        table(
            ("date_key", metric_label("fans"), "change"),
            ([d.day.isoformat(), d.fans, signed(d.change)] for d in days),
            out,
            right=(2,),
        )


def plot_followers(days: Sequence[Any], out: TextIO, width: int) -> None:
    """The follower counts as a sparkline between their first and last day, with min, max,
    last and the change over the days shown."""
    label = metric_label("fans")
    values = [float(d.fans) for d in days]
    first, last = days[0], days[-1]
    out.write(f"{label}  {first.day} → {last.day}  ({len(days)} points)\n")
    out.write(f"{sparkline(values, width)}\n")
    change = last.fans - first.fans
    pct = format_pct(change / first.fans * 100) if first.fans else "n/a"
    out.write(
        f"min {format_number(min(values))}  max {format_number(max(values))}  "
        f"last {format_number(last.fans)}  change {signed(change)} ({pct})\n"
    )


def _kind(note: Any) -> str:
    """'video' or 'photo', with 'ad' for a cooperation note."""
    return ("video" if note.video else "photo") + (" ad" if note.cooperation else "")


def print_notes(lines: Sequence[Any], fmt: str, out: TextIO) -> None:
    """Notes newest first. JSON is what the console API gives for each; CSV the same, flat
    (``reads_gained`` …), with formula-like cells quoted; the table the day, type, title (one
    line, cut), the totals, the reads gained since first seen and the link."""
    if fmt == "json":
        json.dump([line.as_json() for line in lines], out, indent=1, ensure_ascii=False)
        out.write("\n")
    elif fmt == "csv":
        writer = csv.writer(out)
        flat = [_flat(line.as_json()) for line in lines]
        keys = list(flat[0]) if flat else []
        writer.writerow(keys)
        writer.writerows([csv_cell(row[k]) for k in keys] for row in flat)
    else:
        table(
            ("published", "type", "title", *_NOTE_METRICS, "reads gained", "link"),
            (
                [
                    line.note.published.isoformat(),
                    _kind(line.note),
                    cut_width(one_line(line.note.title) or "-", TITLE_WIDTH),
                    *(getattr(line.stats, m) for m in _NOTE_METRICS),
                    signed(line.gained.reads),
                    line.note.url,
                ]
                for line in lines
            ),
            out,
            right=(6,),
        )


def _flat(record: dict[str, Any]) -> dict[str, Any]:
    """A note's JSON with ``gained`` as ``reads_gained``, ``likes_gained``, ``collects_gained``."""
    gained = record.pop("gained")
    out = {}
    for key, value in record.items():
        out[key] = value
        if key == "collects":
            out.update({f"{m}_gained": gained[m] for m in _NOTE_METRICS})
    return out
