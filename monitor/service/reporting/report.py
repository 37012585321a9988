"""``creator-monitor report``: one self-contained HTML file with a chart per creator and metric
(the followers too, for a creator that has them) and the notes first seen in the period.

Owns gathering the report's data through ``Store`` and rendering it; speaks no SQL, sends nothing.
Charts are plotly figures drawn by plotly.js, inlined so that the file needs no network to view.
"""

from __future__ import annotations

import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from importlib import resources
from pathlib import Path
from zoneinfo import ZoneInfo

import jinja2
from markupsafe import Markup
from plotly import graph_objects as go  # type: ignore[import-untyped]
from plotly.offline import get_plotlyjs  # type: ignore[import-untyped]
from plotly.subplots import make_subplots  # type: ignore[import-untyped]

from monitor.display import (
    ROLLING_NOTE,
    format_pct,
    format_value,
    local_time,
    metric_label,
    one_line,
    with_zone,
    zone_name,
)
from monitor.model import FANS
from monitor.notify.summary import describe
from monitor.service.reporting.source_view import NoteLine
from monitor.store import Store
from monitor.store.alerts import AlertRow

#: the metrics charted per creator, in this order (the costs are often NULL: see the tables)
REPORT_METRICS: tuple[str, ...] = ("read", "engage", "imp")
#: how far back a mover's value is compared with
MOVER_SPAN = timedelta(days=7)
TOP_MOVERS = 10
#: history read before a report's first day, so that its movers have a point a week back
#: (two spans: a missing day or two still leaves one)
_MOVER_HISTORY = 2 * MOVER_SPAN
_UTC_ZONE = ZoneInfo("UTC")
#: the new notes a report lists at most (newest first seen first); the count says the rest
REPORT_NOTES = 100
_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#17becf")
#: event → (symbol, colour, size); drawn in this order, so a fired marker on the day its alert
#: resolved sits inside the resolved ring instead of under it
_MARKERS = {
    "resolved": ("circle-open", "#2ca02c", 18),
    "fired": ("triangle-down", "#d62728", 10),
}


@dataclass
class Line:
    """One creator's series in one variant."""

    variant: str
    dates: list[str] = field(default_factory=list)
    values: dict[str, list[float | None]] = field(default_factory=dict)

    def value_at_or_before(self, metric: str, day: str) -> tuple[str, float] | None:
        found = None
        for key, value in zip(self.dates, self.values[metric], strict=True):
            if key > day:
                break
            if value is not None:
                found = (key, value)
        return found


@dataclass
class CreatorSeries:
    user_id: str
    name: str
    lines: dict[str, Line] = field(default_factory=dict)
    #: the daily follower counts (days, counts), when the creator has any in the period
    fans_dates: list[str] = field(default_factory=list)
    fans: list[float | None] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class NewNote:
    """A note the monitor first listed in the period (never one of a first visit's)."""

    user_id: str
    name: str
    line: NoteLine


@dataclass(frozen=True, slots=True)
class Mover:
    name: str
    user_id: str
    variant: str
    metric: str
    old_date: str
    old: float
    new_date: str
    new: float

    @property
    def pct(self) -> float:
        return (self.new - self.old) / self.old * 100


@dataclass(frozen=True, slots=True)
class BudgetDay:
    day: str
    calls: int
    billed: int


@dataclass(frozen=True, slots=True)
class ReportData:
    """What one report shows. Its period is the local days ``since`` to ``last_day``: the
    charts, the alerts and the budget cover exactly these days; movers may look back further."""

    generated_at: datetime
    since: date
    daily_calls: int
    creators: list[CreatorSeries]
    alerts: list[AlertRow]  # every alert that fired or resolved in the period
    open_alerts: list[AlertRow]
    budget: list[BudgetDay]
    zone: ZoneInfo = _UTC_ZONE  # budget.timezone: the zone every time of the page is shown in
    until: date | None = None  # the period's last local day; None: the day it was generated
    #: every mover, largest first, from the history before the period too (None: from the
    #: charted points alone)
    all_movers: list[Mover] | None = None
    #: the notes first seen in the period, newest first (the page lists ``REPORT_NOTES``)
    new_notes: list[NewNote] = field(default_factory=list)

    @property
    def last_day(self) -> date:
        return self.until or self.generated_at.astimezone(self.zone).date()

    @property
    def movers(self) -> list[Mover]:
        if self.all_movers is None:
            return top_movers(self.creators)
        return self.all_movers[:TOP_MOVERS]


