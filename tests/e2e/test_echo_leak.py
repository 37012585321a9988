"""An upstream that echoes the whole request, cut at every length and spelt every way (JSON,
slashes escaped, percent-encoded, plain text, a gateway body, a success): no 10-character piece
of the token reaches an exception, a kept body, a log line, the CLI's output under ``--debug``
(``fetch --all``, ``fetch ID``), the daemon's records, or any column of any table, on SQLite and
PostgreSQL."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote_plus

import httpx
import pytest
from pydantic import SecretStr
from support.cli import run_cli
from support.daemon import daemon_config, write_toml
from support.echo import (
    ESCAPED_TOKEN,
    VARIANTS,
    EchoUpstream,
    dump_database,
    echo_id,
    echo_upstream,
    leaks,
)

from monitor.config import parse_config
from monitor.daemon import Daemon
from monitor.daemon.options import Options
from monitor.errors import UpstreamError
from monitor.model import Variant
from monitor.service.fetching.attempt import error_text
from monitor.store import migrate
from monitor.upstream.client import CORE_DATA_PATH, JustOneClient


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def logged() -> Iterator[_Records]:
    """Every record at DEBUG, with no redacting filter: the client must keep the token out."""
    handler = _Records()
    loggers = [logging.getLogger(name) for name in ("", "httpx", "httpcore", "monitor")]
    levels = [logger.level for logger in loggers]
    loggers[0].addHandler(handler)
    for logger in loggers:  # configure_logging (run by other tests) quiets httpx
        logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        loggers[0].removeHandler(handler)
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _sent_url(base_url: str, user_id: str, token: str) -> str:
    """The URL the client puts on the wire (its length sets the cut lengths)."""
    params = {"userId": user_id, **Variant().query()}
    url = httpx.URL(base_url + CORE_DATA_PATH, params=params).copy_add_param("token", token)
    return str(url)


async def _collect(client: JustOneClient, user_id: str, texts: list[str]) -> None:
    try:
        result = await client.core_data(user_id)
    except UpstreamError as exc:
        texts += [str(exc), repr(exc), exc.message, exc.raw_body or "", error_text(exc)]
    else:
        texts += [result.raw_body, repr(result)]


#: the variants swept over every cut length; the others over every cut that reaches the token
FULL_SWEEP = (VARIANTS.index(("sent", "json")), VARIANTS.index(("decoded", "slashes")))


def _cuts(length: int, token: str, *, full: bool) -> list[str]:
    """Every cut of the URL (1..length characters) for FULL_SWEEP when ``full``, and for every
    variant every cut that ends inside the token (as sent or decoded) or up to ten before it."""
    near = range(len(quote_plus(token)) + 10)
    return [
        echo_id(v, drop)
        for v in range(len(VARIANTS))
        for drop in (range(length) if full and v in FULL_SWEEP else near)
    ]


@pytest.mark.parametrize("kind", ["plain", "escaped"])
async def test_every_cut_of_every_echo_is_masked(kind: str, token: str, logged: _Records) -> None:
    token = ESCAPED_TOKEN if kind == "escaped" else token
    texts: list[str] = []
    async with (
        echo_upstream() as upstream,
        JustOneClient(
            base_url=upstream.url, token=SecretStr(token), clock=lambda: datetime.now(UTC)
        ) as client,
    ):
        length = len(_sent_url(upstream.url, echo_id(0, 0), token))
        ids = _cuts(length, token, full=kind == "escaped")
        for start in range(0, len(ids), 10):  # the client's ten connections, kept busy
            await asyncio.gather(*(_collect(client, i, texts) for i in ids[start : start + 10]))

    # every cut length 1..len(URL) went through the real client, and the variants
    assert upstream.calls == len(ids)
    assert upstream.longest == length
    assert (echo_id(FULL_SWEEP[0], length - 1) in ids) is (kind == "escaped")
    assert any("token=***" in t for t in texts)  # the live capture did hold echoes
    assert any("token=%3D***" in t or "token%3D***" in t for t in texts)  # encoded ones too
    assert len(logged.lines) > len(ids)  # httpx logged every request at DEBUG
    assert leaks([*texts, *logged.lines], token) == []


# --------------------------------------------------------------------------- the CLI, stored


def _config(tmp_path: Path, base_url: str, db_url: str, ids: list[str]) -> Path:
    return write_toml(
        tmp_path / "config.toml",
        {
            "api": {"base_url": base_url, "timeout": "10s"},
            "budget": {"calls_per_minute": 10_000, "burst": 50, "daily_calls": 100_000},
            "storage": {"url": db_url},
            "schedule": {"retry_attempts": 0},
            "creators": [{"user_id": i} for i in ids],
        },
    )


async def _run(*argv: str) -> tuple[int, str, str]:
    """The command in this process (``support.cli``), off the test's loop, which serves the
    echoing upstream: what is checked is what it prints and stores."""
    done = await asyncio.to_thread(run_cli, *argv, env={"JUSTONEAPI_TOKEN": ESCAPED_TOKEN})
    return done.returncode, done.stdout, done.stderr


async def _fetch_everything(
    upstream: EchoUpstream, config: Path, ids: list[str], singles: list[str]
) -> list[str]:
    # db_url's SQLite folder does not exist yet: the CLI creates it only when told to
    code, out, err = await _run("-c", str(config), "db", "upgrade", "--create-folder")
    assert code == 0, err
    outputs = [out, err]
    code, out, err = await _run("--debug", "-c", str(config), "fetch", "--all")
    assert code == 1, err  # the echoes are failures, the successes are not: some of each
    assert f"of {len(ids)} series fetched with {len(ids)} calls" in out
    outputs += [out, err]
    for user_id in singles:
        code, out, err = await _run("--debug", "-c", str(config), "fetch", user_id, "--adhoc")
        outputs += [out, err]
        assert code in (0, 1), err
        assert "error (unexpected" not in err
        assert " DEBUG " in err  # --debug was on: httpx and the client logged
    assert upstream.calls == len(ids) + len(singles)
    return outputs


async def test_fetch_debug_stores_and_prints_no_piece_of_an_echoed_token(
    tmp_path: Path, db_url: str
) -> None:
    async with echo_upstream() as upstream:
        # cuts through the encoded token every 5 characters, in every variant (the client test
        # above takes every length); each answer is stored: fetches, raw_responses, schedule
        drops = range(0, len(quote_plus(ESCAPED_TOKEN)) + 5, 5)
        ids = [echo_id(v, drop) for v in range(len(VARIANTS)) for drop in drops]
        config = _config(tmp_path, upstream.url, db_url, ids)
        singles = [echo_id(0, 7), echo_id(VARIANTS.index(("decoded", "slashes")), 3)]
        outputs = await _fetch_everything(upstream, config, ids, singles)

    tables = await dump_database(db_url)
    assert len(tables["fetches"]) == len(ids) + len(singles)
    raw = [value for row in tables["raw_responses"] for value in row]
    assert len(tables["raw_responses"]) == len(ids) + len(singles)  # every body kept, masked
    assert sum("token=***" in value for value in raw) > len(ids) / 2
    stored = [value for rows in tables.values() for row in rows for value in row]
    assert leaks([*outputs, *stored], ESCAPED_TOKEN) == []


# --------------------------------------------------------------------------- the daemon


async def test_the_daemon_stores_and_logs_no_piece_of_an_echoed_token(
    tmp_path: Path, db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The daemon's own path (dispatcher, gate, Fetcher, store) on real time; its log records
    are read before any redacting handler could see them."""
    await migrate.upgrade(db_url)
    caplog.set_level(logging.DEBUG)
    async with echo_upstream() as upstream:
        ids = [echo_id(v, drop) for v in range(len(VARIANTS)) for drop in (0, 9, 24, 41)]
        document = daemon_config(
            upstream.url,
            db_url,
            ids,
            budget={"calls_per_minute": 6000, "burst": 50},
            schedule={"max_in_flight": 10, "retry_attempts": 0},
        )
        daemon = Daemon(
            parse_config(document),
            Options(tick=0.2, drain_every=60.0, environ={"JUSTONEAPI_TOKEN": ESCAPED_TOKEN}),
        )
        task = asyncio.get_running_loop().create_task(daemon.run())
        for _ in range(600):
            if upstream.calls >= len(ids) or task.done():
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # the last answers are recorded
        daemon.request_stop()
        assert await asyncio.wait_for(task, timeout=30) == 0

    assert upstream.calls == len(ids)
    tables = await dump_database(db_url)
    assert len(tables["fetches"]) == len(ids)
    assert len(tables["raw_responses"]) == len(ids)
    stored = [value for rows in tables.values() for row in rows for value in row]
    logged = [caplog.text, *(repr(r.__dict__) for r in caplog.records)]
    assert any("failing" in r.getMessage() for r in caplog.records)  # the echoes were logged
    assert leaks([*logged, *stored], ESCAPED_TOKEN) == []
