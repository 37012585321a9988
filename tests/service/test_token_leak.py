"""The API token never leaks: not in any log record at DEBUG, nor in any exception or traceback.

No redacting filter is installed here: the client itself must keep the token off everything
but the bytes on the wire (the SecretFilter is only the second line of defence).
"""

from __future__ import annotations

import json
import logging
import traceback
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from urllib.parse import quote, quote_plus

import httpx
import pytest
from pydantic import SecretStr
from support.cli import run_cli
from support.ports import refusing_port
from support.sim import FakeClock, plain_creator

from monitor.errors import UpstreamError
from monitor.model import DateType, Variant
from monitor.ops.redaction import Redactor, SecretFilter, redact
from monitor.upstream.client import JustOneClient
from monitor.upstream.simulator import SimKnobs, Simulator

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

    # a timeout no loaded host reaches for the answers (a 3 MB "huge" body included: a short
    # one turned it into a TransportError under load), a short one for the hang alone
    async with JustOneClient(
        base_url=sim.base_url, token=SecretStr(token), timeout=timedelta(seconds=20)
    ) as client:
        for outcome in (*CODES, *FAULTS):
            sim.force_code(USER, outcome, times=1)
            await attempt(client)
        await attempt(client, "")  # missing userId: the gateway answers HTTP 400
    async with JustOneClient(
        base_url=sim.base_url, token=SecretStr(token), timeout=timedelta(seconds=0.2)
    ) as hurried:
        sim.force_code(USER, "hang", times=1)
        await attempt(hurried)
    async with JustOneClient(
        base_url=sim.base_url, token=SecretStr(token), max_response_bytes=10_000
    ) as small:
        try:
            await small.core_data(USER, Variant(date_type=DateType.DAY_90))
        except UpstreamError as exc:
            failures.append(exc)
    with refusing_port() as port:
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
        "UnreadableAnswer",
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


# --------------------------------------------------------------------------- pieces and spellings

ESCAPING = "tok/SECRET+7f3a=9c1e/5b2d+4e6f8a0b=="


def _spellings(secret: str) -> dict[str, str]:
    return {
        "raw": secret,
        "quote": quote(secret, safe=""),
        "quote_plus": quote_plus(secret),
        "json": json.dumps(secret)[1:-1],
        "json slashes": json.dumps(secret)[1:-1].replace("/", "\\/"),
        "json unicode": json.dumps(secret)[1:-1].replace("+", "\\u002B"),  # .NET's default
        "twice encoded": quote(quote_plus(secret), safe=""),
    }


@pytest.mark.parametrize("kind", ["plain", "escaping"])
def test_every_piece_of_ten_is_masked_in_every_spelling(kind: str, token: str) -> None:
    """Every piece of 10+ characters of every spelling, cut anywhere (inside an escape too),
    with text on either side: nothing of it survives that the oracle would call a piece."""
    secret = ESCAPING if kind == "escaping" else token
    redactor = Redactor([secret])
    pieces = {
        form[i : i + 10] for form in _spellings(secret).values() for i in range(len(form) - 9)
    }
    survivors = []
    for name, form in _spellings(secret).items():
        for start in range(len(form)):
            for stop in range(start + 10, len(form) + 1):
                out = redactor(f"echo: {form[start:stop]} (end)")
                assert "***" in out, (name, form[start:stop])
                survivors += [(name, p, out) for p in pieces if p in out]
    assert survivors == []


def test_a_token_spelt_all_in_unicode_escapes_is_masked_from_two_characters() -> None:
    """The documented limit: a run that decodes to one token character may stay."""
    spelt = "".join(f"\\u{ord(c):04x}" for c in ESCAPING)
    redactor = Redactor([ESCAPING])

    assert redactor(f"x{spelt}y") == "x***y"
    assert redactor(f"x{spelt[12:24]}y") == "x***y"  # two characters, 12 as written
    assert redactor(spelt[30:36]) == spelt[30:36]  # one character


def test_a_url_is_masked_whole_and_its_public_parts_stay() -> None:
    hook = "https://hooks.example/T0/B0/XYZsecretpath"
    text = f"see https://hooks.example/docs; posted to {quote(hook, safe='')} and {hook}"

    assert redact(text, [hook]) == "see https://hooks.example/docs; posted to *** and ***"


def test_a_short_secret_is_masked_whole_only() -> None:
    assert redact("pw=hunter2 and hunter", ["hunter2"]) == "pw=*** and hunter"


def test_text_without_the_token_is_returned_as_is(data_dir: Path, token: str) -> None:
    body = (data_dir / "core_data_success_30d.json").read_text()
    redactor = Redactor([ESCAPING, token])

    assert redactor(body) is body
    assert redactor("") == ""
    assert Redactor()("tok/SECRET+7f3a") == "tok/SECRET+7f3a"


def test_the_log_filter_masks_a_piece_cut_by_a_format(
    token: str, filtered: tuple[logging.Logger, list[str]]
) -> None:
    logger, lines = filtered
    logger.info("echo %.22s", f"GET /x?token={token}")  # the format cuts the token at 9
    logger.info("echo %s", json.dumps({"url": f"/x?token={quote(token)}"[:30]}))

    assert lines == [
        "leaktest.child: echo GET /x?token=***",
        'leaktest.child: echo {"url": "/x?token=***"}',
    ]


# --------------------------------------------------------------------------- api.base_url


def test_a_password_in_base_url_is_refused_by_check_and_never_shown(
    tmp_path: Path, token: str
) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        '[api]\nbase_url = "https://apiuser:hunter2pass@api.example.com"\n'
        f'[storage]\nurl = "sqlite+aiosqlite:///{tmp_path / "h.db"}"\n',
        encoding="utf-8",
    )
    for argv in (["check"], ["fetch", "5c3bf7f7000000000602fd63"], ["run"]):
        done = run_cli("--debug", "-c", str(config), *argv, env={"JUSTONEAPI_TOKEN": token})
        assert done.returncode == 2, done.stderr
        assert done.stderr.splitlines()[-1] == (
            "error: api.base_url: must not hold a user name or password (user:password@host); "
            "the API takes a token"
        )
        assert "hunter2pass" not in done.stdout + done.stderr
        assert "apiuser" not in done.stdout + done.stderr