async def collect(
    store: Store,
    *,
    since: date,
    now: datetime,
    daily_calls: int,
    zone: ZoneInfo,
    until: date | None = None,
) -> ReportData:
    """Read what the report of the local days ``since`` to ``until`` (default: today) shows:
    their points, the alerts that fired or resolved in them, the calls counted under them, and
    the movers up to ``until``. One streamed pass over the series."""
    last = until or now.astimezone(zone).date()
    first_key, last_key = since.isoformat(), last.isoformat()
    history: dict[str, CreatorSeries] = {}
    async for row in store.export_rows(since - _MOVER_HISTORY):
        if row["date_key"] > last_key:
            continue
        series = history.setdefault(row["user_id"], CreatorSeries(row["user_id"], row["name"]))
        label = "/".join(row[k] for k in ("business", "note_type", "date_type", "advertise"))
        line = series.lines.setdefault(label, Line(label, values={m: [] for m in REPORT_METRICS}))
        line.dates.append(row["date_key"])
        for metric in REPORT_METRICS:
            line.values[metric].append(row[metric])
    movers = top_movers(list(history.values()), limit=None)
    async for row in store.export_followers(since):
        if row["date_key"] <= last_key:
            series = history.setdefault(row["user_id"], CreatorSeries(row["user_id"], row["name"]))
            series.fans_dates.append(row["date_key"])
            series.fans.append(row["fans"])
    charted = [s for s in (_within(s, first_key) for s in history.values()) if s.lines or s.fans]
    start = datetime.combine(since, time(), tzinfo=zone)
    end = min(now, datetime.combine(last + timedelta(days=1), time(), tzinfo=zone))
    new_notes = await _new_notes(store, start, end)
    alerts = [
        a
        for a in await store.list_alerts(limit=100_000)
        if any(t is not None and start <= t < end for t in (a.fired_at, a.resolved_at))
    ]
    days = [since + timedelta(days=n) for n in range((last - since).days + 1)]
    budget = [BudgetDay(d.isoformat(), *await store.ledger_label(d.isoformat())) for d in days]
    return ReportData(
        generated_at=now,
        since=since,
        daily_calls=daily_calls,
        creators=sorted(charted, key=lambda c: (c.name.casefold(), c.user_id)),
        alerts=alerts,
        open_alerts=await store.list_alerts(open_only=True),
        budget=[b for b in budget if b.calls or b.billed],
        zone=zone,
        until=until,
        all_movers=movers,
        new_notes=new_notes,
    )


async def _new_notes(store: Store, start: datetime, end: datetime) -> list[NewNote]:
    """The notes first listed in [start, end), newest first; a first visit's are the baseline
    and never among them."""
    found = [(cid, r) for cid, r in await store.new_notes(start) if r.first_seen_at < end]
    names = await store.creator_names([cid for cid, _ in found])
    return [
        NewNote(*names.get(cid, ("", "")), NoteLine.of(record)) for cid, record in reversed(found)
    ]


def _within(series: CreatorSeries, first_key: str) -> CreatorSeries:
    """``series`` with only the points from ``first_key`` on (the history before is for the
    movers, not for the charts; the followers are read from the period's first day)."""
    kept = CreatorSeries(series.user_id, series.name, {}, series.fans_dates, series.fans)
    for label, line in series.lines.items():
        at = next((i for i, day in enumerate(line.dates) if day >= first_key), len(line.dates))
        if at < len(line.dates):
            values = {m: v[at:] for m, v in line.values.items()}
            kept.lines[label] = Line(label, line.dates[at:], values)
    return kept


