"""Hostile and odd input files (issue "hardening" items 5, 12, 13): control characters in the
config and the roster, special files (FIFOs, /dev/zero, directories, huge files) where a
config, token, roster or template file is expected, wrong types, deep nesting and a BOM.

Where a special file is read, the command runs as a user runs it: a child process, with a time
limit (a FIFO must never hang it) and a memory limit (/dev/zero must never eat the machine, even
before the fix). Odd text in regular files runs in this process (``support.cli``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import support.cli as cli_support
from support.cli import Ran
from support.daemon import (
    NotifySocket,
    child_env,
    cli,
    creators,
    daemon_config,
    start_run,
    write_toml,
)

from monitor.config import ConfigError, load_config, parse_config
from monitor.store import migrate
from monitor.upstream.simulator import SimKnobs, Simulator
from monitor.validation import problems_of

TOKEN = "tok-SECRET-input-files-5b2d4e6f8a0b"
LILYY = "5c3bf7f7000000000602fd63"
MIA = "5a1b2c3d4e5f60718293a4b5"
MEMORY_LIMIT = 1 << 30  # 1 GiB: /dev/zero read whole fails fast instead of taking the machine


def _limits() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def run_cli(
    *argv: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """The CLI in a child process that may take at most 60 s and 1 GiB."""
    return subprocess.run(
        [*cli(), *argv],
        env=env or child_env(TOKEN),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        preexec_fn=_limits,
    )


def run_here(*argv: str, cwd: Path) -> Ran:
    """The CLI in this process: for regular files, which cannot hang it or fill its memory."""
    return cli_support.run_cli(*argv, env={"JUSTONEAPI_TOKEN": TOKEN}, cwd=cwd)


def errors(done: Ran | subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in done.stderr.splitlines() if line.startswith("error")]


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    path.chmod(0o600)
    return path


def _fifo(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(path)
    return path


def _zero(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to("/dev/zero")
    return path


BASE = f"""\
[storage]
url = "sqlite+aiosqlite:///{{folder}}/h.db"
[[creators]]
user_id = "{LILYY}"
name = "Lilyy"
"""


# --- item 5: control characters -------------------------------------------------------------


def test_a_nul_in_a_roster_name_is_refused_naming_file_line_and_column(tmp_path: Path) -> None:
    _write(tmp_path / "roster" / "team.csv", f"user_id,name\n{MIA},Lil\x00yy\n")
    config = _write(
        tmp_path / "config.toml",
        BASE.format(folder=tmp_path) + '[roster]\nfiles = ["roster/*.csv"]\n',
    )
    line = "roster/team.csv:2: name: holds U+0000 (NUL); remove it"
    for argv in (["check", "--no-token"], ["roster", "check"], ["fetch", LILYY, "--dry-run"]):
        done = run_here("-c", str(config), *argv, cwd=tmp_path)
        assert done.returncode == 2, (argv, done.stderr)
        assert any(row.endswith(line) for row in done.stderr.splitlines()), (argv, done.stderr)
        assert "\x00" not in done.stderr
    assert not (tmp_path / "h.db").exists()  # refused before anything was opened


def test_a_control_character_in_toml_names_the_key_and_the_line(tmp_path: Path) -> None:
    config = _write(
        tmp_path / "config.toml",
        BASE.format(folder=tmp_path)
        + f'[[creators]]\nuser_id = "{MIA}"\nname = "Mia\\u0000"\ntags = ["ok", "a\\tb"]\n'
        + '[[channels]]\nname = "team"\nurl = "json://127.0.0.1:9/x\\u001b"\n',
    )
    done = run_here("-c", str(config), "check", "--no-token", cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert errors(done) == [
        "error: creators[1].name: holds U+0000 (NUL) (config.toml line 8); remove it",
        "error: creators[1].tags[1]: holds U+0009 (tab) (config.toml line 9); remove it",
        "error: channels[0].url: holds U+001B (escape) (config.toml line 12); remove it",
    ]
    with pytest.raises(ConfigError) as caught:
        load_config(config)  # what run and every command load: the same refusal
    assert [p.path for p in problems_of(caught.value)] == [
        "creators[1].name",
        "creators[1].tags[1]",
        "channels[0].url",
    ]
    assert "json://" not in done.stderr  # a URL is never echoed


def test_control_characters_in_a_parsed_document_are_refused_without_a_line() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"creators": [{"user_id": LILYY, "name": "a\x85b"}]})
    assert str(caught.value) == "creators[0].name: holds U+0085 (a control character); remove it"


# --- item 12: special files -----------------------------------------------------------------


def _refused(done: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert done.returncode == 2, done.stderr[-2000:]
    lines = errors(done)
    assert lines, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert "unexpected" not in done.stderr
    for fragment in fragments:
        assert any(fragment in line for line in lines), (fragment, lines)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("make", "word"),
    [(_fifo, "a FIFO (named pipe)"), (_zero, "a character device"), (Path.mkdir, "a directory")],
    ids=["fifo", "dev-zero", "directory"],
)
def test_a_special_file_as_the_config_is_one_line(tmp_path: Path, make: Any, word: str) -> None:
    make(tmp_path / "config.toml")
    started = time.monotonic()
    done = run_cli("-c", str(tmp_path / "config.toml"), "check", "--no-token", cwd=tmp_path)
    assert time.monotonic() - started < 30
    _refused(done, f"config.toml: config file is {word}")
    assert len(errors(done)) == 1


@pytest.mark.slow
def test_a_huge_config_is_refused_before_it_is_read(tmp_path: Path) -> None:
    huge = tmp_path / "config.toml"
    with huge.open("wb") as sparse:
        sparse.truncate(5 << 30)  # 5 GiB, no disk used
    done = run_cli("-c", str(huge), "check", "--no-token", cwd=tmp_path)
    _refused(done, "config file is 5 GiB; at most 64 MiB")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("key", "make", "word"),
    [
        ("api.token_file", _fifo, "is a FIFO (named pipe), not a regular file"),
        ("api.token_file", _zero, "is a character device, not a regular file"),
        ("http.token_file", _fifo, "is a FIFO (named pipe), not a regular file"),
        ("http.readonly_token_file", _zero, "is a character device, not a regular file"),
    ],
)
def test_a_special_token_file_is_one_line(tmp_path: Path, key: str, make: Any, word: str) -> None:
    special = make(tmp_path / "secret" / "token")
    section, name = key.split(".")
    config = _write(
        tmp_path / "config.toml",
        BASE.format(folder=tmp_path) + f'[{section}]\n{name} = "{special}"\n',
    )
    env = child_env("unused")
    env.pop("JUSTONEAPI_TOKEN")
    done = run_cli("-c", str(config), "check", cwd=tmp_path, env=env)
    _refused(done, f"error: {key}: token file {special} {word}")


@pytest.mark.slow
def test_roster_globs_matching_special_files_are_problems_not_hangs(tmp_path: Path) -> None:
    _write(tmp_path / "roster" / "a.csv", f"user_id\n{MIA}\n")
    _fifo(tmp_path / "roster" / "b.csv")
    _zero(tmp_path / "roster" / "c.csv")
    (tmp_path / "roster" / "d.csv").mkdir()
    config = _write(
        tmp_path / "config.toml", BASE.format(folder=tmp_path) + '[roster]\nfiles = ["roster/*"]\n'
    )
    done = run_cli("-c", str(config), "check", "--no-token", cwd=tmp_path)
    assert done.returncode == 2
    assert errors(done) == [
        "error: roster/b.csv: roster file is a FIFO (named pipe), not a regular file",
        "error: roster/c.csv: roster file is a character device, not a regular file",
        "error: roster/d.csv: roster file is a directory, not a regular file",
    ]
    listing = run_cli("-c", str(config), "roster", "check", cwd=tmp_path)
    assert listing.returncode == 2
    assert "roster/b.csv: roster file is a FIFO" in listing.stderr


@pytest.mark.slow
def test_templates_must_be_regular_files(tmp_path: Path) -> None:
    templates = tmp_path / "templates"
    _fifo(templates / "alert.en.j2")
    _zero(templates / "alert.zh.j2")
    _write(templates / "digest.en.j2", "{% if %}\n")
    config = _write(
        tmp_path / "config.toml",
        BASE.format(folder=tmp_path) + f'[notify]\ntemplates_dir = "{templates}"\n',
    )
    done = run_cli("-c", str(config), "check", "--no-token", cwd=tmp_path)
    assert done.returncode == 2
    assert errors(done) == [
        f"error: notify.templates_dir: template alert.en.j2: {templates}/alert.en.j2 is a FIFO "
        "(named pipe), not a regular file",
        f"error: notify.templates_dir: template alert.zh.j2: {templates}/alert.zh.j2 is a "
        "character device, not a regular file",
        "error: notify.templates_dir: template digest.en.j2 line 1: Expected an expression, "
        "got 'end of statement block'",
    ]


@pytest.mark.slow
async def test_a_fifo_matched_by_the_roster_glob_at_a_reload_does_not_block_the_daemon(
    tmp_path: Path, token: str
) -> None:
    """SIGHUP re-reads the roster glob, which now matches a FIFO nobody writes to: the reload
    is refused in one line, the daemon keeps running on the old config, and SIGTERM stops it
    at once. (Before: open() blocked the main thread for good and SIGTERM was ignored.)"""
    db = tmp_path / "history.db"
    await migrate.upgrade(f"sqlite+aiosqlite:///{db}")
    async with Simulator(SimKnobs(latency_ms=5)) as sim:
        _write(tmp_path / "roster" / "a.csv", "user_id\n" + "\n".join(creators(2)) + "\n")
        doc = daemon_config(sim.base_url, f"sqlite+aiosqlite:///{db}", [])
        doc.pop("creators")
        doc["roster"] = {"files": ["roster/*.csv"]}
        config = write_toml(tmp_path / "config.toml", doc)
        notify = NotifySocket(tmp_path)
        log = tmp_path / "run.stderr"
        try:
            env = child_env(token, NOTIFY_SOCKET=notify.path)
            proc = await start_run(config, log, env, tmp_path)
            await notify.wait_for("READY=1")
            _fifo(tmp_path / "roster" / "b.csv")
            proc.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + 20
            while "reload rejected" not in log.read_text(errors="replace"):
                assert time.monotonic() < deadline, log.read_text(errors="replace")[-3000:]
                await asyncio.sleep(0.05)
            assert notify.count("READY=1") >= 1
            asked = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            code = await asyncio.wait_for(proc.wait(), timeout=15)
            took = time.monotonic() - asked
        finally:
            notify.close()
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    text = log.read_text(errors="replace")
    assert code == 0, text[-3000:]
    assert took < 10
    rejected = [line for line in text.splitlines() if "reload rejected" in line]
    assert len(rejected) == 1
    assert "roster/b.csv: roster file is a FIFO (named pipe), not a regular file" in rejected[0]
    assert token not in text


# --- item 13: wrong types, deep nesting, a BOM ----------------------------------------------


@pytest.mark.parametrize(
    ("document", "line"),
    [
        (
            {"budget": {"calls_per_minute": "30"}},
            'budget.calls_per_minute: expected a whole number (no quotes), got "30"',
        ),
        (
            {"budget": {"calls_per_minute": True}},
            "budget.calls_per_minute: expected a whole number (no quotes), got true",
        ),
        (
            {"budget": {"daily_calls": 30.0}},
            "budget.daily_calls: expected a whole number (no quotes), got 30.0",
        ),
        (
            {"http": {"trust_proxy": 1}},
            "http.trust_proxy: expected true or false (no quotes), got 1",
        ),
        (
            {"http": {"secure_cookies": "yes"}},
            'http.secure_cookies: expected true or false (no quotes), got "yes"',
        ),
        (
            {
                "rules": [
                    {"name": "r", "kind": "threshold", "metric": "imp", "op": ">", "value": True}
                ]
            },
            "rules[0].value: expected a number (no quotes), got true",
        ),
        (
            {"rules": [{"name": "r", "kind": "api_error", "codes": ["301"]}]},
            'rules[0].codes[0]: expected a whole number (no quotes), got "301"',
        ),
    ],
)
def test_no_string_for_a_number_and_no_bool_for_an_int(document: dict[str, Any], line: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(document)
    assert str(caught.value) == line


def test_a_number_where_a_float_is_wanted_is_still_fine() -> None:
    config = parse_config(
        {"rules": [{"name": "r", "kind": "threshold", "metric": "imp", "op": ">", "value": 5}]}
    )
    assert config.rules[0].value == 5.0  # type: ignore[union-attr]


def test_a_toml_nested_500_deep_is_exit_2_with_a_clear_line(tmp_path: Path) -> None:
    config = _write(tmp_path / "config.toml", "x = " + "[" * 500 + "]" * 500 + "\n")
    done = run_here("-c", str(config), "check", "--no-token", cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert errors(done) == [
        f"error: {config}: invalid TOML: arrays or tables nested too deeply "
        "(a config needs 4 levels)"
    ]


def test_a_config_saved_with_a_bom_is_accepted(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_bytes(b"\xef\xbb\xbf" + BASE.format(folder=tmp_path).encode())
    done = run_here("-c", str(config), "check", "--no-token", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1].startswith("config ok: 1 creators")


if sys.platform != "linux":  # FIFOs, /dev/zero and RLIMIT_AS as Linux has them
    pytestmark = pytest.mark.skip("Linux only")


async def test_a_reload_to_a_path_too_long_is_rejected_in_one_line(
    tmp_path: Path, token: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A SIGHUP whose new config names a template folder longer than the OS allows: the
    OSError escaped the reload task (a 'Task exception was never retrieved' traceback, no
    'reload rejected'); now the reload is refused and the old config kept."""
    from support.daemon import creators, in_process

    async with in_process(tmp_path, token) as env:
        doc = daemon_config(env.sim.base_url, env.db_url, creators(1))
        path = write_toml(tmp_path / "config.toml", doc)
        daemon = env.make(doc, config_path=path)
        results: list[bool] = []

        async def reload_once_started() -> None:
            while not env.sim.counters().by_series:
                await asyncio.sleep(0.01)
            write_toml(path, doc | {"notify": {"templates_dir": "/tmp/" + "A" * 5000}})
            results.append(await daemon.reload())

        with caplog.at_level(logging.ERROR):
            helper = asyncio.get_running_loop().create_task(reload_once_started())
            await env.run_until(daemon, helper.done)
            await helper
    assert results == [False]
    rejected = [r.getMessage() for r in caplog.records if "reload rejected" in r.getMessage()]
    assert len(rejected) == 1
    assert "path too long" in rejected[0]
    assert "A" * 100 not in rejected[0]
