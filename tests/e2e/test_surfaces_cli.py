"""The CLI's tables agree with the other surfaces: times in ``budget.timezone`` with the zone
named once, metric labels and one number format, derived metrics in ``history``, CJK-aware
column widths, and a pid printed as an id. A real SQLite file, the real command entry point."""

from __future__ import annotations

import asyncio
import csv
import io
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from support.alerting import points
from support.daemon import write_toml

from monitor.cli import output
from monitor.cli.main import main
from monitor.display import format_age, text_width
from monitor.model import AlertState, Creator, Phase, Severity, Variant
from monitor.store import FetchRecord, Store, migrate

WIDE = Creator("5c3bf7f7000000000602fd63", "莉莉健身日记", ("fitness",))
NARROW = Creator("5a0b1c2d3e4f5a6b7c8d9e0f", "Bo", ("food",))
SHANGHAI = ZoneInfo("Asia/Shanghai")
START = date(2025, 11, 20)
T0 = datetime(2025, 12, 11, 2, 0, tzinfo=UTC)


async def _seed(url: str) -> None:
    await migrate.upgrade(url)
    async with Store.open(url) as store:
        ids = await store.sync_creators([WIDE, NARROW])
        await store.schedule_new((ids[c.user_id], Variant(), T0) for c in (WIDE, NARROW))
        for creator in (WIDE, NARROW):
            await store.record_fetches(
                [
                    FetchRecord(
                        ids[creator.user_id],
                        Variant(),
                        started_at=T0,
                        due_at=None,
                        latency_ms=5,
                        http_status=200,
                        code=0,
                        billed=True,
                        error=None,
                        data=points(START, [1000 + 10 * i for i in range(21)]),
                        raw_body=None,
                    )
                ]
            )
        for n, user_id in enumerate((WIDE.user_id, NARROW.user_id)):
            assert await store.commit_transition(
                AlertState(
                    rule=f"reads-down-{n}",
                    scope=user_id,
                    variant=Variant().label,
                    creator_id=ids[user_id],
                    severity=Severity.WARNING,
                    state=Phase.FIRING,
                    metric="read",
                    fired_at=T0,
                    summary="reads 1,200 → 800 (-33.3 %) from 2025-12-03 to 2025-12-10",
                    details={"kind": "change", "rolling_median": True},
                ),
                [],
                now=T0,
                expect=None,
            )


@pytest.fixture
def config(tmp_path: Path) -> Path:
    url = f"sqlite+aiosqlite:///{tmp_path / 'm.db'}"
    asyncio.run(_seed(url))
    return write_toml(
        tmp_path / "c.toml",
        {
            "storage": {"url": url},
            "budget": {"timezone": "Asia/Shanghai"},
            "creators": [
                {"user_id": WIDE.user_id, "name": WIDE.name},
                {"user_id": NARROW.user_id, "name": NARROW.name},
            ],
        },
    )


def run(capsys: pytest.CaptureFixture[str], config: Path, *args: str) -> str:
    code = main(["-c", str(config), *args])
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


def columns_start(line: str, header: str, names: list[str]) -> list[int]:
    """Where each of ``names`` (header words) starts, in terminal columns."""
    return [text_width(line[: line.index(name)]) for name in names if name in header]


def test_table_counts_wide_characters_as_two_columns() -> None:
    out = io.StringIO()
    output.table(("name", "rows"), [["莉莉健身日记", 21], ["Bo", 3]], out)
    lines = out.getvalue().splitlines()
    assert [text_width(line) for line in lines] == [18, 18, 18]
    assert lines[1] == "莉莉健身日记    21"  # 12 columns of name, 2 apart, 4 of "rows"
    assert lines[2] == "Bo" + " " * 15 + "3"


def test_status_columns_line_up_with_cjk_names(
    capsys: pytest.CaptureFixture[str], config: Path
) -> None:
    creators = run(capsys, config, "status").split("\naccount\n")[0].splitlines()[1:]
    header, rows = creators[0], creators[1:]
    variant_at = text_width(header[: header.index("variant")])
    assert len(rows) == 2
    for row in rows:
        assert text_width(row[: row.index("DAILY_NOTE")]) == variant_at, row


