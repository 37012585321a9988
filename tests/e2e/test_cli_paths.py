"""The CLI in this process (``support.cli``): fetch --dry-run against the simulator over HTTP and
against a dead port, and history over the real captured sample (issue 2 and 3 acceptance paths)."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import sqlite3
import stat
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from support.cli import run_cli, simulator
from support.ports import free_port

from monitor.model import Creator, Variant
from monitor.store import FetchRecord, Store, migrate
from monitor.upstream.client import parse_core_data

UID = "5c3bf7f7000000000602fd63"


def _env(token: str) -> dict[str, str]:
    return {"JUSTONEAPI_TOKEN": token}


def _config(tmp_path: Path, port: int) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(
        f'[api]\nbase_url = "http://127.0.0.1:{port}"\ntimeout = "5s"\nconnect_retries = 0\n'
        f'[storage]\nurl = "sqlite+aiosqlite:///{tmp_path / "h.db"}"\n'
    )
    return path


@pytest.fixture
def simulate() -> Iterator[int]:
    """The simulator's port; it runs in a thread of this process."""
    with simulator(latency=0.01) as base_url:
        yield int(base_url.rsplit(":", 1)[1])


def test_fetch_dry_run_against_simulate_prints_a_30_row_table(
    simulate: int, tmp_path: Path, token: str
) -> None:
    done = run_cli(
        "-c", str(_config(tmp_path, simulate)), "fetch", UID, "--dry-run", env=_env(token)
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    # the table of `history`: the config's id column, then the metrics' labels
    assert lines[0].split()[:4] == ["date_key", "impressions", "reads", "engagements"]
    rows = lines[1:]
    assert len(rows) == 30
    dates = [row.split()[0] for row in rows]
    assert dates == sorted(dates)
    assert token not in done.stdout + done.stderr
    # --dry-run stores nothing, but its paid call is counted by the one budget gate
    with sqlite3.connect(tmp_path / "h.db") as db:
        assert db.execute("SELECT count(*) FROM fetches").fetchone() == (0,)
        assert db.execute("SELECT count(*) FROM daily_metrics").fetchone() == (0,)
        assert db.execute("SELECT sum(calls) FROM budget_days").fetchone() == (1,)


def test_fetch_against_a_dead_port_is_one_clear_line_and_exit_1(
    tmp_path: Path, token: str, refused_port: int
) -> None:
    port = refused_port
    done = run_cli("-c", str(_config(tmp_path, port)), "fetch", UID, "--dry-run", env=_env(token))
    assert done.returncode == 1
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0] == (
        f"error: cannot reach 127.0.0.1:{port} (connection refused): "
        "check api.base_url and proxy settings"
    )
    assert token not in done.stderr


async def _store_sample(url: str, body: str) -> None:
    await migrate.upgrade(url)
    result = parse_core_data(body)
    async with Store.open(url) as store:
        ids = await store.sync_creators([Creator(user_id=UID, name="Lilyy")])
        await store.record_fetches(
            [
                FetchRecord(
                    ids[UID],
                    Variant(),
                    started_at=datetime(2025, 12, 11, 2, 17, tzinfo=UTC),
                    due_at=None,
                    latency_ms=result.latency_ms,
                    http_status=200,
                    code=0,
                    billed=True,
                    error=None,
                    data=result.data,
                    raw_body=result.raw_body,
                )
            ]
        )


def test_history_of_the_stored_sample_prints_its_30_real_values(
    tmp_path: Path, data_dir: Path, token: str
) -> None:
    body = (data_dir / "core_data_success_30d.json").read_text()
    config = _config(tmp_path, free_port())
    asyncio.run(_store_sample(f"sqlite+aiosqlite:///{tmp_path / 'h.db'}", body))
    sample = {p["dateKey"]: p["read"] for p in json.loads(body)["data"]["dailyData"]}

    def history(*extra: str) -> str:
        done = run_cli("-c", str(config), "history", UID, *extra, env=_env(token))
        assert done.returncode == 0, done.stderr
        return done.stdout

    rows = list(csv.DictReader(io.StringIO(history("--format", "csv"))))
    assert len(rows) == 30
    assert {r["date_key"]: int(r["read"]) for r in rows} == sample
    assert next(r for r in rows if r["date_key"] == "2025-12-10")["read"] == "7100"
    assert rows[0]["cpm"] != ""
    table = history().strip().splitlines()
    assert len(table) == 31
    assert "7,100" in table[-1]
    reads = list(csv.DictReader(io.StringIO(history("--metric", "read", "--format", "csv"))))
    assert list(reads[0]) == ["date_key", "read"]


