"""Followers and notes on every surface, over one real SQLite file: ``history --source fans``,
``notes`` and ``export --source`` in this process, the console's API and pages over a real
socket, and the same input through the command line and the API getting the same answer or the
same words of refusal. Titles are untrusted (markup, a right-to-left override, an escape
sequence, a formula) and CJK: the table stays in line, the page shows them as text."""

from __future__ import annotations

import asyncio
import csv
import io
import itertools
import json
import os
import re
import shutil
import sqlite3
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from support.alerting import points
from support.cli import run_cli, simulator
from support.daemon import write_toml
from support.sources import hostile_note, store_sources
from support.tls import tls_context

from monitor.config import load_config
from monitor.display import text_width
from monitor.model import Creator, FollowerPoint, Variant
from monitor.ops.telemetry import Telemetry, serve
from monitor.store import FetchRecord, Store, migrate
from monitor.web.server import console_mount

LILYY = Creator("5c3bf7f7000000000602fd63", "Lilyy", ("fitness",))
ANNA = Creator("5e5f60718293a4b5c6d7e8f9", "Anna", ("beauty",))
NOW = datetime(2026, 11, 30, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai: the newest day is 11-29
HOSTILE = "<script>alert(1)</script>\u202egnp.exe \x1b[31mred"
FORMULA = '=HYPERLINK("http://evil.example/","点我")'
ADMIN = "admin-secret-sources-1"
CHROMIUM = "/usr/bin/chromium"


@dataclass(frozen=True)
class Seeded:
    config: Path
    db: Path


async def _seed(url: str) -> None:
    await migrate.upgrade(url)
    async with Store.open(url) as store:
        ids = await store.sync_creators([LILYY, ANNA])
        await store.schedule_new((cid, Variant(), NOW) for cid in ids.values())
        record = FetchRecord(
            ids[LILYY.user_id],
            Variant(),
            started_at=NOW,
            due_at=None,
            latency_ms=5,
            http_status=200,
            code=0,
            billed=True,
            error=None,
            data=points(date(2026, 11, 1), [1000 + 10 * i for i in range(29)]),
            raw_body=None,
        )
        await store.record_fetches([record])
        extra = [hostile_note(NOW, HOSTILE), hostile_note(NOW, FORMULA)]
        await store_sources(store, [LILYY.user_id], NOW, extra={LILYY.user_id: extra})
        # Anna: followers only (gaining), no note
        days = [date(2026, 11, 22) + timedelta(days=d) for d in range(8)]
        await store.store_followers(
            ids[ANNA.user_id], [FollowerPoint(d, 1000 + 10 * i) for i, d in enumerate(days)]
        )


@pytest.fixture
def seeded(tmp_path: Path) -> Seeded:
    db = tmp_path / "m.db"
    asyncio.run(_seed(f"sqlite+aiosqlite:///{db}"))
    token = tmp_path / "admin.token"
    token.write_text(ADMIN + "\n")
    token.chmod(0o600)
    config = write_toml(
        tmp_path / "config.toml",
        {
            "storage": {"url": f"sqlite+aiosqlite:///{db}"},
            "budget": {"timezone": "Asia/Shanghai", "daily_calls": 5000},
            "http": {"token_file": str(token)},
            "creators": [
                {"user_id": LILYY.user_id, "name": "Lilyy", "sources": ["core", "fans", "notes"]},
                {"user_id": ANNA.user_id, "name": "Anna"},
            ],
        },
    )
    return Seeded(config, db)


@pytest_asyncio.fixture
async def console(seeded: Seeded) -> AsyncIterator[str]:
    """The console over the seeded file, in this process on a real socket; its URL."""

    async def healthy() -> bool:
        return True

    async with AsyncExitStack() as stack:
        mount = await console_mount(load_config(seeded.config), stack, {})
        endpoint = await serve("127.0.0.1:0", Telemetry(), healthy, mount=mount)
        stack.push_async_callback(endpoint.close)
        yield endpoint.url


def cli(seeded: Seeded, *argv: str) -> tuple[int, str, str]:
    done = run_cli("-c", seeded.config, *argv)
    return done.returncode, done.stdout, done.stderr


def error_line(stderr: str) -> str:
    """The one ``error:`` line of a refusal (a warning of the config may come before it)."""
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, stderr
    return errors[0]


def sql(seeded: Seeded, query: str, *params: object) -> list[tuple[object, ...]]:
    with sqlite3.connect(seeded.db) as db:
        return db.execute(query, params).fetchall()


def stored_notes(seeded: Seeded) -> int:
    """Lilyy's notes: two pages of the simulator's eight, seen six days apart, and the two
    hostile ones; fewer than the default limit of 20."""
    count = int(str(sql(seeded, "SELECT count(*) FROM notes")[0][0]))
    assert 10 <= count < 20
    return count


def lilyy_followers(seeded: Seeded) -> list[tuple[str, int]]:
    rows = sql(
        seeded,
        "SELECT date_key, fans FROM follower_counts f JOIN creators c ON c.id = f.creator_id "
        "WHERE c.user_id = ? ORDER BY date_key",
        LILYY.user_id,
    )
    return [(str(d), int(str(n))) for d, n in rows]


# --- the command line ------------------------------------------------------------------------


def test_history_fans_shows_each_day_with_its_change(seeded: Seeded) -> None:
    stored = lilyy_followers(seeded)
    assert len(stored) == 30
    code, out, _ = cli(seeded, "history", "Lilyy", "--source", "fans", "--since", stored[-4][0])
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["date_key", "followers", "change"]
    for line, before, now in zip(lines[1:], stored[-5:-1], stored[-4:], strict=True):
        assert line.split() == [now[0], f"{now[1]:,}", f"{now[1] - before[1]:+,}"]
    assert len({text_width(line) for line in lines}) == 1  # right-aligned columns

    code, out, _ = cli(seeded, "history", "Lilyy", "--source", "fans", "--format", "csv")
    rows = list(csv.reader(io.StringIO(out)))
    assert rows[0] == ["date_key", "fans", "change"]
    assert rows[1] == [stored[0][0], str(stored[0][1]), ""]  # the first day has no day before
    assert [(r[0], int(r[1])) for r in rows[1:]] == stored

    code, out, _ = cli(seeded, "history", "Lilyy", "--source", "fans", "--format", "json")
    assert json.loads(out)[-1] == {
        "date_key": stored[-1][0],
        "fans": stored[-1][1],
        "change": stored[-1][1] - stored[-2][1],
    }

    code, out, _ = cli(seeded, "history", "Lilyy", "--source", "fans", "--plot")
    first, spark, stats = out.splitlines()
    assert first == f"followers  {stored[0][0]} → {stored[-1][0]}  (30 points)"
    assert set(spark) <= set("▁▂▃▄▅▆▇█")
    assert stats.startswith(f"min {min(n for _, n in stored):,}  max ")
    assert f"change {stored[-1][1] - stored[0][1]:+,}" in stats


def test_history_of_core_is_as_before(seeded: Seeded) -> None:
    plain = cli(seeded, "history", "Lilyy")
    assert plain[:2] == cli(seeded, "history", "Lilyy", "--source", "core")[:2]
    assert plain[1].splitlines()[0].split()[:3] == ["date_key", "impressions", "reads"]
    assert len(plain[1].splitlines()) == 30


def _link_column(line: str) -> int:
    return text_width(line[: line.index("https://") if "https://" in line else line.index("link")])


def test_notes_lists_newest_first_in_line_with_plain_titles(seeded: Seeded) -> None:
    code, out, _ = cli(seeded, "notes", "Lilyy")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["published", "type", "title"]
    rows = lines[1:]
    assert len(rows) == stored_notes(seeded)
    published = [row.split()[0] for row in rows]
    assert published == sorted(published, reverse=True)
    # CJK titles take two columns a character: the link column still starts at one place
    assert any(re.search(r"[\u4e00-\u9fff]", row) for row in rows)
    assert len({_link_column(line) for line in lines}) == 1
    # the hostile title: one plain line, cut, no escape sequence or bidi override
    assert "\x1b" not in out
    assert "\u202e" not in out
    hostile = next(row for row in rows if "alert(1)" in row)
    assert "  <script>alert(1)</script>gnp.ex…  " in hostile  # 32 columns at most
    assert "photo ad" in hostile
    # reads gained: the latest reads against the first time the note was seen
    note_id, gained = sql(
        seeded,
        "SELECT note_id, max(reads) - min(reads) AS gained FROM note_observations "
        "GROUP BY note_id ORDER BY gained DESC LIMIT 1",
    )[0]
    row = next(row for row in rows if row.endswith(f"/{note_id}"))
    assert f"{int(str(gained)):+,}" in row.split()

    code, out, _ = cli(seeded, "notes", "Lilyy", "--limit", "2")
    assert len(out.splitlines()) == 3
    code, out, _ = cli(seeded, "notes", "Lilyy", "--since", "2026-11-25")
    assert all(row.split()[0] >= "2026-11-25" for row in out.splitlines()[1:])


def test_notes_as_json_and_csv(seeded: Seeded) -> None:
    _, out, _ = cli(seeded, "notes", "Lilyy", "--format", "json", "--limit", "30")
    notes = json.loads(out)
    assert len(notes) == sql(seeded, "SELECT count(*) FROM notes")[0][0]
    hostile = next(n for n in notes if n["title"] == HOSTILE)  # JSON keeps it as stored
    assert hostile["brand"] == "<b>Brand</b>"
    assert hostile["url"] == f"https://www.xiaohongshu.com/explore/{hostile['note_id']}"
    assert set(hostile["gained"]) == {"reads", "likes", "collects"}

    _, out, _ = cli(seeded, "notes", "Lilyy", "--format", "csv", "--limit", "30")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert len(rows) == len(notes)
    formula = next(r for r in rows if "HYPERLINK" in r["title"])
    assert formula["title"] == "'" + FORMULA  # a spreadsheet shows it as text
    assert {"reads_gained", "likes_gained", "collects_gained", "url"} <= set(rows[0])


def test_export_streams_followers_and_note_observations(seeded: Seeded) -> None:
    _, out, err = cli(seeded, "export", "--source", "fans")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert list(rows[0]) == ["user_id", "name", "date_key", "fans", "change"]
    assert len(rows) == sql(seeded, "SELECT count(*) FROM follower_counts")[0][0]
    assert f"{len(rows):,} rows exported" in err

    _, out, _ = cli(seeded, "export", "--source", "notes", "--format", "jsonl")
    lines = [json.loads(line) for line in out.splitlines()]
    assert len(lines) == sql(seeded, "SELECT count(*) FROM note_observations")[0][0]
    assert all(line["url"].endswith(line["note_id"]) for line in lines)
    assert any(line["title"] == HOSTILE for line in lines)

    assert cli(seeded, "export")[:2] == cli(seeded, "export", "--source", "core")[:2]


def test_what_fetch_all_stores_is_what_the_listings_show(tmp_path: Path) -> None:
    """The whole way: ``fetch --all`` reads the follower history and the note list from the
    simulator over HTTP for a creator whose sources ask for them, and ``history --source fans``,
    ``notes`` and ``export --source`` show what it stored."""
    with simulator() as base_url:
        config = write_toml(
            tmp_path / "config.toml",
            {
                "api": {"base_url": base_url},
                "storage": {"url": f"sqlite+aiosqlite:///{tmp_path}/f.db"},
                "creators": [
                    {"user_id": LILYY.user_id, "name": "Lilyy", "sources": ["fans", "notes"]}
                ],
            },
        )
        token = {"JUSTONEAPI_TOKEN": "tok-sources-surfaces-0123456789"}
        fetched = run_cli("-c", config, "fetch", "--all", env=token)
    assert fetched.returncode == 0, fetched.stdout + fetched.stderr
    fans = run_cli("-c", config, "history", "Lilyy", "--source", "fans", "--format", "json")
    days = json.loads(fans.stdout)
    assert len(days) == 30
    assert all(b["change"] == b["fans"] - a["fans"] for a, b in itertools.pairwise(days))
    notes = run_cli("-c", config, "notes", "Lilyy", "--format", "json")
    listed = json.loads(notes.stdout)
    assert 8 <= len(listed) <= 16  # the first page, and the second while all were new
    assert all(n["gained"] == {"reads": 0, "likes": 0, "collects": 0} for n in listed)
    exported = run_cli("-c", config, "export", "--source", "notes", "--format", "jsonl")
    assert len(exported.stdout.splitlines()) == len(listed)
    core = run_cli("-c", config, "history", "Lilyy")
    assert (core.returncode, core.stderr.strip()) == (
        1,
        f"error: no stored history for Lilyy ({LILYY.user_id})",
    )


def test_fetch_source_reads_one_series_and_shows_what_it_stored(tmp_path: Path) -> None:
    """``fetch CREATOR --source fans|notes``: one call of that series now, through the gate,
    printed as ``history --source fans`` and ``notes`` print it; ``--dry-run`` is core's."""
    with simulator() as base_url:
        config = write_toml(
            tmp_path / "config.toml",
            {
                "api": {"base_url": base_url},
                "storage": {"url": f"sqlite+aiosqlite:///{tmp_path}/f.db"},
                "creators": [{"user_id": LILYY.user_id, "name": "Lilyy"}],  # core only
            },
        )
        token = {"JUSTONEAPI_TOKEN": "tok-sources-surfaces-0123456789"}
        fans = run_cli("-c", config, "fetch", "Lilyy", "--source", "fans", env=token)
        notes = run_cli("-c", config, "fetch", "Lilyy", "--source", "notes", env=token)
        dry = run_cli("-c", config, "fetch", "Lilyy", "--source", "notes", "--dry-run", env=token)
    assert fans.returncode == 0, fans.stderr
    shown = run_cli("-c", config, "history", "Lilyy", "--source", "fans")
    assert fans.stdout == shown.stdout  # what the fetch stored, as history shows it
    assert notes.returncode == 0, notes.stderr
    assert len([line for line in notes.stdout.splitlines() if "xiaohongshu.com" in line]) == 8
    assert (dry.returncode, error_line(dry.stderr)) == (
        2,
        "error: --dry-run: prints core metrics only; fetch --source fans or notes stores them",
    )
    with sqlite3.connect(tmp_path / "f.db") as db:
        rows = db.execute("SELECT source, count(*) FROM fetches GROUP BY source").fetchall()
    assert rows == [("fans", 1), ("notes", 1)]


def test_what_does_not_fit_a_source_is_refused(seeded: Seeded) -> None:
    code, _, err = cli(seeded, "history", "Lilyy", "--source", "notes")
    assert code == 2
    assert "notes are not a daily series; `creator-monitor notes CREATOR` lists them" in err
    code, _, err = cli(seeded, "history", "Lilyy", "--source", "fans", "--metric", "read")
    assert (code, error_line(err)) == (
        2,
        "error: --metric: is for --source core; followers are one count a day",
    )
    code, _, err = cli(seeded, "notes", "Lilyy", "--since", "2026-11-29")
    assert (code, error_line(err)) == (
        1,
        f"error: no stored notes of Lilyy ({LILYY.user_id}) published since 2026-11-29",
    )


# --- the same input through the command line and the API ---------------------------------------

SAME = [
    (["notes", "Lily"], "creators/Lily/notes", 2, 400),
    (["history", "Lily", "--source", "fans"], "creators/Lily/fans", 2, 400),
    (["history", "Lilyy", "--source", "fnas"], "creators/Lilyy/series?source=fnas", 2, 400),
    (["history", "lilyy", "--source", "fans"], "creators/lilyy/fans", 2, 400),
    (["notes", "Lilyy", "--limit", "0"], "creators/Lilyy/notes?limit=0", 2, 400),
    (["notes", "Lilyy", "--limit", "x"], "creators/Lilyy/notes?limit=x", 2, 400),
    (["notes", "Lilyy", "--since", "soon"], "creators/Lilyy/notes?since=soon", 2, 400),
    (["notes", "Anna"], "creators/Anna/notes", 1, 404),
    (["notes", "Lilyy", "--since", "2026-11-29"], "creators/Lilyy/notes?since=2026-11-29", 1, 404),
    (
        ["history", "5c3bf7f7000000000602fd64", "--source", "fans"],
        "creators/5c3bf7f7000000000602fd64/fans",
        1,
        404,
    ),
]


def _words(text: str) -> str:
    """A refusal's words, without where it came from: the command line's ``error: --limit:``
    or ``(see: … --help)``, the API's ``limit:``."""
    text = re.sub(r" \(see: [^)]*--help\)$", "", text.removeprefix("error: "))
    return re.sub(r"^(CREATOR|creator|--?[a-z]+|source|limit|since): ", "", text)


@pytest.mark.parametrize(
    ("argv", "path", "exit_code", "status"), SAME, ids=[p for _, p, *_ in SAME]
)
async def test_the_same_input_gets_the_same_refusal(
    seeded: Seeded, console: str, argv: list[str], path: str, exit_code: int, status: int
) -> None:
    code, _, err = await asyncio.to_thread(cli, seeded, *argv)
    async with _api(console) as api:
        reply = await api.get(f"/api/v1/{path}")
    assert (code, reply.status_code) == (exit_code, status)
    said = error_line(err)
    assert _words(said) == _words(reply.json()["error"]), (said, reply.text)


async def test_the_same_notes_and_followers_through_both(seeded: Seeded, console: str) -> None:
    _, out, _ = await asyncio.to_thread(cli, seeded, "notes", "Lilyy", "--format", "json")
    _, fans, _ = await asyncio.to_thread(
        cli, seeded, "history", "Lilyy", "--source", "fans", "--format", "json"
    )
    async with _api(console) as api:
        notes = (await api.get("/api/v1/creators/Lilyy/notes")).json()
        by_id = (await api.get(f"/api/v1/creators/{LILYY.user_id}/fans")).json()
        by_name = (await api.get("/api/v1/creators/Lilyy/fans")).json()
        as_series = (await api.get("/api/v1/creators/Lilyy/series?source=fans")).json()
    assert notes == {"user_id": LILYY.user_id, "name": "Lilyy", "notes": json.loads(out)}
    assert len(notes["notes"]) == stored_notes(seeded)  # fewer than the default limit
    assert by_id == by_name == as_series
    assert [(p["date"], p["fans"], p["change"]) for p in by_id["points"]] == [
        (p["date_key"], p["fans"], p["change"]) for p in json.loads(fans)
    ]


# --- the API and the pages ----------------------------------------------------------------------


def _api(base: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=base, headers={"Authorization": f"Bearer {ADMIN}"}, verify=tls_context()
    )


async def test_the_api_takes_since_and_limit_as_the_command_line_does(
    seeded: Seeded, console: str
) -> None:
    async with _api(console) as api:
        recent = (await api.get("/api/v1/creators/Lilyy/fans?since=2026-11-27")).json()
        assert [p["date"] for p in recent["points"]] == ["2026-11-27", "2026-11-28", "2026-11-29"]
        assert recent["points"][0]["change"] is not None  # from the day before ``since``
        two = (await api.get("/api/v1/creators/Lilyy/notes?limit=2&since=2026-11-01")).json()
        assert len(two["notes"]) == 2
        mixed = await api.get("/api/v1/creators/Lilyy/series?source=fans&metric=read")
        assert mixed.status_code == 400
        assert mixed.json()["error"] == "metric: is for source core; followers are one count a day"
        refused = await api.get("/api/v1/creators/Lilyy/series?source=notes")
        assert refused.status_code == 400
        assert "notes are not a daily series" in refused.json()["error"]
        core = (await api.get("/api/v1/creators/Lilyy/series?metric=read")).json()
        assert len(core["points"]) == 29  # core as before
        paths = (await api.get("/api/v1/openapi.json")).json()["paths"]
        assert {"/creators/{ref}/fans", "/creators/{ref}/notes"} <= set(paths)


async def test_the_creator_page_shows_followers_and_notes_as_text(
    seeded: Seeded, console: str
) -> None:
    async with _api(console) as api:
        html = (await api.get(f"/creators/{LILYY.user_id}?lang=en")).text
        anna = (await api.get(f"/creators/{ANNA.user_id}?lang=en")).text
    data = re.search(r'<script type="application/json" id="fans-data">(.*?)</script>', html)
    assert data is not None
    chart = json.loads(data.group(1))
    assert list(zip(chart["dates"], chart["metrics"]["fans"], strict=True)) == lilyy_followers(
        seeded
    )
    table = html[html.index('<table class="grid" id="notes">') :]
    table = table[: table.index("</table>")]
    assert table.count("<tr>") == 1 + stored_notes(seeded)  # the header and each note
    assert "&lt;script&gt;alert(1)&lt;/script&gt;gnp.exe" in table
    assert "<script>alert" not in html
    assert "\u202e" not in html
    assert "\x1b" not in html
    assert "&lt;b&gt;Brand&lt;/b&gt;" in table
    links = re.findall(r'<a href="(https://www\.xiaohongshu\.com/explore/[0-9a-f]{24})"', table)
    assert len(links) == stored_notes(seeded)
    assert "<bdi>" in table
    # Anna: followers, no notes; nothing-to-show sections are left out
    assert 'id="fans-data"' in anna
    assert 'id="notes"' not in anna


async def test_the_overview_sorts_by_follower_change(seeded: Seeded, console: str) -> None:
    async with _api(console) as api:
        gained = (await api.get("/api/v1/creators?sort=fans_change")).json()["creators"]
        lost = (await api.get("/api/v1/creators?sort=fans_change_asc")).json()["creators"]
        page = (await api.get("/?sort=fans_change_asc&lang=zh")).text
        bad = await api.get("/api/v1/creators?sort=fans_chang")
    assert [c["name"] for c in gained] == ["Anna", "Lilyy"]
    assert [c["name"] for c in lost] == ["Lilyy", "Anna"]
    anna = gained[0]["followers"]
    assert (anna["first"], anna["last"]) == (1000, 1070)
    assert 'id="col-fans"' in page
    assert "粉丝流失最多" in page
    assert page.index("/creators/" + LILYY.user_id) < page.index("/creators/" + ANNA.user_id)
    assert bad.status_code == 400
    assert bad.json()["error"] == "sort: unknown order 'fans_chang'; did you mean 'fans_change'?"


@pytest.mark.slow
@pytest.mark.skipif(
    not Path(CHROMIUM).exists() and not shutil.which("chromium"), reason="no Chromium"
)
async def test_the_follower_chart_is_drawn_in_chromium(console: str) -> None:
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium"),
            args=["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"],
            headless=True,
        )
        try:
            context = await browser.new_context(
                extra_http_headers={"Authorization": f"Bearer {ADMIN}"}
            )
            tab = await context.new_page()
            await tab.goto(f"{console}/creators/{LILYY.user_id}?lang=en")
            fans = tab.locator('svg.chart[data-series="fans-data"][data-drawn="1"] path.line')
            assert await fans.count() == 1
            core = tab.locator('svg.chart[data-metric="read"][data-drawn="1"] path.line')
            assert await core.count() == 1  # the metric charts are drawn as before
            if folder := os.environ.get("CONSOLE_SCREENS"):
                await tab.screenshot(path=str(Path(folder) / "followers.png"), full_page=True)
        finally:
            await browser.close()