def test_an_instance_pid_is_an_id_not_a_quantity() -> None:
    @dataclass
    class Instance:
        id: str = "h1-19518"
        host: str = "h1"
        pid: int = 19518
        version: str = "1.0"
        started_at: datetime = T0
        heartbeat_at: datetime = T0
        leases: int = 1200

    out = io.StringIO()
    output.print_instances([Instance()], T0, out)
    text = out.getvalue()
    assert "19,518" not in text
    assert re.search(r"\b19518\b", text)
    assert "1,200" in text  # a count keeps its separator


def test_silence_add_and_list_speak_the_configured_zone(
    capsys: pytest.CaptureFixture[str], config: Path
) -> None:
    before = datetime.now(UTC)
    added = run(capsys, config, "silence", "add", "--creator", "Bo", "--for", "2h")
    match = re.fullmatch(r"silence (\d+) until (\S+ \S+) Asia/Shanghai\n", added)
    assert match, added
    until = datetime.strptime(match[2], "%Y-%m-%d %H:%M").replace(tzinfo=SHANGHAI)
    assert abs(until - (before + timedelta(hours=2))) < timedelta(minutes=2)
    listed = run(capsys, config, "silence", "list").splitlines()
    assert "until (Asia/Shanghai)" in listed[0]
    assert match[2] in listed[1]
    assert "UTC" not in "\n".join(listed)


def test_alerts_name_the_zone_once_and_the_rolling_note_once(
    capsys: pytest.CaptureFixture[str], config: Path
) -> None:
    text = run(capsys, config, "alerts")
    lines = text.splitlines()
    assert "fired (Asia/Shanghai)" in lines[0]
    assert text.count("Asia/Shanghai") == 2  # the fired and resolved headers
    assert all("2025-12-11 10:00" in line for line in lines[1:3])
    assert text.count("rolling medians") == 1
    # the wide name does not push its row's columns out of line
    starts = [columns_start(line, lines[0], ["warning"]) for line in lines[:3]]
    assert starts[1] == starts[2]


def test_history_shows_a_derived_metric_with_its_label(
    capsys: pytest.CaptureFixture[str], config: Path
) -> None:
    text = run(capsys, config, "history", "Bo", "--metric", "engage_rate", "--metric", "read")
    lines = text.splitlines()
    assert lines[0].split("  ")[0] == "date_key"
    assert "engagement rate" in lines[0]
    assert "reads" in lines[0]
    # engage = read // 10: 100 of 1,000 on the first day
    assert re.fullmatch(r"2025-11-20\s+10\.00 %\s+1,000", lines[1]), lines[1]
    raw = run(capsys, config, "history", "Bo", "--metric", "engage_rate", "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(raw)))
    assert rows[0] == {"date_key": "2025-11-20", "engage_rate": "0.1"}


def test_history_plot_takes_a_derived_metric(
    capsys: pytest.CaptureFixture[str], config: Path
) -> None:
    text = run(capsys, config, "history", "Bo", "--metric", "engage_rate", "--plot")
    assert "engagement rate" in text
    assert "min 10.00 %" in text


def test_a_backtest_says_the_rolling_median_note_once() -> None:
    @dataclass
    class Line:
        when: date
        rule: str
        scope: str
        event: str
        summary: str

    lines = [
        Line(date(2025, 12, d), "reads-down", "Bo", "firing", f"reads 1,000 → 600 on {d}")
        for d in (1, 2, 3)
    ]
    out = io.StringIO()
    output.print_backtest(lines, out, rolling=["reads-down"])
    assert out.getvalue().count("rolling medians") == 1
    quiet = io.StringIO()
    output.print_backtest(lines, quiet, rolling=["engage-floor"])
    assert "rolling medians" not in quiet.getvalue()


def test_an_age_reads_in_its_largest_unit_before_or_after_now() -> None:
    """``status`` columns: how long ago a moment was, or how soon it comes; never for None."""
    ages = [T0 - timedelta(seconds=s) for s in (0, 45, 90, 7200, 3 * 86400)]
    expected = ["0s ago", "45s ago", "2m ago", "2h ago", "3d ago"]
    assert [format_age(at, T0) for at in ages] == expected
    assert format_age(T0 + timedelta(minutes=5), T0) == "in 5m"
    assert format_age(None, T0) == "never"
