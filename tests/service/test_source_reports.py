"""The HTML report and the daily digest on a real store (both backends) with followers and
notes: a follower chart per creator that has counts, the new notes of the period (never the
first visit's baseline), titles shown as text; and for an install that tracks core metrics only,
the same report and digest as before, without the sections that have nothing to show."""

from __future__ import annotations

import json
import re
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from support.alerting import BO, LILYY, points, seed
from support.sources import hostile_note, store_sources

from monitor.config import Config, parse_config
from monitor.model import Creator
from monitor.notify.message import MessageContext
from monitor.notify.plaintext import plain_text
from monitor.notify.rendering import Renderer
from monitor.service.reporting.digest import build_digest
from monitor.service.reporting.report import collect, creator_figure, render
from monitor.service.reporting.scheduled import scoped
from monitor.store import Store

NOW = datetime(2026, 11, 30, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai
SHANGHAI = ZoneInfo("Asia/Shanghai")
SINCE = date(2026, 11, 1)
CREATORS = (Creator(LILYY, "Lilyy", ("fitness",)), Creator(BO, "Bo", ("food",)))
HOSTILE = "<script>alert(1)</script>\u202e[click](javascript:x) **bold**\n# heading"


def _config(store_url: str = "sqlite+aiosqlite:///unused.db") -> Config:
    return parse_config(
        {
            "budget": {"daily_calls": 2000, "timezone": "Asia/Shanghai"},
            "storage": {"url": store_url},
            "notify": {"digest_at": "09:00"},
            "creators": [{"user_id": c.user_id, "name": c.name} for c in CREATORS],
        }
    )


async def _core(store: Store) -> None:
    series = {c.user_id: points(SINCE, [1000 + 5 * i for i in range(29)]) for c in CREATORS}
    await seed(store, CREATORS, series, NOW - timedelta(hours=1))


async def _sources(store: Store) -> None:
    """Lilyy: followers, a baseline visit six days ago and one now, with a hostile title."""
    await _core(store)
    extra = {LILYY: [hostile_note(NOW, HOSTILE)]}
    await store_sources(store, [LILYY], NOW, extra=extra)


def _charts(html: str) -> dict[str, dict[str, object]]:
    """Each creator's plotly figure on the page, by user id."""
    ids = re.findall(r'<h3 id="c-([0-9a-f]{24})">', html)
    specs = re.findall(
        r'<script type="application/json" class="chart-data"[^>]*>(.*?)</script>', html
    )
    return {user: json.loads(spec) for user, spec in zip(ids, specs, strict=True)}


async def test_the_report_charts_followers_and_lists_the_new_notes(store: Store) -> None:
    await _sources(store)
    later = NOW + timedelta(minutes=5)  # the report is made after the visit
    data = await collect(store, since=SINCE, now=later, daily_calls=2000, zone=SHANGHAI)
    lilyy = next(c for c in data.creators if c.user_id == LILYY)
    bo = next(c for c in data.creators if c.user_id == BO)
    lilyy_id = await store.find_creator(LILYY)
    assert lilyy_id is not None
    stored = await store.follower_series(lilyy_id, since=SINCE)
    assert lilyy.fans_dates == [p.date_key.isoformat() for p in stored]
    assert lilyy.fans == [p.fans for p in stored]
    assert bo.fans == []

    first_visit = NOW - timedelta(days=6)
    new = await store.new_notes(first_visit)
    assert {n.line.note.note_id for n in data.new_notes} == {r.note.note_id for _, r in new}
    assert all(n.line.first_seen_at > first_visit for n in data.new_notes)  # no baseline
    assert {n.name for n in data.new_notes} == {"Lilyy"}

    html = render(data)
    section = html[html.index('<section id="new-notes">') :]
    section = section[: section.index("</section>")]
    assert section.count("<tr>") == 1 + len(new)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in section
    assert "<script>alert" not in html
    assert "\u202e" not in section
    assert "<bdi>" in section
    assert "https://www.xiaohongshu.com/explore/" in section
    charts = _charts(html)
    traces = {user: [t.get("name") for t in spec["data"]] for user, spec in charts.items()}  # type: ignore[attr-defined]
    assert "followers" in traces[LILYY]
    assert "followers" not in traces[BO]
    assert "followers where stored" in html

    # a period that ended before the second visit has no new note; another scope neither
    before = await collect(
        store, since=SINCE, until=date(2026, 11, 29), now=later, daily_calls=2000, zone=SHANGHAI
    )
    assert before.new_notes == []
    assert 'id="new-notes"' not in render(before)
    assert scoped(data, {BO}).new_notes == []


async def test_a_core_only_report_is_as_before(store: Store) -> None:
    await _core(store)
    data = await collect(store, since=SINCE, now=NOW, daily_calls=2000, zone=SHANGHAI)
    html = render(data)
    assert 'id="new-notes"' not in html
    assert "followers" not in html
    for series in data.creators:
        figure = creator_figure(series, [])
        assert [t.name for t in figure.data] == ["DAILY_NOTE/PHOTO_TEXT_AND_VIDEO/DAY_30/ALL"] * 3
        assert figure.layout.height == 170 * 3 + 90


async def test_the_digest_shows_the_weeks_follower_moves_and_new_notes(store: Store) -> None:
    await _sources(store)
    config = _config()
    digest = await build_digest(config, store, NOW)
    lilyy_id = await store.find_creator(LILYY)
    assert lilyy_id is not None
    newest = (await store.follower_series(lilyy_id))[-1].date_key
    week = await store.follower_series(lilyy_id, since=newest - timedelta(days=7))
    assert [(m.creator.user_id, m.counts) for m in digest.followers] == [
        (LILYY, tuple(p.fans for p in week))
    ]
    new = await store.new_notes(NOW - timedelta(days=7))
    assert [n.note_id for n in digest.new_notes] == [r.note.note_id for _, r in reversed(new)]

    context = MessageContext(now=NOW, zone=SHANGHAI)
    en = Renderer().render_digest(digest, context, "en")
    zh = Renderer().render_digest(digest, context, "zh")
    assert en.error is None
    assert zh.error is None
    assert "## Followers (the week's largest moves)" in en.body
    assert "## 粉丝变化（本周变化最大）" in zh.body
    old, last = week[0].fans, week[-1].fans
    assert f"{old:,} → {last:,} ({last - old:+,}, " in en.body
    assert "## New notes this week" in en.body
    assert "## 本周新笔记" in zh.body
    line = next(x for x in en.body.splitlines() if "alert" in x)
    # the title is one escaped line: no link, emphasis, heading or HTML of its own
    assert (
        "\\<script\\>alert\\(1\\)\\</script\\>\\[click\\]\\(javascript:x\\) \\*\\*bold\\*\\*"
        in line
    )
    assert "\\# heading" in line
    assert "\u202e" not in en.body
    assert "](javascript" not in en.body
    # mail readers get it back as the words it was
    text = plain_text(en.body)
    assert "<script>alert(1)</script>[click](javascript:x) **bold** # heading" in text


async def test_a_core_only_digest_has_no_follower_or_note_section(store: Store) -> None:
    await _core(store)
    digest = await build_digest(_config(), store, NOW)
    assert (digest.followers, digest.new_notes) == ((), ())
    context = MessageContext(now=NOW, zone=SHANGHAI)
    for language, words in (("en", ("Followers", "New notes")), ("zh", ("粉丝", "新笔记"))):
        body = Renderer().render_digest(digest, context, language).body  # type: ignore[arg-type]
        assert not any(word in body for word in words)
        assert body.count("\n## ") == 4  # movers, fired, resolved, failing: as before