def top_movers(creators: Sequence[CreatorSeries], limit: int | None = TOP_MOVERS) -> list[Mover]:
    """The largest changes of the charted metrics: latest point against ``MOVER_SPAN`` before
    (``limit`` None: all of them)."""
    movers: list[Mover] = []
    for series in creators:
        for line in series.lines.values():
            for metric in REPORT_METRICS:
                latest = line.value_at_or_before(metric, "9999-12-31")
                if latest is None:
                    continue
                back = date.fromisoformat(latest[0]) - MOVER_SPAN
                earlier = line.value_at_or_before(metric, back.isoformat())
                if earlier is None or not earlier[1]:
                    continue
                movers.append(
                    Mover(series.name, series.user_id, line.variant, metric, *earlier, *latest)
                )
    movers.sort(key=lambda m: abs(m.pct), reverse=True)
    return movers if limit is None else movers[:limit]


def creator_figure(series: CreatorSeries, alerts: Sequence[AlertRow]) -> go.Figure:
    """One figure per creator: a row (its own chart and y axis) per metric, alert markers; a
    last row of followers for a creator that has them."""
    metrics = REPORT_METRICS if series.lines else ()
    rows = len(metrics) + (1 if series.fans else 0)
    fig = make_subplots(
        rows=rows,
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.06,
        subplot_titles=[metric_label(m) for m in (*metrics, *([FANS] if series.fans else []))],
    )
    if series.fans:
        label = metric_label(FANS)
        fig.add_trace(
            go.Scatter(
                x=series.fans_dates,
                y=series.fans,
                mode="lines",
                name=label,
                line={"color": "#c2185b", "width": 2},
                hovertemplate=f"%{{x}}<br>{label} %{{y:,}}<extra></extra>",
            ),
            row=rows,
            col=1,
        )
    for row, metric in enumerate(metrics, start=1):
        for index, line in enumerate(series.lines.values()):
            fig.add_trace(
                go.Scatter(
                    x=line.dates,
                    y=line.values[metric],
                    mode="lines",
                    name=line.variant,
                    legendgroup=line.variant,
                    showlegend=row == 1,
                    line={"color": _COLORS[index % len(_COLORS)], "width": 2},
                    hovertemplate=(
                        f"%{{x}}<br>{metric_label(metric)} %{{y:,}}<extra>{line.variant}</extra>"
                    ),
                ),
                row=row,
                col=1,
            )
        _add_markers(fig, series, metric, row, alerts)
    fig.update_layout(
        height=170 * rows + 90,
        margin={"l": 60, "r": 20, "t": 40, "b": 30},
        legend={"orientation": "h", "y": 1.08},
        template="plotly_white",
        hovermode="x unified",
    )
    return fig


def marker_day(alert: AlertRow, event: str, zone: ZoneInfo = _UTC_ZONE) -> str | None:
    """The data day a marker belongs on: the day of the reading that fired (or cleared) the
    alert; for an alert about no reading (stale, api_error), the local day it happened."""
    day = alert.data_day if event == "fired" else alert.clear_day
    if day is not None:
        return day
    moment: datetime | None = getattr(alert, f"{event}_at")
    return None if moment is None else moment.astimezone(zone).date().isoformat()


def _add_markers(
    fig: go.Figure, series: CreatorSeries, metric: str, row: int, alerts: Sequence[AlertRow]
) -> None:
    """Fired and resolved markers of this creator's alerts, on the data day and on the line of
    the alert's variant, on every metric row: the alert log does not say which metric a rule
    watched, and a run of failed calls concerns them all."""
    first = next(iter(series.lines.values()), None)
    if first is None:
        return
    for event, (symbol, color, size) in _MARKERS.items():
        xs: list[str] = []
        ys: list[float | None] = []
        texts: list[str] = []
        for alert in alerts:
            day = marker_day(alert, event)
            if alert.scope != series.user_id or day is None:
                continue
            if getattr(alert, f"{event}_at") is None:
                continue
            line = series.lines.get(alert.variant, first)
            near = line.value_at_or_before(metric, day)
            xs.append(day)
            ys.append(near[1] if near else None)
            texts.append(f"{alert.rule} {event}: {alert.summary}")
        if xs:
            fig.add_trace(
                go.Scatter(
                    x=xs,
                    y=ys,
                    mode="markers",
                    name=f"alert {event}",
                    legendgroup=f"alert {event}",
                    showlegend=row == 1,
                    marker={
                        "symbol": symbol,
                        "color": color,
                        "size": size,
                        "line": {"width": 3, "color": color},
                    },
                    text=texts,
                    hovertemplate="data day %{x}<br>%{text}<extra></extra>",
                ),
                row=row,
                col=1,
            )


