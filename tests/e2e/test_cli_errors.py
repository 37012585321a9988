"""Mistakes a user makes on the command line, against the simulator over HTTP: each is one line
on stderr with the thing and the fix, exit 2 for usage and config errors, 1 for runtime
failures, and refused input never reaches the upstream.

The commands run in this process (``support.cli``); ``--version`` and a usage mistake also run
as the wheel's console script, as a user runs them (``test_the_wheel_*``)."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import pytest
from support.cli import Ran, run_cli, simulator
from support.demo import clean_env, cli_command

SECRET = "tok-SECRET-cli-errors-5b2d4e6f8a0b"
LILYY = "5c3bf7f7000000000602fd63"
MIA = "5a1b2c3d4e5f60718293a4b5"


@dataclass(frozen=True)
class Workspace:
    config: Path
    db: Path
    sim: str  # the simulator's base URL

    def counters(self) -> dict[str, object]:
        with urllib.request.urlopen(f"{self.sim}/_sim/counters", timeout=10) as answer:
            return dict(json.load(answer))

    def reset(self) -> None:
        request = urllib.request.Request(f"{self.sim}/_sim/reset", data=b"{}", method="POST")
        urllib.request.urlopen(request, timeout=10).close()


def cli(*argv: str, token: bool = True, cwd: Path | None = None) -> Ran:
    return run_cli(*argv, env={"JUSTONEAPI_TOKEN": SECRET} if token else {}, cwd=cwd)


def wheel_cli(*argv: str) -> subprocess.CompletedProcess[str]:
    """The wheel's ``creator-monitor``, as a user runs it."""
    return subprocess.run(
        [*cli_command(), *argv],
        env=clean_env() | {"JUSTONEAPI_TOKEN": SECRET},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def one_line(done: Ran | subprocess.CompletedProcess[str]) -> str:
    """The single line a failed command printed on stderr (and nothing else)."""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert SECRET not in done.stdout + done.stderr
    return lines[0]


CONFIG = """\
[api]
base_url = "{sim}"
timeout = "10s"
connect_retries = 0
[budget]
calls_per_minute = 600
burst = 10
daily_calls = 100
[storage]
url = "sqlite+aiosqlite:///{db}"
[schedule]
retry_attempts = 0
[[creators]]
user_id = "{lilyy}"
name = "Lilyy"
tags = ["fitness"]
[[creators]]
user_id = "{mia}"
name = "Mia"
[[channels]]
name = "team"
url = "json://127.0.0.1:9/hook"
[[rules]]
name = "engagement-floor"
kind = "threshold"
metric = "engage"
op = "<"
value = 10
"""


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workspace]:
    folder = tmp_path_factory.mktemp("cli-errors")
    with simulator(latency=0.005) as sim:
        db = folder / "h.db"
        config = folder / "config.toml"
        config.write_text(CONFIG.format(sim=sim, db=db, lilyy=LILYY, mia=MIA), encoding="utf-8")
        config.chmod(0o600)
        done = cli("-c", str(config), "db", "upgrade")
        assert done.returncode == 0, done.stderr
        assert done.stderr == ""  # no alembic chatter
        yield Workspace(config, db, sim)


# --- one row per command: a bad value or a typo is one line and exit 2, and costs nothing ----

