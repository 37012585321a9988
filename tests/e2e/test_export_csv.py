"""``export --format csv`` never hands a spreadsheet a live formula (issue "hardening" item 7,
OWASP's CSV injection rule): a cell starting with = + - @, a tab or a carriage return gets a
leading single quote. ``--format jsonl`` keeps every value as stored."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from support.cli import run_cli
from support.daemon import daemon_config, write_toml
from support.sim import creator_id

from monitor.cli.history_output import stream_export
from monitor.store import migrate
from monitor.upstream.simulator import SimKnobs, Simulator

NAMES = {
    creator_id(1): '=HYPERLINK("http://evil.example/","click")',
    creator_id(2): "+cmd|' /C calc'!A0",
    creator_id(3): "@SUM(1+1)",
    creator_id(4): "-2+3",
    creator_id(5): "Lilyy = plain",
}


async def _cli(*argv: str, cwd: Path, token: str) -> tuple[int, str, str]:
    """The command in this process (``support.cli``), off the test's loop, which serves the
    simulator."""
    done = await asyncio.to_thread(run_cli, *argv, env={"JUSTONEAPI_TOKEN": token}, cwd=cwd)
    return done.returncode, done.stdout, done.stderr


async def test_export_csv_neutralises_formulas_and_jsonl_keeps_them(
    tmp_path: Path, token: str
) -> None:
    db = tmp_path / "history.db"
    await migrate.upgrade(f"sqlite+aiosqlite:///{db}")
    async with Simulator(SimKnobs(latency_ms=5)) as sim:
        doc = daemon_config(sim.base_url, f"sqlite+aiosqlite:///{db}", list(NAMES))
        doc["creators"] = [{"user_id": u, "name": n} for u, n in NAMES.items()]
        config = write_toml(tmp_path / "config.toml", doc)
        code, _, err = await _cli("-c", str(config), "fetch", "--all", cwd=tmp_path, token=token)
        assert code == 0, err
        code, text, err = await _cli(
            "-c", str(config), "export", "--format", "csv", cwd=tmp_path, token=token
        )
        assert code == 0, err
        code, lines, err = await _cli(
            "-c", str(config), "export", "--format", "jsonl", cwd=tmp_path, token=token
        )
        assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(text)))
    assert rows
    names = {row["user_id"]: row["name"] for row in rows}
    assert names == {
        creator_id(1): '\'=HYPERLINK("http://evil.example/","click")',
        creator_id(2): "'+cmd|' /C calc'!A0",
        creator_id(3): "'@SUM(1+1)",
        creator_id(4): "'-2+3",
        creator_id(5): "Lilyy = plain",
    }
    assert all(not cell.startswith(("=", "+", "-", "@")) for row in rows for cell in row.values())
    stored = {json.loads(line)["user_id"]: json.loads(line)["name"] for line in lines.splitlines()}
    assert stored == NAMES  # JSON lines: exactly as stored


async def _rows(rows: list[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
    for row in rows:
        yield row


async def test_tab_and_carriage_return_cells_and_negative_numbers() -> None:
    """A tab or CR cannot come from the config (control characters are refused there), but
    the writer must not rely on that; a negative number stays a number."""
    out = io.StringIO()
    rows = [{"name": "\tx", "note": "\r=1+1", "delta": -3, "ratio": -0.5, "ok": "a-b"}]
    assert await stream_export(_rows(rows), "csv", out) == 1
    (row,) = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert row == {"name": "'\tx", "note": "'\r=1+1", "delta": "-3", "ratio": "-0.5", "ok": "a-b"}