@pytest.mark.parametrize(
    "argv",
    [
        ["status"],
        ["history", UID],
        ["alerts"],
        ["silence", "list"],
        ["export"],
        ["notes", UID],
        ["rules", "test"],
    ],
)
def test_a_read_on_a_missing_database_creates_no_file(tmp_path: Path, argv: list[str]) -> None:
    """`status` as root on the service's folder before the daemon made its database (or with
    a mistyped file name) must not leave an empty root-owned file there: the dynamic user of
    the unit could not write it, and `run` would fail on it."""
    config = _config(tmp_path, 9)
    done = run_cli("-c", config, *argv)
    assert done.returncode == 1, done.stderr
    assert done.stderr.count("\n") == 1
    assert "has no schema yet (no file" in done.stderr
    assert "run: creator-monitor db upgrade" in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.toml"]


# --- `report --out` writes into what the path names; it never replaces a device or a link ----


def _report_config(tmp_path: Path) -> Path:
    config = _config(tmp_path, 9)
    assert run_cli("-c", config, "db", "upgrade").returncode == 0
    return config


@pytest.mark.skipif(os.geteuid() != 0, reason="mknod needs root")
def test_report_out_a_full_device_fails_in_one_line_and_keeps_the_device(tmp_path: Path) -> None:
    """`report --out /dev/full` (run as root, as the docs run commands) replaced the device
    node with a 4.8 MB regular file: it wrote FILE.partial beside it and renamed it over it.
    Here a twin of /dev/full in tmp_path stands in for it."""
    config = _report_config(tmp_path)
    full = tmp_path / "full"
    os.mknod(full, stat.S_IFCHR | 0o666, os.makedev(1, 7))
    done = run_cli("-c", config, "report", "--out", full)
    assert done.returncode == 1, done.stderr
    assert done.stderr == f"error: --out: cannot write {full}: No space left on device\n"
    assert stat.S_ISCHR(full.lstat().st_mode)
    assert not (tmp_path / "full.partial").exists()


def test_report_out_a_fifo_streams_into_it(tmp_path: Path) -> None:
    """`--out /dev/stdout`, a FIFO, a process substitution: the report goes into the stream."""
    config = _report_config(tmp_path)
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got = bytearray()

    def read() -> None:
        with fifo.open("rb") as stream:
            while chunk := stream.read(65536):
                got.extend(chunk)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    done = run_cli("-c", config, "report", "--out", fifo)
    reader.join(10)
    assert done.returncode == 0, done.stderr
    assert got.startswith(b"<!doctype html>") or got.lower().startswith(b"<!doctype html>")
    assert stat.S_ISFIFO(fifo.lstat().st_mode)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("pipe")) == ["pipe"]


def test_report_out_a_symlink_writes_its_target(tmp_path: Path) -> None:
    config = _report_config(tmp_path)
    (tmp_path / "reports").mkdir()
    target = tmp_path / "reports" / "week.html"
    target.write_text("old", encoding="utf-8")
    link = tmp_path / "latest.html"
    link.symlink_to(target)
    done = run_cli("-c", config, "report", "--out", link)
    assert done.returncode == 0, done.stderr
    assert link.is_symlink()
    assert target.read_text(encoding="utf-8").lower().startswith("<!doctype html>")


@pytest.mark.parametrize("kind", ["config", "folder", "fifo", "device"])
def test_fresh_replaces_only_a_database(tmp_path: Path, kind: str) -> None:
    """`demo --db config.toml --fresh` (a slip of the finger) deleted the config; as root,
    `--db /dev/null --fresh` would have deleted /dev/null. --fresh replaces a SQLite database
    (or an empty file) and refuses anything else, in one line, leaving it as it was."""
    target = tmp_path / "target"
    if kind == "config":
        target.write_text('[storage]\nurl = "sqlite+aiosqlite:///h.db"\n', encoding="utf-8")
    elif kind == "folder":
        target.mkdir()
    elif kind == "fifo":
        os.mkfifo(target)
    else:
        if os.geteuid() != 0:
            pytest.skip("mknod needs root")
        os.mknod(target, stat.S_IFCHR | 0o666, os.makedev(1, 3))  # a twin of /dev/null
    before = target.lstat()
    done = run_cli("demo", "--db", str(target), "--fresh", "--seconds", "5", cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if "alembic.runtime" not in line]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"error: demo --db: {target} is ")
    assert "--fresh replaces only a SQLite database" in lines[0]
    after = target.lstat()
    assert (after.st_mode, after.st_ino, after.st_size) == (
        before.st_mode,
        before.st_ino,
        before.st_size,
    )


