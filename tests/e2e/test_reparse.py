"""``creator-monitor reparse``: paid answers an earlier version kept because it could not read
them are read again by this one, stored as the fetch would have stored them, and marked read;
what still does not read stays kept and the exit code says so. In this process, on a real
SQLite file, as a user runs it after an upgrade."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import support.cli as cli_support
from support.daemon import write_toml
from support.store import CREATORS

from monitor.store import Store, migrate

#: when the kept answers were paid for: the day the sample bodies were captured
PAID = datetime(2025, 12, 11, 2, 0, tzinfo=UTC)


async def _keep(url: str, data_dir: Path) -> None:
    """What an older version kept: a follower history, a core_data answer and a balance it
    could not read then (this version can), and one body nobody can read."""
    await migrate.upgrade(url)
    async with Store.open(url) as store:
        ids = await store.sync_creators(CREATORS[:1])
        cid = ids[CREATORS[0].user_id]
        user = CREATORS[0].user_id
        kept = [
            (
                "fans",
                cid,
                {"userId": user, "dateType": "DAY_30", "increaseType": "FANS_TOTAL"},
                "fans_history_success_30d.json",
            ),
            (
                "core",
                cid,
                {
                    "userId": user,
                    "business": "DAILY_NOTE",
                    "noteType": "PHOTO_TEXT_AND_VIDEO",
                    "dateType": "DAY_30",
                    "advertiseSwitch": "ALL",
                },
                "core_data_success_30d.json",
            ),
            ("balance", None, {}, "balance_vendor_doc_example.json"),
        ]
        for source, creator_id, params, name in kept:
            await store.keep_unreadable(
                source=source,
                creator_id=creator_id,
                params=params,
                body=(data_dir / name).read_text(encoding="utf-8"),
                fetched_at=PAID,
                error="unreadable (an older version)",
            )
        await store.keep_unreadable(
            source="notes",
            creator_id=cid,
            params={"userId": user, "pageNumber": "1"},
            body='{"code": 0, "data": {"list": "a shape nobody knows"}}',
            fetched_at=PAID,
            error="unreadable note list: list is str, expected a list",
        )


async def _state(url: str) -> tuple[int, int, list[Decimal], int]:
    async with Store.open(url) as store:
        cid = await store.find_creator(CREATORS[0].user_id)
        assert cid is not None
        followers = len(await store.follower_series(cid))
        points = len(await store.series(cid))
        balances = [r.amount for r in await store.balance_readings()]
        waiting = await store.count_unreparsed()
    return followers, points, balances, waiting


def test_reparse_stores_what_reads_now_and_keeps_the_rest(tmp_path: Path, data_dir: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/history.db"
    asyncio.run(_keep(url, data_dir))
    config = write_toml(
        tmp_path / "config.toml",
        {
            "storage": {"url": url},
            "creators": [{"user_id": CREATORS[0].user_id, "name": CREATORS[0].name}],
        },
    )

    status = cli_support.run_cli("-c", str(config), "status")
    assert re.search(
        r"^unreadable answers +4 paid answers kept whole, unread by this version "
        r"\(`creator-monitor reparse` after an upgrade\)$",
        status.stdout,
        re.M,
    )

    dry = cli_support.run_cli("-c", str(config), "reparse", "--dry-run")
    assert dry.stdout.splitlines()[0] == (
        "reparse: 3 of 4 kept answers read (balance 1, core 1, fans 1)"
    )
    assert asyncio.run(_state(url)) == (0, 0, [], 4)  # a dry run stores nothing

    done = cli_support.run_cli("-c", str(config), "reparse")
    assert done.returncode == 1, done.stderr  # one answer is still unreadable
    assert done.stdout.splitlines() == [
        "reparse: 3 of 4 kept answers read (balance 1, core 1, fans 1); rules ran for 1 creators",
        "reparse: 1 still unreadable by this version, kept (first: notes: unreadable note "
        "list: list is str, expected a list)",
    ]
    followers, points, balances, waiting = asyncio.run(_state(url))
    assert followers == 30
    assert points >= 30
    assert balances == [Decimal("100.0000")]
    assert waiting == 1

    again = cli_support.run_cli("-c", str(config), "reparse")
    assert again.stdout.splitlines()[0] == "reparse: 0 of 1 kept answers read"
    assert asyncio.run(_state(url))[3] == 1  # nothing read twice, the unreadable one kept
