"""Drill 7, the parts that stand alone: the config-permission warning, and ``--debug`` tracebacks
of a CLI command failing with the token and a channel URL in its exception text (and in the
exception it was raised from), for each place the token can come from."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from support.cli import Ran

from monitor.config import Config, load_config, parse_config, resolve_token

pytestmark = pytest.mark.drills

CHANNEL_SECRET = "ChanS3cretPathPart"
CHANNEL_URL = f"json://127.0.0.1:9/hooks/{CHANNEL_SECRET}"


def write_config(directory: Path, token_file: Path | None, mode: int = 0o600) -> Path:
    path = directory / "config.toml"
    api = f'[api]\ntoken_file = "{token_file}"\n' if token_file else ""
    path.write_text(
        f'{api}[storage]\nurl = "sqlite+aiosqlite:///{directory}/h.db"\n\n'
        f'[[channels]]\nname = "team"\nurl = "{CHANNEL_URL}"\n',
        encoding="utf-8",
    )
    path.chmod(mode)
    return path


def boom(args: object, config: Config) -> int:
    """A ``status`` that fails with both secrets in a chained exception."""
    token = resolve_token(config).get_secret_value()
    url = config.channels[0].url.get_secret_value()
    try:
        raise ValueError(f"inner: the upstream echoed ?token={token}")
    except ValueError as exc:
        raise RuntimeError(f"outer: {token} for {url}") from exc


def run_failing_cli(
    config: Path, env: dict[str, str], monkeypatch: pytest.MonkeyPatch, *args: str
) -> Ran:
    """``creator-monitor -c CONFIG ARGS status`` in this process (``support.cli``), its
    ``status`` replaced by :func:`boom`; no token but the one ``env`` gives."""
    from support.cli import run_cli

    import monitor.cli.commands as commands

    monkeypatch.setitem(commands.HANDLERS, "status", boom)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    return run_cli("-c", config, *args, "status", env=env)


def token_source(source: str, directory: Path, token: str) -> tuple[Path | None, dict[str, str]]:
    """(api.token_file, extra environment) for the token to come from ``source``."""
    if source == "env":
        return None, {"JUSTONEAPI_TOKEN": token}
    if source == "token_file":
        path = directory / "token"
        path.write_text(token, encoding="utf-8")
        path.chmod(0o600)
        return path, {}
    credentials = directory / "credentials"
    credentials.mkdir()
    (credentials / "justoneapi-token").write_text(token, encoding="utf-8")
    return None, {"CREDENTIALS_DIRECTORY": str(credentials)}


@pytest.mark.parametrize(
    ("source", "debug"),
    [
        ("env", True),
        ("env", False),
        ("token_file", True),
        ("credentials_directory", False),
    ],
)
def test_a_failing_command_never_prints_a_secret(
    tmp_path: Path, token: str, source: str, debug: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    token_file, env = token_source(source, tmp_path, token)
    config = write_config(tmp_path, token_file)
    done = run_failing_cli(config, env, monkeypatch, *(["--debug"] if debug else []))
    assert done.returncode == 1
    output = done.stdout + done.stderr
    assert "outer: *** for ***" in output  # it did fail the way the drill meant
    assert ("Traceback" in output) == debug
    assert ("The above exception was the direct cause" in output) == debug
    for secret in (token, CHANNEL_URL, CHANNEL_SECRET):
        assert secret not in output


def test_exposed_config_and_token_file_warn_without_the_secret(
    tmp_path: Path, token: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="monitor.config")
    token_file = tmp_path / "token"
    token_file.write_text(token, encoding="utf-8")
    token_file.chmod(0o640)
    config_path = write_config(tmp_path, token_file, mode=0o644)
    config = load_config(config_path)
    assert resolve_token(config, environ={}).get_secret_value() == token
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2
    assert "holds channel URLs and is readable by other users (mode 644)" in messages[0]
    assert f"chmod 600 {config_path}" in messages[0]
    assert "holds the API token and is readable by other users (mode 640)" in messages[1]
    for secret in (token, CHANNEL_URL, CHANNEL_SECRET):
        assert not [m for m in messages if secret in m]
    caplog.clear()
    config_path.chmod(0o600)
    token_file.chmod(0o600)
    resolve_token(load_config(config_path), environ={})
    assert caplog.records == []


def test_secrets_are_hidden_in_config_reprs(token: str) -> None:
    config = parse_config({"channels": [{"name": "team", "url": CHANNEL_URL}]})
    for text in (repr(config), str(config), config.model_dump_json()):
        assert CHANNEL_SECRET not in text


ADMIN_TOKEN = "ConsoleAdminTokenSecret-0123456789"
READER_TOKEN = "ConsoleReaderTokenSecret-9876543210"


@pytest.mark.parametrize("source", ["token_file", "credentials_directory"])
def test_the_console_tokens_are_scrubbed_like_the_api_token(
    tmp_path: Path, token: str, source: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client's header too large for the listener comes back in aiohttp's log line
    (``Got more than 8190 bytes when reading: b'Bearer …'``): the console's tokens are
    secrets of the process as the API token is, whichever way they came."""
    from support.cli import run_cli

    import monitor.cli.commands as commands

    (tmp_path / "admin").write_text(ADMIN_TOKEN, encoding="utf-8")
    (tmp_path / "reader").write_text(READER_TOKEN, encoding="utf-8")
    for name in ("admin", "reader"):
        (tmp_path / name).chmod(0o600)
    config = write_config(tmp_path, None)
    env = {"JUSTONEAPI_TOKEN": token}
    if source == "token_file":
        with config.open("a", encoding="utf-8") as file:
            file.write(
                f'\n[http]\nlisten = "127.0.0.1:9464"\ntoken_file = "{tmp_path}/admin"\n'
                f'readonly_token_file = "{tmp_path}/reader"\n'
            )
    else:
        with config.open("a", encoding="utf-8") as file:
            file.write('\n[http]\nlisten = "127.0.0.1:9464"\n')
        credentials = tmp_path / "credentials"
        credentials.mkdir()
        (tmp_path / "admin").rename(credentials / "creator-monitor-http-token")
        (tmp_path / "reader").rename(credentials / "creator-monitor-http-readonly-token")
        env["CREDENTIALS_DIRECTORY"] = str(credentials)

    def boom(args: object, config: object) -> int:
        logging.getLogger("aiohttp.server").error(
            "Got more than 8190 bytes when reading: b'Bearer %s' / %s", ADMIN_TOKEN, READER_TOKEN
        )
        raise RuntimeError(f"outer: {ADMIN_TOKEN} {READER_TOKEN}")

    monkeypatch.setitem(commands.HANDLERS, "status", boom)
    done = run_cli("--debug", "-c", config, "status", env=env)
    assert done.returncode == 1
    assert "outer: *** ***" in done.stderr  # it did fail the way the drill meant
    assert "Bearer ***" in done.stderr
    for secret in (ADMIN_TOKEN, READER_TOKEN, token):
        assert secret not in done.stderr


