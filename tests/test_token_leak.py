"""The API token never leaks: not in any log record at DEBUG, nor in any exception or traceback.

No redacting filter is installed here: the client itself must keep the token off everything
but the bytes on the wire (the SecretFilter is only the second line of defence).
"""

from __future__ import annotations

import json
import logging
import socket
import traceback
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta

import httpx
import pytest
from pydantic import SecretStr
from sim_support import FakeClock, plain_creator

from monitor.client import JustOneClient
from monitor.errors import UpstreamError
from monitor.model import DateType, Variant
from monitor.redaction import SecretFilter, redact
from monitor.simulator import SimKnobs, Simulator

USER = plain_creator()
LOGGERS = (
    "",
    "httpx",
    "httpcore",
    "aiohttp",
    "aiohttp.access",
    "aiohttp.client",
    "aiohttp.internal",
    "aiohttp.server",
    "aiohttp.web",
    "aiohttp.websocket",
    "asyncio",
    "monitor",
)
CODES = (100, 201, 301, 302, 303, 400, 500, 600, 601, 602, 101, 404)
FAULTS = ("gateway_400", "html_502", "empty", "truncated", "wrong_type", "huge", "reset")


class Everything(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def captured() -> Iterator[Everything]:
    handler = Everything()
    saved = {name: logging.getLogger(name).level for name in LOGGERS}
    root = logging.getLogger()
    root.addHandler(handler)
    for name in LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


@pytest.fixture
async def sim(token: str) -> AsyncIterator[Simulator]:
    knobs = SimKnobs(tokens=frozenset({token}), hang_s=5.0, huge_bytes=3_000_000)
    async with Simulator(knobs, clock=FakeClock()) as simulator:
        yield simulator


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    todo = [exc]
    while todo:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        todo.extend(e for e in (current.__cause__, current.__context__) if e is not None)


def _exception_texts(exc: BaseException) -> Iterator[str]:
    yield "".join(traceback.format_exception(exc))
    for link in _chain(exc):
        yield str(link)
        yield repr(link)
        yield repr(link.args)
        if isinstance(link, httpx.RequestError):
            yield str(link.request.url)
        if isinstance(link, UpstreamError):
            yield str(link.raw_body)
            yield link.message


async def _every_failure(sim: Simulator, token: str) -> list[UpstreamError]:
    failures: list[UpstreamError] = []

    async def attempt(client: JustOneClient, user_id: str = USER) -> None:
        try:
            await client.core_data(user_id)
        except UpstreamError as exc:
            failures.append(exc)

    async with JustOneClient(
        base_url=sim.base_url, token=SecretStr(token), timeout=timedelta(seconds=0.2)
    ) as client:
        for outcome in (*CODES, *FAULTS, "hang"):
            sim.force_code(USER, outcome, times=1)
            await attempt(client)
        await attempt(client, "")  # missing userId: the gateway answers HTTP 400
    async with JustOneClient(
        base_url=sim.base_url, token=SecretStr(token), max_response_bytes=10_000
    ) as small:
        try:
            await small.core_data(USER, Variant(date_type=DateType.DAY_90))
        except UpstreamError as exc:
            failures.append(exc)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with JustOneClient(
        base_url=f"http://127.0.0.1:{port}", token=SecretStr(token), connect_retries=1
    ) as refused:
        await attempt(refused)
    return failures


async def test_token_never_leaks(sim: Simulator, token: str, captured: Everything) -> None:
    async with JustOneClient(base_url=sim.base_url, token=SecretStr(token)) as client:
        result = await client.core_data(USER)
    failures = await _every_failure(sim, token)

    # the token did reach the upstream: it accepts only this token and billed the success
    assert result.billed is True
    assert sim.counters().log[0].code == 0
    assert len(failures) == len(CODES) + len(FAULTS) + 4
    assert {type(f).__name__ for f in failures} >= {
        "AccountBlocked",
        "NoContent",
        "Retryable",
        "RateLimited",
        "QuotaExceeded",
        "InvalidRequest",
        "UnknownCode",
        "ParseError",
        "TransportError",
    }

    texts = [result.raw_body, repr(result)]
    for failure in failures:
        texts.extend(_exception_texts(failure))
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    for record in captured.records:
        texts.append(formatter.format(record))
        texts.append(repr(record.__dict__))
    texts.append(json.dumps(sim.counters().to_json()))
    texts.append(json.dumps(sim.knobs.public()))
    texts.append(repr(sim.knobs))

    leaks = [text for text in texts if token in text]
    assert leaks == []
    # the capture was live: httpx and httpcore did log every request at DEBUG/INFO
    names = {record.name for record in captured.records}
    assert {"httpx", "httpcore.connection", "httpcore.http11"} <= names
    assert any("HTTP Request: GET" in record.getMessage() for record in captured.records)


# --------------------------------------------------------------------------- second line of defence


def test_redact_masks_every_encoding() -> None:
    secret = "a/b c+d"
    text = f"raw={secret} path=a%2Fb%20c%2Bd query=a/b%20c%2Bd form=a%2Fb+c%2Bd"

    assert redact(text, [SecretStr(secret)]) == "raw=*** path=*** query=*** form=***"
    assert redact("nothing here", ["", "zzz"]) == "nothing here"


@pytest.fixture
def filtered(token: str) -> Iterator[tuple[logging.Logger, list[str]]]:
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(self.format(record))

    handler = Collect(level=logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    handler.addFilter(SecretFilter([SecretStr(token), "https://hooks.example/T0/B0/XYZ"]))
    parent = logging.getLogger("leaktest")
    parent.addHandler(handler)
    parent.setLevel(logging.DEBUG)
    try:
        yield logging.getLogger("leaktest.child"), lines
    finally:
        parent.removeHandler(handler)


class Shows:
    def __init__(self, text: str) -> None:
        self.text = text

    def __str__(self) -> str:
        return self.text


def test_secret_filter_scrubs_message_args_exception_and_stack(
    token: str, filtered: tuple[logging.Logger, list[str]]
) -> None:
    logger, lines = filtered
    logger.info("GET /x?token=%s", token)
    logger.info("channel %s failed", Shows("https://hooks.example/T0/B0/XYZ"))
    logger.info("encoded %s", "tok-SECRET-7f3a9c1e5b2d4e6f8a0b".replace("-", "%2D"))
    try:
        raise RuntimeError(f"boom with {token}")
    except RuntimeError:
        logger.exception("call failed")
    logger.warning("where %s", token, stack_info=True)
    # a bad format string must not bypass the filter
    logger.info("broken %s %s", token)  # noqa: PLE1206 - the mistake is the point

    text = "\n".join(lines)
    assert token not in text
    assert "hooks.example/T0" not in text
    assert lines[0] == "leaktest.child: GET /x?token=***"
    assert lines[1] == "leaktest.child: channel *** failed"
    assert "RuntimeError: boom with ***" in lines[3]
    assert "Traceback (most recent call last)" in lines[3]
    assert "Stack (most recent call last)" in lines[4]
    assert lines[5] == "leaktest.child: broken %s %s ***"


def test_secret_filter_can_learn_secrets_later(filtered: tuple[logging.Logger, list[str]]) -> None:
    logger, lines = filtered
    secret_filter = next(f for h in logging.getLogger("leaktest").handlers for f in h.filters)
    assert isinstance(secret_filter, SecretFilter)
    secret_filter.add("late-secret", SecretStr("other one"))
    logger.info("late-secret and other%20one")

    assert lines == ["leaktest.child: *** and ***"]
    assert "late-secret" in secret_filter.secrets
