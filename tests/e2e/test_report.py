"""``creator-monitor report``: the HTML is self-contained, escapes what users typed, and its charts
are really drawn (headless Chromium renders it; the DOM and the screenshot are checked)."""

from __future__ import annotations

import re
import sqlite3
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from support.cli import run_cli
from support.demo import DemoRun, demo_config
from support.report import count_color, render

from monitor.service.reporting.report import (
    REPORT_METRICS,
    CreatorSeries,
    Line,
    ReportData,
    top_movers,
)
from monitor.service.reporting.report import (
    render as render_html,
)
from monitor.store.alerts import AlertRow

BLUE = (31, 119, 180)  # the first trace colour; nothing else on the page uses it


def _series(name: str, reads: list[int | None]) -> CreatorSeries:
    dates = [f"2026-11-{day:02d}" for day in range(1, len(reads) + 1)]
    line = Line("DAILY_NOTE/PHOTO_TEXT_AND_VIDEO/DAY_30/ALL", dates)
    line.values = {m: [float(v) if v is not None else None for v in reads] for m in REPORT_METRICS}
    return CreatorSeries(f"{len(name):024x}", name, {line.variant: line})


def test_top_movers_compare_the_latest_point_with_a_week_before() -> None:
    steady = _series("steady", [100] * 10)
    falling = _series("falling", [1000, 1000, 1000, 800, 800, 800, 800, 800, 800, None])
    rising = _series("rising", [50, 50, 10, 10, 10, 10, 10, 10, 10, 30])
    movers = top_movers([steady, falling, rising], limit=4)
    # rising: day 10 (30) against day 3 (10); falling: its last value is day 9 (800) vs day 2
    assert [(m.name, m.metric, m.old_date, m.old, m.new_date, m.new) for m in movers] == [
        ("rising", "read", "2026-11-03", 10.0, "2026-11-10", 30.0),
        ("rising", "engage", "2026-11-03", 10.0, "2026-11-10", 30.0),
        ("rising", "imp", "2026-11-03", 10.0, "2026-11-10", 30.0),
        ("falling", "read", "2026-11-02", 1000.0, "2026-11-09", 800.0),
    ]
    assert movers[0].pct == pytest.approx(200.0)
    assert movers[3].pct == pytest.approx(-20.0)


def _data(creators: list[CreatorSeries], alerts: list[AlertRow]) -> ReportData:
    return ReportData(
        generated_at=datetime(2026, 11, 28, 12, tzinfo=UTC),
        since=date(2026, 11, 1),
        daily_calls=2000,
        creators=creators,
        alerts=alerts,
        open_alerts=[a for a in alerts if a.state != "resolved"],
        budget=[],
    )


def test_the_page_is_self_contained_and_escapes_names() -> None:
    evil = _series('</script><script>alert("x")</script>', [1, 2, 3, 4, 5, 6, 7, 8, 9])
    alert = AlertRow(
        id=1,
        rule="reads<down>",
        scope=evil.user_id,
        name=evil.name,
        severity="warning",
        state="firing",
        summary="read 9 → 1 <b>",
        pending_since=None,
        fired_at=datetime(2026, 11, 9, 8, tzinfo=UTC),
        resolved_at=None,
    )
    html = render_html(_data([evil], [alert]))
    assert 'alert("x")</script>' not in html
    assert "&lt;/script&gt;&lt;script&gt;" in html  # the heading, escaped
    assert "reads&lt;down&gt;" in html  # the open-alerts table
    # nothing is fetched when the page opens: no external scripts, styles, images or fonts
    assert not re.search(r"<(script|link|img|iframe)[^>]+(src|href)=", html)
    assert "@import" not in html
    assert len(re.findall(r'class="chart-data"', html)) == 1


@pytest.mark.slow
def test_report_renders_charts_in_headless_chromium(
    demo: DemoRun,
    tmp_path: Path,
) -> None:
    config = demo_config(tmp_path, demo.db)
    out = tmp_path / "out" / "report.html"
    out.parent.mkdir()  # report --out refuses a missing folder
    done = run_cli("-c", str(config), "report", "--out", str(out), "--since", "120d")
    assert done.returncode == 0, done.stderr
    assert "8 creators, 240 points, " in done.stdout
    html = out.read_text(encoding="utf-8")
    assert html.count('class="chart-data"') == 8
    for name in ("Lilyy", "Anna", "Momo"):
        assert f"{name} <span" in html

    dom = render(out, tmp_path)
    # each creator's figure: one SVG per chart, a drawn line per metric with real path data
    assert dom.count('class="main-svg"') >= 8
    paths = re.findall(r'<path class="js-line" d="M([^"]+)"', dom)
    # 30 points per series, drawn as one path (the legend's samples are short "h" strokes)
    drawn = [p for p in paths if p.count("L") >= 20]
    # and a follower line per creator whose follower days the demo stored (30 per call)
    with sqlite3.connect(demo.db) as db:
        followed = db.execute(
            "SELECT count(*) FROM (SELECT creator_id FROM follower_counts GROUP BY creator_id "
            "HAVING count(*) > 20)"
        ).fetchone()[0]
    # (plotly draws a run of equal counts as one segment: a flat follower line can fall under
    # the 20-segment mark, so the follower lines are counted at most, and at least one)
    assert 8 * len(REPORT_METRICS) < len(drawn) <= 8 * len(REPORT_METRICS) + followed
    assert "alert fired" in dom  # the markers' legend

    shot = tmp_path / "shot.png"
    render(out, tmp_path, screenshot=shot, size="1280,2200")
    assert count_color(shot, BLUE) > 500  # ~1,400 when drawn; a blank chart area has none