@pytest.mark.parametrize(("kind", "words"), [("folder", "a directory"), ("fifo", "a FIFO")])
@pytest.mark.parametrize("command", [["status"], ["db", "upgrade"]])
def test_a_storage_url_that_names_no_file_is_a_config_error(
    tmp_path: Path, kind: str, words: str, command: list[str]
) -> None:
    """storage.url naming a folder or a FIFO (a device: `…:////dev/null`) said 'unable to open
    database file' or 'disk I/O error', exit 1, and left a NAME-journal beside it."""
    target = tmp_path / "history.db"
    if kind == "folder":
        target.mkdir()
    else:
        os.mkfifo(target)
    config = tmp_path / "config.toml"
    config.write_text(f'[storage]\nurl = "sqlite+aiosqlite:///{target}"\n', encoding="utf-8")
    done = run_cli("-c", config, *command)
    assert done.returncode == 2, done.stderr
    assert done.stderr == (
        f"error: storage.url: {target} is {words}"
        + (" (named pipe)" if kind == "fifo" else "")
        + ", not a SQLite database file; fix the path\n"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.toml", "history.db"]


def test_a_database_from_a_newer_version_is_named_so_by_every_command(tmp_path: Path) -> None:
    """`run` refused it in one line; `db upgrade` said 'error (unexpected; …): Can't locate
    revision …', `db current` called it behind and advised `db upgrade`, and `status` advised
    `db upgrade` too."""
    config = _config(tmp_path, 9)
    assert run_cli("-c", config, "db", "upgrade").returncode == 0
    with sqlite3.connect(tmp_path / "h.db") as db:
        db.execute("UPDATE alembic_version SET version_num = '0099_future'")
    newer = "is at schema revision 0099_future, newer than this creator-monitor knows"
    upgrade = run_cli("-c", config, "db", "upgrade")
    assert upgrade.returncode == 2, upgrade.stderr
    assert upgrade.stderr.count("\n") == 1
    assert newer in upgrade.stderr
    assert "install the newer creator-monitor that migrated it" in upgrade.stderr
    current = run_cli("-c", config, "db", "current")
    assert current.returncode == 0, current.stderr
    assert current.stdout.startswith("0099_future (newer than this creator-monitor knows")
    status = run_cli("-c", config, "status")
    assert status.returncode == 1
    assert newer in status.stderr
    assert "db upgrade" not in status.stderr


@pytest.mark.parametrize(
    ("document", "argv"),
    [
        ('[notify]\ntemplates_dir = "/tmp/{long}"\n', ["check", "--no-token"]),
        ('[storage]\nurl = "sqlite+aiosqlite:////tmp/{long}/h.db"\n', ["status"]),
        ('[storage]\nurl = "sqlite+aiosqlite:////tmp/{long}"\n', ["status"]),
        ('[storage]\nurl = "sqlite+aiosqlite:///{tmp}/h.db"\n', ["report", "--out", "/tmp/{long}"]),
        ("", ["demo", "--db", "/tmp/{long}"]),
    ],
)
def test_a_path_too_long_for_the_system_is_one_line(
    tmp_path: Path, document: str, argv: list[str]
) -> None:
    """A file name over 255 bytes (a pasted value, a runaway script) made the OS refuse the
    path, which the commands reported as 'error (unexpected; rerun with --debug): [Errno 36]
    File name too long: …' with all of it."""
    long = "A" * 5000
    config = tmp_path / "config.toml"
    config.write_text(document.format(long=long, tmp=tmp_path), encoding="utf-8")
    done = run_cli("-c", config, *(a.format(long=long) for a in argv))
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
    assert "unexpected" not in done.stderr
    assert "path too long" in done.stderr
    assert "A" * 100 not in done.stderr