async def test_a_reload_masks_the_secrets_of_the_new_config(
    tmp_path: Path, token: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """SIGHUP may bring a renewed token file and a new channel URL: from then on they are as
    secret in the log as the ones the process started with."""
    import asyncio

    from support.cli import _logging_restored
    from support.daemon import creators, daemon_config, in_process, write_toml

    from monitor.ops.logs import configure_logging

    new_token = "RenewedApiTokenAfterReload-0123456789"
    new_url = "json://127.0.0.1:9/hooks/NewChannelPathSecret"
    token_file = tmp_path / "token"
    token_file.write_text(token, encoding="utf-8")
    token_file.chmod(0o600)
    with _logging_restored():
        configure_logging(debug=False, secrets=[token])
        async with in_process(tmp_path, token) as env:
            doc = daemon_config(env.sim.base_url, env.db_url, creators(1))
            doc["api"]["token_file"] = str(token_file)
            path = write_toml(tmp_path / "config.toml", doc)
            daemon = env.make(doc, config_path=path)
            daemon.options.environ.clear()  # the token comes from the file
            reloaded: list[bool] = []

            async def reload_once_started() -> None:
                while not env.sim.counters().by_series:
                    await asyncio.sleep(0.01)
                token_file.write_text(new_token, encoding="utf-8")  # renewed
                write_toml(path, doc | {"channels": [{"name": "new", "url": new_url}]})
                reloaded.append(await daemon.reload())
                logging.getLogger("monitor.test").error("echoed: %s %s", new_token, new_url)

            helper = asyncio.get_running_loop().create_task(reload_once_started())
            await env.run_until(daemon, lambda: bool(reloaded))
            await helper
        logged = capsys.readouterr().err
    assert reloaded == [True]
    assert "echoed: *** ***" in logged, logged
    for secret in (new_token, new_url, "NewChannelPathSecret"):
        assert secret not in logged


def test_a_database_password_in_a_readable_config_warns_and_is_masked(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """``storage.url = "postgresql+asyncpg://bob:PASSWORD@host/db"`` makes the config a secret
    as an inline channel URL does: a readable file gets the warning, and the password is
    masked in log lines (a driver's message may quote the DSN)."""
    from support.cli import run_cli

    password = "Sup3rS3cretDbPassw0rd"
    config_path = tmp_path / "config.toml"
    config_path.write_text(
        f'[storage]\nurl = "postgresql+asyncpg://bob:{password}@127.0.0.1:1/db"\n',
        encoding="utf-8",
    )
    config_path.chmod(0o644)
    caplog.set_level(logging.WARNING, logger="monitor.config")
    load_config(config_path)
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1, messages
    assert "holds a database password (storage.url) and is readable by other users" in messages[0]
    assert password not in messages[0]
    caplog.clear()
    config_path.chmod(0o600)
    load_config(config_path)
    assert caplog.records == []

    import monitor.cli.commands as commands

    def boom(args: object, config: object) -> int:
        logging.getLogger("asyncpg").error("could not connect: password=%s", password)
        return 1

    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(commands.HANDLERS, "status", boom)
        done = run_cli("-c", config_path, "status")
    assert "password=***" in done.stderr
    assert password not in done.stderr
