"""A creator's history on the terminal and in files: the history table, CSV and JSON, the export
stream (CSV or JSON lines), and sparkline plots. Formats only; no I/O but the stream it is handed.
"""

from __future__ import annotations

import csv
import functools
import json
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import date, datetime
from typing import Any, TextIO

from monitor.cli.output import table
from monitor.display import format_value, metric_label, pad, sparkline, text_width
from monitor.model import DERIVED_METRICS, METRICS, DailyPoint

_ID_COLUMNS = ("date_key", "business", "note_type", "date_type", "advertise")


def print_points(points: Sequence[DailyPoint], out: TextIO) -> None:
    """Points as ``history`` shows them: the same columns, labels and alignment."""
    table(
        ("date_key", *(metric_label(m) for m in METRICS)),
        ([p.date_key, *(getattr(p, m) for m in METRICS)] for p in points),
        out,
        right=range(1, len(METRICS) + 1),
    )


def _jsonable(value: object) -> object:
    return value.isoformat() if isinstance(value, date | datetime) else value


def metric_value(row: Mapping[str, Any], metric: str) -> float | None:
    """A stored metric of a history row, or a derived one (``engage_rate``) computed from it."""
    if metric not in DERIVED_METRICS:
        value: float | None = row.get(metric)
        return value
    num, den = (row.get(name) for name in DERIVED_METRICS[metric])
    return None if num is None or not den else float(num) / float(den)


#: what a spreadsheet evaluates at the start of a cell (OWASP's CSV injection list)
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: object) -> object:
    """A CSV cell a spreadsheet shows as text: one starting with = + - @, a tab or a carriage
    return gets a leading single quote (OWASP's rule). Numbers stay numbers (-3 is a number,
    not a formula); JSON output is never changed."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def print_history(
    rows: Sequence[Mapping[str, Any]], metrics: Sequence[str] | None, fmt: str, out: TextIO
) -> None:
    """A creator's series: CSV and JSON keep the config's metric names and raw values (a rate
    as a ratio); the table shows the metrics' labels and formatted values."""
    chosen = list(metrics or METRICS)
    ids = ["date_key"]
    if len({(r["business"], r["note_type"], r["date_type"], r["advertise"]) for r in rows}) > 1:
        ids += ["business", "note_type", "date_type", "advertise"]
    values = [[*(r.get(c) for c in ids), *(metric_value(r, m) for m in chosen)] for r in rows]
    if fmt == "csv":
        writer = csv.writer(out)
        writer.writerow([*ids, *chosen])
        writer.writerows([csv_cell(_jsonable(v)) for v in row] for row in values)
    elif fmt == "json":
        keys = [*ids, *chosen]
        records = [dict(zip(keys, map(_jsonable, row), strict=True)) for row in values]
        json.dump(records, out, indent=1)
        out.write("\n")
    else:
        cut_at = len(ids)
        shown = [
            [*row[:cut_at], *(_shown(m, v) for m, v in zip(chosen, row[cut_at:], strict=True))]
            for row in values
        ]
        right = range(len(ids), len(ids) + len(chosen))
        table([*ids, *(metric_label(m) for m in chosen)], shown, out, right=right)


def _shown(metric: str, value: float | None) -> object:
    """A table cell of a metric: raw where ``_cell`` formats it alike, text for a rate."""
    if value is None or metric not in DERIVED_METRICS:
        return value
    return format_value(metric, value)


async def stream_export(
    rows: AsyncIterator[dict[str, Any]],
    fmt: str,
    out: TextIO,
    on_row: Callable[[int], object] | None = None,
) -> int:
    """Write rows as they come (constant memory); returns how many. ``on_row(1)`` per row."""
    count = 0
    writer = None
    async for row in rows:
        if fmt == "jsonl":
            out.write(json.dumps({k: _jsonable(v) for k, v in row.items()}, ensure_ascii=False))
            out.write("\n")
        else:
            if writer is None:
                writer = csv.DictWriter(out, fieldnames=list(row))
                writer.writeheader()
            writer.writerow({k: csv_cell(_jsonable(v)) for k, v in row.items()})
        count += 1
        if on_row is not None:
            on_row(1)
    return count


def plot_history(
    rows: Sequence[Mapping[str, Any]], metrics: Sequence[str] | None, out: TextIO, width: int
) -> None:
    """Per variant and metric: a sparkline between its first and last date, with min/max/last."""
    by_variant: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        label = "/".join(str(row[c]) for c in _ID_COLUMNS[1:])
        by_variant.setdefault(label, []).append(row)
    chosen = list(metrics or ("read", "engage", "imp"))
    labels = {m: metric_label(m) for m in chosen}
    name_width = max(text_width(label) for label in labels.values())
    for label, series in by_variant.items():
        first, last = series[0]["date_key"], series[-1]["date_key"]
        out.write(f"{label}  {first} → {last}  ({len(series)} points)\n")
        for metric in chosen:
            values = [metric_value(row, metric) for row in series]
            known = [v for v in values if v is not None]
            line = sparkline(values, width - name_width - 2)
            shown = functools.partial(format_value, metric)
            stats = (
                f"min {shown(min(known))}  max {shown(max(known))}  last {shown(values[-1])}"
                if known
                else "no values"
            )
            out.write(f"{pad(labels[metric], name_width)}  {line}\n{' ' * name_width}  {stats}\n")