HELP = "(see: creator-monitor{} --help)"
USAGE: list[tuple[list[str], str]] = [
    (["chek"], "error: unknown command 'chek'; did you mean 'check'? " + HELP.format("")),
    (["check", "--no-tokn"], "error: unknown option '--no-tokn'; did you mean '--no-token'? "),
    (
        ["fetch", "5c3bf7f7000000000602fd6", "--dry-run"],
        "error: CREATOR: user id '5c3bf7f7000000000602fd6' has 23 characters, not 24; "
        "a user id is 24 hex digits (0-9, a-f)",
    ),
    (
        ["fetch", "Lily"],
        "error: CREATOR: unknown creator 'Lily'; did you mean 'Lilyy'? "
        "(give a 24-hex user id or a configured name)",
    ),
    (
        ["fetch"],
        "error: fetch: give either a CREATOR (user id or configured name) or --all",
    ),
    (
        ["history", LILYY, "--metric", "reads"],
        "error: --metric: unknown metric 'reads'; did you mean 'read'? " + HELP.format(" history"),
    ),
    (
        ["history", LILYY, "--since", "99999999999d"],
        "error: --since: duration '99999999999d' is too long; at most 3650d",
    ),
    (
        ["history", LILYY, "--variant", "DAILY/VIDEO/DAY_30/ALL"],
        "error: --variant: unknown business 'DAILY'; did you mean 'DAILY_NOTE'?",
    ),
    (
        ["export", "--since", "2025-13-01"],
        "error: --since: expected a duration like 30d or a date like 2025-12-01, got '2025-13-01'",
    ),
    (["export", "--format", "xml"], "error: unknown --format value 'xml'; one of: csv, jsonl"),
    (
        ["report", "--out", "r.html", "--since", "1e400s"],
        "error: --since: expected a duration like 30d",
    ),
    (["status", "--verbose"], "error: unknown option '--verbose'"),
    (["alerts", "--opne"], "error: unknown option '--opne'; did you mean '--open'?"),
    (
        ["silence", "add", "--creator", LILYY, "--for", "99999999999d"],
        "error: --for: duration '99999999999d' is too long; at most 365d "
        + HELP.format(" silence add"),
    ),
    (
        ["silence", "add", "--creator", "Mai", "--for", "2d"],
        "error: --creator: unknown creator 'Mai'; did you mean 'Mia'? "
        "(give a 24-hex user id or a configured name)",
    ),
    (
        ["silence", "add", "--rule", "engagment-floor", "--for", "1d"],
        "error: --rule: unknown rule 'engagment-floor'; did you mean 'engagement-floor'?",
    ),
    (
        ["silence", "add", "--tag", "fitnes", "--for", "1d"],
        "error: --tag: unknown tag 'fitnes'; did you mean 'fitness'?",
    ),
    (["silence", "lst"], "error: unknown action 'lst'; did you mean 'list'?"),
    (["unsilence", "0"], "error: id: must be from 1 to 9,223,372,036,854,775,807, got 0"),
    (["notify", "test", "teem"], "error: CHANNEL: unknown channel 'teem'; did you mean 'team'?"),
    (["notify", "retry", "--channel", "x"], "error: --channel: unknown channel 'x'; known: team"),
    (["rules", "tset"], "error: unknown action 'tset'; did you mean 'test'?"),
    (["rules", "test", "--since", "soon"], "error: --since: expected a duration like 30d"),
    (["db", "upgarde"], "error: unknown action 'upgarde'; did you mean 'upgrade'?"),
    (["simulate", "--port", "70000"], "error: --port: must be from 0 to 65,535, got 70000"),
    (["demo", "--seconds", "1e9"], "error: --seconds: must be from 5 to 3600, got 1e9"),
    (["run", "--dry-run"], "error: unknown option '--dry-run'"),
]


@pytest.mark.parametrize(("argv", "line"), USAGE, ids=[" ".join(a)[:30] for a, _ in USAGE])
def test_a_usage_mistake_is_one_line_exit_2_and_calls_nothing(
    workspace: Workspace, argv: list[str], line: str
) -> None:
    workspace.reset()
    done = cli(*argv, "-c", str(workspace.config))  # -c after the command: a global option
    assert done.returncode == 2, done.stderr
    assert one_line(done).startswith(line)
    assert done.stdout == ""
    assert workspace.counters()["calls"] == 0


@pytest.mark.slow
def test_version() -> None:
    done = wheel_cli("--version")
    assert (done.returncode, done.stdout) == (0, f"creator-monitor {version('creator-monitor')}\n")
    assert wheel_cli("status", "--version").stdout == done.stdout


@pytest.mark.slow
def test_the_wheel_answers_a_usage_mistake_in_one_line() -> None:
    """The console script a user installs maps the parser's exit to 2, with the one line."""
    done = wheel_cli("chek")
    assert done.returncode == 2, done.stderr
    assert one_line(done) == "error: unknown command 'chek'; did you mean 'check'? " + HELP.format(
        ""
    )
    assert done.stdout == ""


@pytest.mark.slow
def test_the_wheel_checks_a_config(workspace: Workspace) -> None:
    """``check`` by the installed script: the config, the channels' apprise URLs, the token."""
    done = wheel_cli("-c", str(workspace.config), "check")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == (
        "config ok: 2 creators, 1 channels (each URL parsed), 1 rules; API token found"
    )
    assert done.stderr == ""
    assert SECRET not in done.stdout


# --- creator references: a configured name works wherever a creator is asked for --------------


def test_a_name_is_resolved_to_its_id_before_it_reaches_the_upstream(
    workspace: Workspace,
) -> None:
    workspace.reset()
    fetched = cli("fetch", "Lilyy", "-c", str(workspace.config))
    assert fetched.returncode == 0, fetched.stderr
    counters = workspace.counters()
    assert counters["calls"] == 1
    assert [s["user_id"] for s in counters["by_series"]] == [LILYY]  # type: ignore[attr-defined]
    by_name = cli("history", "Lilyy", "--format", "csv", "-c", str(workspace.config))
    by_id = cli("history", LILYY, "--format", "csv", "-c", str(workspace.config))
    assert by_name.returncode == 0, by_name.stderr
    assert by_name.stdout == by_id.stdout
    assert len(by_name.stdout.splitlines()) == 31  # the header and 30 days
    silenced = cli(
        "silence", "add", "--creator", "Lilyy", "--for", "2d", "-c", str(workspace.config)
    )
    assert silenced.returncode == 0, silenced.stderr
    with sqlite3.connect(workspace.db) as db:
        assert db.execute("SELECT user_id FROM silences").fetchall() == [(LILYY,)]
    assert workspace.counters()["calls"] == 1  # history and silence call nothing


