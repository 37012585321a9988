"""Every query of the SQL cookbook (docs/sql-cookbook.md) runs against a demo database and returns
rows."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest
from support.demo import DemoRun

COOKBOOK = Path(__file__).parent.parent.parent / "docs" / "sql-cookbook.md"
#: queries that ask about trouble the demo's story has already healed
MAY_BE_EMPTY = ("Creators failing right now", "Dead letters", "Creators whose newest data point")


def cookbook() -> list[tuple[str, str]]:
    """(the sentence introducing it, the query) for every ```sql block of the cookbook."""
    text = COOKBOOK.read_text(encoding="utf-8")
    assert text.startswith("# SQL cookbook\n")
    return re.findall(r"\n([^\n]+)\n\n```sql\n(.*?)```", text, re.S)


def test_the_cookbook_has_at_least_ten_queries() -> None:
    titles = [title for title, _ in cookbook()]
    assert len(titles) >= 10
    for wanted in (
        "One creator's series",
        "Week-over-week",
        "Top movers",
        "Budget per day",
        "Alert history",
        "Dead letters",
        "without a price",
        "Engagement rate",
        "latest point",
        "failed calls",
    ):
        assert any(wanted in t for t in titles), wanted


@pytest.mark.slow
@pytest.mark.parametrize(("title", "query"), cookbook(), ids=[t[:40] for t, _ in cookbook()])
def test_cookbook_query_runs_on_the_demo_database(
    demo: DemoRun,
    title: str,
    query: str,
) -> None:
    with sqlite3.connect(f"file:{demo.db}?mode=ro", uri=True) as db:
        cursor = db.execute(query)
        rows = cursor.fetchall()
        columns = [d[0] for d in cursor.description]
    assert columns
    if not title.startswith(MAY_BE_EMPTY):
        assert rows, title


@pytest.mark.slow
def test_cookbook_answers_are_right(demo: DemoRun) -> None:
    """Two answers checked against the data itself, not only that they run."""
    queries = dict(cookbook())
    with sqlite3.connect(demo.db) as db:
        series = db.execute(
            next(q for t, q in queries.items() if t.startswith("One creator"))
        ).fetchall()
        direct = db.execute(
            "SELECT date_key, read FROM daily_metrics d JOIN creators c ON c.id = d.creator_id "
            "WHERE c.name = 'Lilyy' ORDER BY date_key DESC LIMIT 30"
        ).fetchall()
        budget = db.execute(
            next(q for t, q in queries.items() if t.startswith("Budget"))
        ).fetchall()
        calls = db.execute("SELECT count(*), sum(billed) FROM fetches").fetchone()
    assert [(r[0], r[1]) for r in series] == direct
    assert len(series) == 30
    assert sum(r[1] for r in budget) == calls[0]
    assert sum(r[2] for r in budget) == calls[1]