def _figure_json(fig: go.Figure) -> str:
    """JSON safe to place inside a <script> element: no ``</script>`` can end it early."""
    text: str = fig.to_json(validate=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def render(data: ReportData) -> str:
    """The whole HTML page as one string, plotly.js included."""
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    # the shared ways to show a time (in budget.timezone), a metric's name and a number
    env.filters.update(
        when=lambda moment: local_time(moment, data.zone, missing=""),
        zoned=lambda header: with_zone(header, data.zone),
        label=metric_label,
        value=lambda number, metric=None: format_value(metric, number),
        pct=format_pct,
        describe=lambda alert: describe(alert, "en"),
        line=one_line,
        signed=lambda n: "n/a" if n is None else "0" if n == 0 else f"{n:+,}",
    )
    template = env.from_string(
        (resources.files("monitor.notify") / "templates" / "report.html.j2").read_text(
            encoding="utf-8"
        )
    )
    # the figure JSON has <, > and & escaped (_figure_json), so it is safe unescaped in <script>
    charts = [
        (series, Markup(_figure_json(creator_figure(series, data.alerts))))  # noqa: S704
        for series in data.creators
    ]
    used = sum(b.calls for b in data.budget)
    return template.render(
        data=data,
        charts=charts,
        movers=data.movers,
        budget_used=used,
        metrics=REPORT_METRICS,
        followers=any(series.fans for series in data.creators),
        new_notes=data.new_notes[:REPORT_NOTES],
        zone=zone_name(data.zone),
        rolling_note=ROLLING_NOTE["en"],
        plotly_js=Markup(get_plotlyjs()),  # noqa: S704 - plotly's own bundle, no user text
    )


def write_output(out: Path, text: str) -> None:
    """``text`` into ``out``. A regular file (or a new one) is replaced atomically through
    ``NAME.partial`` beside it, a symbolic link's target in its place (the link stays); anything
    else (``/dev/stdout``, a FIFO, ``/dev/null``) is written into, never renamed over: as root,
    a rename would put a regular file where the device node was. A failed write leaves no
    ``.partial`` behind."""
    try:
        mode: int | None = out.stat().st_mode  # through links: what a write would reach
    except FileNotFoundError:
        mode = None
    if mode is not None and not stat.S_ISREG(mode):
        with out.open("w", encoding="utf-8") as stream:
            stream.write(text)
        return
    target = out.resolve() if out.is_symlink() else out
    partial = target.with_name(target.name + ".partial")
    try:
        partial.write_text(text, encoding="utf-8")
        partial.replace(target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


@dataclass(frozen=True, slots=True)
class Written:
    path: Path
    creators: int
    points: int
    alerts: int
    size: int


async def write_report(
    store: Store,
    out: Path,
    *,
    since: date,
    now: datetime,
    daily_calls: int,
    zone: ZoneInfo,
) -> Written:
    """Collect, render and write: a file atomically (a reader never sees half a file), a
    stream (``/dev/stdout``, a FIFO, a device) into itself. OSError when it cannot be written."""
    data = await collect(store, since=since, now=now, daily_calls=daily_calls, zone=zone)
    html = render(data)
    write_output(out, html)
    points = sum(len(line.dates) for s in data.creators for line in s.lines.values())
    return Written(out, len(data.creators), points, len(data.alerts), len(html.encode()))