RED = (214, 39, 40)  # the fired marker
GREEN = (44, 160, 44)  # the resolved ring (a lone variant's line is blue)


def _alert(n: int, **fields: object) -> AlertRow:
    values: dict[str, object] = {
        "id": n,
        "rule": f"rule-{n}",
        "scope": "",
        "name": "Lilyy",
        "severity": "warning",
        "state": "resolved",
        "summary": f"alert {n}",
        "pending_since": None,
        "fired_at": None,
        "resolved_at": None,
    }
    values.update(fields)
    return AlertRow(**values)  # type: ignore[arg-type]


@pytest.mark.slow
def test_markers_sit_on_the_data_day_and_both_kinds_show_in_chromium(tmp_path: Path) -> None:
    series = _series("Lilyy", [1000, 1000, 1000, 1000, 600, 600, 600, 1000, 1000, 1000])
    variant = next(iter(series.lines))
    at = lambda day, hour: datetime(2026, 11, day, hour, tzinfo=UTC)  # noqa: E731
    # the reading of day 5 was fetched and fired on day 6; it cleared with the reading of day 8,
    # fetched on day 9; a second alert fired on day 8's reading: inside the resolved ring
    first = _alert(
        1,
        scope=series.user_id,
        variant=variant,
        fired_at=at(6, 8),
        resolved_at=at(9, 8),
        data_day="2026-11-05",
        clear_day="2026-11-08",
    )
    second = _alert(
        2, scope=series.user_id, state="firing", fired_at=at(9, 8), data_day="2026-11-08"
    )
    page = tmp_path / "report.html"
    page.write_text(render_html(_data([series], [first, second])), encoding="utf-8")
    html = page.read_text(encoding="utf-8")
    assert '<section id="period-alerts">' in html
    assert html.count("<td>rule-1</td>") == 1  # the resolved alert is listed, not only counted
    assert "<td>2026-11-05</td>" in html

    dom = render(page, tmp_path)
    line = re.search(r'<path class="js-line" d="M([^"]+)"', dom)
    assert line is not None
    vertices = [float(xy.split(",")[0]) for xy in line.group(1).split("L")]
    # plotly drops collinear vertices; the first and last are days 1 and 10
    step = (vertices[-1] - vertices[0]) / 9
    x_of = lambda day: vertices[0] + (day - 1) * step  # noqa: E731
    points = [float(x) for x in re.findall(r'class="point" transform="translate\(([\d.]+),', dom)]
    # 3 metric rows × (1 resolved ring + 2 fired triangles)
    assert len(points) == 9, points
    days = {round(x) for x in points}
    assert days == {round(x_of(5)), round(x_of(8))}  # the data days, not the fetch days 6, 9

    shot = tmp_path / "markers.png"
    render(page, tmp_path, screenshot=shot, size="1280,1800")
    assert count_color(shot, RED, tolerance=30) > 20
    assert count_color(shot, GREEN, tolerance=30) > 20


def test_the_page_speaks_the_configured_zone_labels_and_number_format() -> None:
    from dataclasses import replace
    from zoneinfo import ZoneInfo

    from monitor.service.reporting.report import BudgetDay

    big = _series("big", [12000, 12000, 12000, 12000, 12000, 12000, 12000, 12000, 9000])
    alert = AlertRow(
        id=1,
        rule="reads-down",
        scope=big.user_id,
        name=big.name,
        severity="warning",
        state="resolved",
        summary="reads 12,000 → 9,000 (-25.0 %) from 2026-11-02 to 2026-11-09",
        pending_since=None,
        fired_at=datetime(2026, 11, 9, 16, 30, tzinfo=UTC),  # 00:30 on the 10th in Shanghai
        resolved_at=datetime(2026, 11, 10, 2, 0, tzinfo=UTC),
        rolling_median=True,
    )
    data = replace(
        _data([big], [alert]),
        zone=ZoneInfo("Asia/Shanghai"),
        budget=[BudgetDay("2026-11-10", 1234, 1200)],
    )
    html = render_html(data)
    page = re.sub(r"<script.*?</script>", "", html, flags=re.S)
    assert "UTC" not in page
    # the header names the zone once; each time column names it in its header
    assert "2026-11-01 to 2026-11-28 20:00 Asia/Shanghai" in page
    assert "<th>fired (Asia/Shanghai)</th><th>resolved (Asia/Shanghai)</th>" in page
    assert "<td>2026-11-10 00:30</td>\n<td>2026-11-10 10:00</td>" in page
    # movers by the metric labels, numbers with separators, one percentage format
    assert "<td>reads</td>" in page
    assert "12,000 <span" in page
    assert "-25.0 %" in page
    assert '<td class="num">1,234</td>' in page
    # the rolling-median note once on the page, and the charts titled by the labels
    assert page.count("rolling medians") == 1
    assert '"text":"reads"' in html.replace(" ", "")
