"""Issue 18's wrong outputs (items 7, 8, 9, 14, 15, 16), each as a user or an operator meets
it: the CLI (run in this process, ``support.cli``) against the simulator over HTTP, and the real
fetcher, rules and notifier over HTTP with a ``json://`` receiver where the point is an alert."""

from __future__ import annotations

import json
import logging
import sqlite3
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio
from support.alerting import running, table
from support.cli import Ran, run_cli, simulator
from support.receiver import Receiver
from support.sim import CAPTURE_TIME, FakeClock, plain_creator

from monitor.config import parse_config
from monitor.errors import Retryable, TransportError
from monitor.ops.redaction import Redactor
from monitor.upstream.simulator import Simulator

SECRET = "tok-SECRET-day-one-outputs-5b2d4e6f"
LILYY = "5c3bf7f7000000000602fd63"
MIA = "5a1b2c3d4e5f60718293a4b5"

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
[[creators]]
user_id = "{mia}"
name = "Mia"
[[channels]]
name = "mail"
url_env = "MAIL_URL"
[[rules]]
name = "engagement-floor"
kind = "threshold"
metric = "engage"
op = "<"
value = 10
"""


@dataclass(frozen=True)
class Workspace:
    folder: Path
    config: Path
    db: Path
    sim: str

    def counters(self) -> dict[str, object]:
        with urllib.request.urlopen(f"{self.sim}/_sim/counters", timeout=10) as answer:
            return dict(json.load(answer))

    def reset(self) -> None:
        request = urllib.request.Request(f"{self.sim}/_sim/reset", data=b"{}", method="POST")
        urllib.request.urlopen(request, timeout=10).close()


def cli(*argv: str, **env: str) -> Ran:
    environ = {"JUSTONEAPI_TOKEN": SECRET, "MAIL_URL": "json://127.0.0.1:9/x"}
    return run_cli(*argv, env=environ | env)


def one_line(done: Ran) -> str:
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert SECRET not in done.stdout + done.stderr
    return lines[0]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workspace]:
    folder = tmp_path_factory.mktemp("day-one")
    with simulator(latency=0.005) as sim:
        db = folder / "h.db"
        config = folder / "config.toml"
        config.write_text(CONFIG.format(sim=sim, db=db, lilyy=LILYY, mia=MIA), encoding="utf-8")
        config.chmod(0o600)
        done = cli("-c", str(config), "db", "upgrade")
        assert done.returncode == 0, done.stderr
        yield Workspace(folder, config, db, sim)


# --- 7: a secret too short to be real is a config error, and never garbles a line -------------


def test_a_one_letter_channel_url_is_refused_in_a_readable_line(workspace: Workspace) -> None:
    done = cli("-c", str(workspace.config), "check", MAIL_URL="e")
    assert done.returncode == 2
    assert "***" not in done.stderr
    assert one_line(done) == (
        "error: channels[0].url_env: environment variable 'MAIL_URL' holds 1 character, "
        "too short to be a real channel URL (SCHEME://…); set the whole value"
    )


def test_a_three_letter_token_is_refused_before_any_call(workspace: Workspace) -> None:
    workspace.reset()
    done = cli("-c", str(workspace.config), "fetch", "Lilyy", JUSTONEAPI_TOKEN="abc")
    assert done.returncode == 2
    assert one_line(done) == (
        "error: JUSTONEAPI_TOKEN: the API token in JUSTONEAPI_TOKEN holds 3 characters, "
        "too short to be a real token; set the whole value"
    )
    assert workspace.counters()["calls"] == 0


def test_redaction_leaves_words_alone_for_a_secret_too_short_to_be_one() -> None:
    line = "error: channels[0].url_env: not an apprise URL (expected SCHEME://…)"
    assert Redactor(["e", "ab", "url"]).redact(line) == line
    assert Redactor(["e", "s3cret"]).redact("the s3cret here") == "the *** here"


# --- 8: "did you mean" never suggests what was typed -------------------------------------------


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (
            ["rules", "test", "--rule", "x"],
            "error: unknown option '--rule'; it is an option of 'silence add', not of "
            "'rules test' (see: creator-monitor rules test --help)",
        ),
        (
            ["status", "--all"],
            "error: unknown option '--all'; it is an option of 'fetch', not of 'status' "
            "(see: creator-monitor status --help)",
        ),
        (
            ["rules", "test", "--sinse", "30d"],
            "error: unknown option '--sinse'; did you mean '--since'? "
            "(see: creator-monitor rules test --help)",
        ),
    ],
)
def test_an_option_of_another_command_is_named_as_such(
    workspace: Workspace, argv: list[str], line: str
) -> None:
    done = cli(*argv, "-c", str(workspace.config))
    assert done.returncode == 2
    assert one_line(done) == line


# --- 9 and 14: an api_error rule fires at its count, and says what happened in words ----------


@pytest_asyncio.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with Receiver() as r:
        yield r


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(CAPTURE_TIME)


def _retrying_config(tmp_path: Path, base_url: str, hook: str, user_id: str) -> object:
    return parse_config(
        {
            "api": {"base_url": base_url, "timeout": "5s", "connect_retries": 0},
            "budget": {"calls_per_minute": 600, "burst": 50, "daily_calls": 10_000},
            "storage": {"url": f"sqlite+aiosqlite:///{tmp_path}/history.db"},
            "schedule": {"retry_attempts": 5, "retry_base": "1s", "retry_max": "2s"},
            "creators": [{"user_id": user_id, "name": "Creator 0"}],
            "channels": [{"name": "team", "url": hook}],
            "rules": [{"name": "failing", "kind": "api_error", "consecutive": 3}],
        }
    )


async def test_consecutive_3_fires_at_the_third_failure_not_after_the_retries(
    tmp_path: Path,
    sim: Simulator,
    receiver: Receiver,
    clock: FakeClock,
    token: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    user_id = plain_creator()
    config = _retrying_config(tmp_path, sim.base_url, receiver.url("/alerts"), user_id)
    sim.force_code(user_id, 301)
    async with running(config, clock, token) as loop:  # type: ignore[arg-type]
        loop.slots[user_id].failure_logged = False
        with caplog.at_level(logging.WARNING, logger="monitor"):
            await loop.fetch(user_id)  # 6 calls: the first and 5 retries, all 301
        clock.advance(minutes=1)  # past group_wait
        await loop.drain()
        [alert] = await table(loop.store, "alerts")
    assert sim.counters().calls == 6
    [body] = receiver.bodies("/alerts")
    assert "- Last code 301, 3 consecutive failures" in body["message"]
    assert alert["summary"] == "6 consecutive failed calls, the last answered code 301"  # now
    failing = [r.getMessage() for r in caplog.records if "failing" in r.getMessage()]
    assert [line.split(") ", 1)[1] for line in failing] == [
        "failing: FAILED, RETRY, code 301, HTTP 200"
    ]


async def test_a_failure_without_an_answer_says_so_not_none(
    tmp_path: Path, receiver: Receiver, clock: FakeClock, token: str
) -> None:
    user_id = plain_creator()
    config = _retrying_config(tmp_path, "http://127.0.0.1:9", receiver.url("/alerts"), user_id)
    async with running(config, clock, token) as loop:  # type: ignore[arg-type]
        await loop.fetch(user_id)
        clock.advance(minutes=1)
        await loop.drain()
        [alert] = await table(loop.store, "alerts")
    [body] = receiver.bodies("/alerts")
    assert "None" not in body["message"] + body["title"] + alert["summary"]
    assert (
        "- The last call got no answer (upstream not reached), 3 consecutive failures"
        in (body["message"])
    )
    assert alert["summary"] == "6 consecutive failed calls, the last got no answer"


def test_upstream_errors_read_without_class_names() -> None:
    assert str(Retryable("FAILED, RETRY", code=301)) == "FAILED, RETRY, code 301"
    assert str(TransportError("cannot reach 127.0.0.1:9")) == "cannot reach 127.0.0.1:9"
    assert repr(Retryable("x", code=301)).startswith("Retryable(")  # for a debugger, not a log


# --- 15: a mistyped path is refused, never created ---------------------------------------------


def test_report_into_a_missing_folder_is_refused_and_creates_nothing(
    workspace: Workspace,
) -> None:
    out = workspace.folder / "no" / "such" / "r.html"
    done = cli("-c", str(workspace.config), "report", "--out", str(out))
    assert done.returncode == 2
    assert one_line(done) == (
        f"error: --out: folder {out.parent} does not exist; create it or fix the path"
    )
    assert not (workspace.folder / "no").exists()


def test_db_upgrade_refuses_a_missing_folder_unless_told_to_create_it(
    workspace: Workspace,
) -> None:
    typo = workspace.folder / "sate" / "h.db"
    config = workspace.folder / "typo.toml"
    config.write_text(
        workspace.config.read_text(encoding="utf-8").replace(str(workspace.db), str(typo)),
        encoding="utf-8",
    )
    config.chmod(0o600)
    for argv in (["db", "upgrade"], ["status"], ["db", "current"]):
        done = cli("-c", str(config), *argv)
        assert done.returncode == 2, argv
        assert one_line(done) == (
            f"error: storage.url: the database's folder {typo.parent} does not exist; fix the "
            "path, or create it (mkdir, or `creator-monitor db upgrade --create-folder`)"
        )
        assert not typo.parent.exists()
    done = cli("-c", str(config), "db", "upgrade", "--create-folder")
    assert done.returncode == 0, done.stderr
    assert done.stderr == f"created {typo.parent}\n"
    assert typo.is_file()


# --- 16: a well-formed id configured nowhere costs nothing without --adhoc ---------------------


def test_fetch_of_an_id_configured_nowhere_is_refused_before_any_call(
    workspace: Workspace,
) -> None:
    workspace.reset()
    stray = LILYY[:-1] + "4"  # one digit off
    for argv in ([stray], [stray, "--dry-run"]):
        done = cli("-c", str(workspace.config), "fetch", *argv)
        assert done.returncode == 2
        assert one_line(done) == (
            f"error: CREATOR: {stray} is configured nowhere; the nearest configured creator is "
            f"{LILYY} (Lilyy). Add --adhoc to fetch it anyway (a paid call; it is not tracked "
            "afterwards)"
        )
    assert workspace.counters()["calls"] == 0


def test_an_adhoc_fetch_is_stored_but_does_not_linger_in_status(workspace: Workspace) -> None:
    workspace.reset()
    stray = "5c3bf7f70000000000000abc"
    done = cli("-c", str(workspace.config), "fetch", stray, "--adhoc")
    assert done.returncode == 0, done.stderr
    assert workspace.counters()["calls"] == 1
    status = cli("-c", str(workspace.config), "status")
    assert status.returncode == 0, status.stderr
    assert LILYY in status.stdout
    assert stray not in status.stdout
    with sqlite3.connect(workspace.db) as conn:
        [(stored,)] = conn.execute(
            "SELECT count(*) FROM fetches f JOIN creators c ON c.id = f.creator_id "
            "WHERE c.user_id = ?",
            (stray,),
        )
    assert stored == 1
