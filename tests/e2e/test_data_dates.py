"""An answer dated far from today is refused, not stored as the newest point: ``creator-monitor
fetch ID`` against a real upstream serving the real sample with one far date, on SQLite and
PostgreSQL."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from aiohttp import web
from support.cli import run_cli
from support.daemon import write_toml
from support.echo import dump_database

from monitor.store import migrate
from monitor.upstream.client import CORE_DATA_PATH

USER = "5c3bf7f7000000000602fd63"


def _sample(data_dir: Path, far: date | None) -> str:
    """The 30-day sample, dated up to yesterday (Shanghai); its newest point moved to ``far``."""
    envelope = json.loads((data_dir / "core_data_success_30d.json").read_text())
    today = datetime.now(UTC).astimezone(ZoneInfo("Asia/Shanghai")).date()
    daily = envelope["data"]["dailyData"]
    for back, point in enumerate(reversed(daily), start=1):
        point["dateKey"] = (today - timedelta(days=back)).isoformat()
    if far is not None:
        daily[-1]["dateKey"] = far.isoformat()
    envelope["data"]["sumData"]["dateKey"] = daily[-1]["dateKey"]
    return json.dumps(envelope)


@asynccontextmanager
async def serving(body: str) -> AsyncIterator[str]:
    async def answer(request: web.Request) -> web.Response:
        return web.Response(text=body, content_type="application/json")

    app = web.Application()
    app.router.add_get(CORE_DATA_PATH, answer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


async def _run(token: str, *argv: str) -> tuple[int, str, str]:
    """The command in this process (``support.cli``), off the test's loop, which serves the
    upstream."""
    done = await asyncio.to_thread(run_cli, *argv, env={"JUSTONEAPI_TOKEN": token})
    return done.returncode, done.stdout, done.stderr


async def test_a_far_future_date_is_refused_and_nothing_is_stored(
    tmp_path: Path, db_url: str, data_dir: Path, token: str
) -> None:
    far = date.today() + timedelta(days=3650)
    body = _sample(data_dir, far)
    async with serving(body) as base_url:
        config = write_toml(
            tmp_path / "config.toml",
            {
                "api": {"base_url": base_url, "timeout": "10s"},
                "storage": {"url": db_url},
                "schedule": {"retry_attempts": 0},
            },
        )
        await migrate.upgrade(db_url)  # the schema in-process: the two fetches are the point
        code, out, err = await _run(token, "-c", str(config), "fetch", USER)
        dry_code, dry_out, dry_err = await _run(
            token, "-c", str(config), "fetch", USER, "--dry-run"
        )

    assert code == 1
    # one line, the error itself, without our class names
    assert err.strip().splitlines()[-1].startswith("error: unreadable data: dailyData[29].dateKey")
    assert f"dailyData[29].dateKey {far.isoformat()} is outside" in err
    assert dry_code == 1
    assert "is outside" in dry_err
    assert far.isoformat() not in out + dry_out
    tables = await dump_database(db_url)
    assert tables["daily_metrics"] == []  # no point at all, so none is the newest
    [fetch] = tables["fetches"]
    assert any("is outside" in value for value in fetch)
    assert [row[-1] for row in tables["raw_responses"]] == [body]  # kept for audit
