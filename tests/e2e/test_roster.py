"""Roster files: creators from CSV beside the TOML list, as a spreadsheet saves them; every bad row
named by file and line; ``roster check``; and a real ``run`` that picks up a changed roster on
SIGHUP."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest
from support.cli import Ran, run_cli
from support.daemon import NotifySocket, child_env, daemon_config, start_run, write_toml
from support.sim import creator_id
from support.wait import until

from monitor.config import load_config
from monitor.config.roster import RosterError, user_id_of
from monitor.errors import ConfigError
from monitor.model import Business, DateType
from monitor.store import migrate
from monitor.upstream.simulator import SimKnobs, Simulator

A, B, C, D = (creator_id(n) for n in range(4))
PGY = "https://pgy.xiaohongshu.com/solar/pre-trade/blogger-detail/"


def _write(path: Path, text: str, *, bom: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    return path


def _config(folder: Path, files: list[str], creators: str = "") -> Path:
    text = f"[roster]\nfiles = {files!r}\n".replace("'", '"') + creators
    return _write(folder / "config.toml", text)


def test_creators_come_from_csv_files_after_the_toml_ones(tmp_path: Path) -> None:
    _write(
        tmp_path / "creators" / "a.csv",
        "user_id,name,tags,every,business,date_type\r\n"
        f"{B},莉莉,fitness; tier-a,12h,COOPERATE_NOTE,DAY_90\r\n"
        f"{PGY}{C}?source=share&x=1,,,,,\r\n"
        ",,,,,\r\n",  # the empty rows a spreadsheet leaves at the end
        bom=True,  # Excel's "CSV UTF-8"
    )
    _write(tmp_path / "creators" / "b.csv", f"user_id\n{PGY}{D}\n")
    config = load_config(
        _config(
            tmp_path,
            ["creators/*.csv"],
            f'[[creators]]\nuser_id = "{A}"\nname = "Toml"\n',
        )
    )
    assert [c.user_id for c in config.creators] == [A, B, C, D]
    lily = config.creators[1]
    assert lily.name == "莉莉"
    assert lily.tags == ("fitness", "tier-a")
    assert config.every_of(lily).total_seconds() == 12 * 3600
    assert lily.business is Business.COOPERATE_NOTE
    assert lily.date_type is DateType.DAY_90
    assert config.creators[2].name == ""
    assert config.creators[2].tags == ()


def test_pugongying_urls_are_reduced_to_the_id() -> None:
    assert user_id_of(f"{PGY}{A}") == A
    assert user_id_of(f" {PGY}{A}/?track_id=1#top ") == A
    assert user_id_of(f"http://pgy.xiaohongshu.com/solar/pre-trade/blogger-detail/{A}") == A
    assert user_id_of(f"https://example.com/blogger-detail/{A}") == (
        f"https://example.com/blogger-detail/{A}"  # not a profile URL: rejected as an id later
    )


def test_every_bad_row_is_named_by_file_and_line(tmp_path: Path) -> None:
    _write(
        tmp_path / "creators" / "a.csv",
        "user_id,name,every,note_type\n"
        f"{A},ok,,\n"
        "not-an-id,bad id,,\n"  # line 3
        f"{B},bad every,soon,\n"  # line 4
        f"{C},bad note type,,REELS\n"  # line 5
        ",no id,,\n",  # line 6
    )
    with pytest.raises(RosterError) as caught:
        load_config(_config(tmp_path, ["creators/a.csv"]))
    problems = caught.value.problems
    assert problems[0].startswith(
        "creators/a.csv:3: user_id: expected a 24-hex creator id like '5c3bf7f7000000000602fd63', "
        "got 'not-an-id'"
    )
    assert problems[1].startswith("creators/a.csv:4: every: bad duration 'soon'")
    assert problems[2].startswith("creators/a.csv:5: note_type: ")
    assert problems[3] == "creators/a.csv:6: user_id: required, and empty here"
    assert len(problems) == 4
    # a command or the daemon shows one line, and points at the command that lists them all
    assert str(caught.value) == (f"{problems[0]} (and 3 more; see: creator-monitor roster check)")
    assert "\n" not in str(caught.value)


def test_a_duplicate_names_both_places(tmp_path: Path) -> None:
    _write(tmp_path / "creators" / "a.csv", f"user_id\n{A}\n{B}\n")
    _write(tmp_path / "creators" / "b.csv", f"name,user_id\nagain,{PGY}{B}\n")
    with pytest.raises(RosterError) as caught:
        load_config(_config(tmp_path, ["creators/*.csv"]))
    assert caught.value.problems == (
        f"creators/b.csv:2: user_id: {B} is listed twice; also at creators/a.csv:3",
    )
    toml = f'[[creators]]\nuser_id = "{A}"\n'
    with pytest.raises(RosterError) as caught:
        load_config(_config(tmp_path, ["creators/a.csv"], toml))
    assert caught.value.problems == (
        f"creators/a.csv:2: user_id: {A} is listed twice; also at creators[0] in the config",
    )


def test_bad_files_and_headers(tmp_path: Path) -> None:
    _write(tmp_path / "x.csv", "id,name\n1,a\n")
    _write(tmp_path / "y.csv", f"user_id,followers\n{A},3\n")
    (tmp_path / "z.csv").write_bytes(b"user_id\n\xff\xfe\n")
    with pytest.raises(ConfigError) as caught:
        load_config(_config(tmp_path, ["x.csv", "y.csv", "z.csv", "missing/*.csv"]))
    assert isinstance(caught.value, RosterError)
    assert caught.value.problems == (
        f"roster.files[3]: 'missing/*.csv' matches no file (relative to {tmp_path})",
        "x.csv:1: no 'user_id' column; columns: user_id, name, tags, every, business, "
        "note_type, date_type, advertise, sources (user_id required)",
        "y.csv:1: unknown column 'followers'; columns: user_id, name, tags, every, business, "
        "note_type, date_type, advertise, sources (user_id required)",
        "z.csv: not UTF-8 text (save it as 'CSV UTF-8')",
    )


def test_a_column_named_twice_is_refused(tmp_path: Path) -> None:
    """Two 'name' columns (a sheet with a column pasted twice): the second silently won."""
    _write(tmp_path / "x.csv", f"user_id,name,tags,Name\n{A},Lilyy,a,Lily Chen\n")
    with pytest.raises(ConfigError) as caught:
        load_config(_config(tmp_path, ["x.csv"]))
    assert isinstance(caught.value, RosterError)
    assert caught.value.problems == (
        "x.csv:1: column 'name' appears twice (columns 2 and 4); keep one",
    )


def test_rules_may_name_creators_from_the_roster(tmp_path: Path) -> None:
    _write(tmp_path / "r.csv", f"user_id\n{B}\n")
    rule = f'[[rules]]\nname = "x"\nkind = "stale"\nafter = "2d"\ncreators = ["{B}"]\n'
    config = load_config(_config(tmp_path, ["r.csv"], rule))
    assert config.rules[0].applies_to(config.creators[0])


def _roster_check(config: Path) -> Ran:
    return run_cli("-c", str(config), "roster", "check")


def test_roster_check_counts_or_lists_every_problem(tmp_path: Path) -> None:
    _write(tmp_path / "creators" / "a.csv", f"user_id,name\n{A},a\n{B},b\n")
    # the rest of the config may be unfinished: the roster is checked alone
    config = _config(tmp_path, ["creators/*.csv"], '[budget]\ncalls_per_minute = "lots"\n')
    done = _roster_check(config)
    assert (done.returncode, done.stdout) == (0, "roster ok: 2 creators in 1 files\n")
    _write(tmp_path / "creators" / "b.csv", f"user_id,every\nnope,\n{A},1x\n")
    done = _roster_check(config)
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if "alembic" not in line]
    assert lines[0].startswith("error: creators/b.csv:2: user_id: expected a 24-hex creator id")
    assert lines[1].startswith("error: creators/b.csv:3: every: bad duration '1x'")
    assert lines[2:] == ["roster: 2 problems"]
    missing = _roster_check(_write(tmp_path / "plain.toml", "[budget]\n"))
    assert missing.returncode == 2
    assert "roster.files: no roster files configured" in missing.stderr


@pytest.mark.slow
async def test_sighup_rereads_the_roster_files(tmp_path: Path, token: str) -> None:
    db = tmp_path / "history.db"
    db_url = f"sqlite+aiosqlite:///{db}"
    await migrate.upgrade(db_url)
    roster = _write(tmp_path / "creators" / "team.csv", f"user_id,name\n{A},a\n{B},b\n")
    async with Simulator(SimKnobs(latency_ms=20)) as sim:
        doc = daemon_config(
            sim.base_url, db_url, [], extra={"roster": {"files": ["creators/*.csv"]}}
        )
        config = write_toml(tmp_path / "config.toml", doc)
        notify = NotifySocket(tmp_path)
        stderr = tmp_path / "run.stderr"
        try:
            env = child_env(token, NOTIFY_SOCKET=notify.path)
            proc = await start_run(config, stderr, env, "/")
            await notify.wait_for("READY=1")
            await until(lambda: {u for u, _ in sim.counters().by_series} == {A, B})
            # a bad row: the reload is refused and the running roster kept
            roster.write_text(f"user_id\n{A}\n{B}\nbad\n", encoding="utf-8")
            proc.send_signal(signal.SIGHUP)
            await until(lambda: "reload rejected" in stderr.read_text())
            _write(tmp_path / "creators" / "more.csv", f"user_id\n{PGY}{C}\n{D}\n")
            roster.write_text(f"user_id\n{A}\n{B}\n", encoding="utf-8")
            proc.send_signal(signal.SIGHUP)
            await until(lambda: "config reloaded: 4 series" in stderr.read_text())
            await until(lambda: {u for u, _ in sim.counters().by_series} == {A, B, C, D})
            proc.send_signal(signal.SIGTERM)
            code = await asyncio.wait_for(proc.wait(), timeout=15)
        finally:
            notify.close()
            if proc.returncode is None:
                proc.kill()
    log = stderr.read_text()
    assert code == 0, log[-3000:]
    rejected = [line for line in log.splitlines() if "reload rejected" in line]
    assert len(rejected) == 1
    assert "creators/team.csv:4: user_id: expected a 24-hex creator id" in rejected[0]
    assert token not in log