def test_a_creator_without_history_is_named_both_ways(workspace: Workspace) -> None:
    done = cli("history", "Mia", "-c", str(workspace.config))
    assert done.returncode == 1
    assert one_line(done) == f"error: no stored history for Mia ({MIA})"


# --- runtime failures: exit 1, the thing and the fix ------------------------------------------


def test_an_unreachable_upstream_names_the_host_and_the_fix(
    workspace: Workspace, tmp_path: Path
) -> None:
    dead = tmp_path / "dead.toml"
    port = workspace.sim.rsplit(":", 1)[1]
    text = workspace.config.read_text().replace(workspace.sim, "http://127.0.0.1:9")
    dead.write_text(text)
    dead.chmod(0o600)
    done = cli("fetch", "Lilyy", "--dry-run", "-c", str(dead))
    assert done.returncode == 1
    assert one_line(done) == (
        "error: cannot reach 127.0.0.1:9 (connection refused): "
        "check api.base_url and proxy settings"
    )
    assert port not in done.stderr


def test_unsilence_of_an_unknown_id_is_a_runtime_failure(workspace: Workspace) -> None:
    done = cli("unsilence", "999", "-c", str(workspace.config))
    assert (done.returncode, one_line(done)) == (1, "error: no silence with id 999")


# --- check: every problem, the token, the channels; "ok" only when all is ---------------------


def test_check_reports_every_config_error_at_once(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        "[budget]\ndaily_calls = 99999999999999999999\ntimezone = 'Asia/Beijing'\n"
        '[defaults]\nevery = "999999999d"\n'
        "[api]\ntiemout = '60s'\n"
    )
    done = cli("check", "-c", str(config))
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.splitlines() == [
        "error: api.tiemout: unknown key; did you mean 'timeout'?",
        "error: budget.daily_calls: must be at most 10,000,000, got 99,999,999,999,999,999,999",
        "error: budget.timezone: unknown time zone 'Asia/Beijing'; e.g. 'Asia/Shanghai' or 'UTC'",
        "error: defaults.every: duration '999999999d' is too long; at most 365d",
    ]


def test_check_needs_a_token_unless_told_not_to(workspace: Workspace) -> None:
    done = cli("check", "-c", str(workspace.config), token=False)
    assert done.returncode == 2
    assert one_line(done) == (
        "error: api.token_file: no API token: set JUSTONEAPI_TOKEN, api.token_file, "
        "or a systemd credential 'justoneapi-token'"
    )
    assert "ok" not in done.stdout
    ci = cli("check", "--no-token", "-c", str(workspace.config), token=False)
    assert ci.returncode == 0, ci.stderr
    assert ci.stdout.splitlines()[-1] == (
        "config ok: 2 creators, 1 channels (each URL parsed), 1 rules; "
        "API token not checked (--no-token)"
    )
    with_token = cli("-c", str(workspace.config), "check")
    assert with_token.returncode == 0, with_token.stderr
    assert with_token.stdout.splitlines()[-1].endswith("; API token found")
    assert with_token.stderr == ""


def test_check_validates_channels_before_saying_ok_and_keeps_apprise_quiet(
    workspace: Workspace, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(workspace.config.read_text().replace("json://127.0.0.1:9/hook", "foo://bar"))
    bad.chmod(0o600)
    done = cli("check", "-c", str(bad))
    assert done.returncode == 2
    assert one_line(done) == (
        "error: channels[0].url: apprise cannot use this foo:// URL (unknown scheme or missing "
        "parts; see the apprise wiki for the scheme's format) (channel 'team')"
    )
    assert "ok" not in done.stdout
    debug = cli("check", "--debug", "-c", str(bad))
    assert "apprise" in debug.stderr  # the library's own lines, only under --debug
    assert "foo://bar" not in debug.stderr


def test_alembic_chatter_only_under_debug(workspace: Workspace) -> None:
    quiet = cli("db", "current", "-c", str(workspace.config))
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stderr == ""
    loud = cli("db", "current", "--debug", "-c", str(workspace.config))
    assert "alembic" in loud.stderr


def test_stored_error_texts_lose_our_class_names() -> None:
    """``status`` and ``fetch`` show errors as stored (``TransportError: …``) without the name."""
    from monitor.cli.output import plain_error

    stored = "TransportError: cannot reach 127.0.0.1:9 (connection refused): check api.base_url"
    assert plain_error(f"fetch of {LILYY} failed: {stored}") == (
        f"fetch of {LILYY} failed: cannot reach 127.0.0.1:9 (connection refused): "
        "check api.base_url"
    )
    assert plain_error("RateLimited: rate limit exceeded, code 302") == (
        "rate limit exceeded, code 302"
    )
    assert plain_error("a ValueError: stays") == "a ValueError: stays"  # only our own names
