"""Hostile requests to the console, in-process over real sockets: open redirects after login,
a read-only session logging out, /metrics behind a proxy, ids and bytes that used to give 500s,
a locked database, and one limit for every failed authentication, keyed on the real client.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.tls import tls_context

from monitor.config import parse_config
from monitor.ops.telemetry import Telemetry, serve
from monitor.store import migrate
from monitor.web.server import console_mount

ADMIN, READER = "admin-secret-0123456789", "reader-secret-0123456789"


async def _healthy() -> bool:
    return True


def _document(tmp_path: Path) -> dict[str, Any]:
    return {
        "storage": {"url": f"sqlite+aiosqlite:///{tmp_path}/h.db"},
        "http": {"token_file": str(tmp_path / "admin"),
                 "readonly_token_file": str(tmp_path / "reader")},
        "creators": [{"user_id": "5c3bf7f7000000000602fd63", "name": "Lilyy",
                      "tags": ["beauty"]}],
        "rules": [{"name": "reads-down", "kind": "threshold", "metric": "read",
                   "op": "<", "value": 1}],
    }  # fmt: skip


@pytest.fixture
async def console(
    tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[httpx.AsyncClient]:
    """A console on loopback; ``@pytest.mark.parametrize("http", [{...}])`` adds http keys."""
    http: dict[str, Any] = getattr(request, "param", {})
    admin, reader = tmp_path / "admin", tmp_path / "reader"
    admin.write_text(ADMIN + "\n")
    reader.write_text(READER + "\n")
    admin.chmod(0o600)
    reader.chmod(0o600)
    document = _document(tmp_path)
    document["http"] |= http
    config = parse_config(document)
    await migrate.upgrade(document["storage"]["url"])
    async with AsyncExitStack() as stack:
        mount = await console_mount(config, stack, {})
        endpoint = await serve("127.0.0.1:0", Telemetry(), _healthy, mount=mount)
        stack.push_async_callback(endpoint.close)
        async with httpx.AsyncClient(
            base_url=endpoint.url, timeout=30, verify=tls_context()
        ) as client:
            yield client


async def _login(client: httpx.AsyncClient, token: str, next_: str = "/") -> httpx.Response:
    form = await client.get("/login")
    nonce = form.cookies["cm_login"]
    return await client.post("/login", data={"nonce": nonce, "token": token, "next": next_})


@pytest.mark.parametrize(
    "target",
    [
        "/\t/127.0.0.2:8080/phish",
        "/\n/evil.example",
        "/\r\nSet-Cookie: x=1",
        "//evil.example",
        "/\\evil.example",
        "/\\/evil.example",
        "https://evil.example/",
        "javascript:alert(1)",
        "/\x00/x",
        "/ok\x7f",
    ],
)
async def test_login_redirects_only_to_a_path_on_this_site(
    console: httpx.AsyncClient, target: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR):
        shown = await console.get("/login", params={"next": target})
        reply = await _login(console, ADMIN, target)
    assert shown.status_code == 200
    assert 'name="next" value="/"' in shown.text
    assert reply.status_code == 303
    assert reply.headers["Location"] == "/"
    assert "Traceback" not in caplog.text
    assert "Error handling request" not in caplog.text


async def test_login_keeps_a_path_on_this_site(console: httpx.AsyncClient) -> None:
    reply = await _login(console, ADMIN, "/alerts?state=all&page=2")
    assert reply.headers["Location"] == "/alerts?state=all&page=2"
    # and the way there keeps the whole query
    console.cookies.clear()
    sent = await console.get("/alerts", params={"state": "all", "page": "2"})
    assert sent.status_code == 303
    assert httpx.URL(sent.headers["Location"]).params["next"] == "/alerts?state=all&page=2"


async def test_a_read_only_session_can_log_out(console: httpx.AsyncClient) -> None:
    assert (await _login(console, READER)).status_code == 303
    page = await console.get("/")
    assert page.status_code == 200
    csrf = page.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    out = await console.post("/logout", data={"csrf": csrf})
    assert out.status_code == 303
    assert out.headers["Location"] == "/login"
    after = await console.get("/api/v1/budget")
    assert after.status_code == 401  # the session is gone
    # still no other write for that role
    assert (await _login(console, READER)).status_code == 303
    page = await console.get("/alerts")
    csrf = page.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    refused = await console.post("/silences", data={"csrf": csrf, "rule": "reads-down"})
    assert refused.status_code == 403


async def test_logout_still_needs_the_csrf_token(console: httpx.AsyncClient) -> None:
    await _login(console, READER)
    assert (await console.post("/logout", data={})).status_code == 403
    assert (await console.get("/api/v1/budget")).status_code == 200


@pytest.mark.parametrize("console", [{"trust_proxy": True}], indirect=True)
async def test_metrics_need_a_token_behind_a_trusted_proxy(console: httpx.AsyncClient) -> None:
    remote = {"X-Forwarded-For": "203.0.113.7"}
    assert (await console.get("/metrics", headers=remote)).status_code == 401
    assert (await console.get("/metrics")).status_code == 401  # any request may be proxied
    assert (await console.get("/healthz", headers=remote)).status_code == 200
    scrape = await console.get("/metrics", headers={"Authorization": f"Bearer {READER}", **remote})
    assert scrape.status_code == 200


async def test_metrics_are_open_only_to_this_host(console: httpx.AsyncClient) -> None:
    assert (await console.get("/metrics")).status_code == 200
    for header in ("X-Forwarded-For", "Forwarded", "X-Real-IP"):
        proxied = await console.get("/metrics", headers={header: "203.0.113.7"})
        assert proxied.status_code == 401, header


async def test_ids_and_bytes_give_4xx_not_500(
    console: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    admin = {"Authorization": f"Bearer {ADMIN}"}
    with caplog.at_level(logging.ERROR):
        for method, path in [
            ("DELETE", "/api/v1/silences/9223372036854775808"),
            ("DELETE", "/api/v1/silences/-1"),
            ("DELETE", "/api/v1/silences/0"),
            ("DELETE", "/api/v1/silences/%EF%BC%91"),  # a full-width digit one
            ("POST", "/api/v1/alerts/99999999999999999999/ack"),
            ("POST", "/api/v1/alerts/1e3/ack"),
        ]:
            reply = await console.request(method, path, headers=admin)
            assert reply.status_code == 404, (method, path, reply.text)
        for raw in (b"Bearer \xff\xfe", b"\xff\xfe", b"Bearer " + "é".encode("latin-1")):
            reply = await console.get("/api/v1/budget", headers={"Authorization": raw})
            assert reply.status_code == 401, raw
        await _login(console, ADMIN)
        odd = await console.post(
            "/api/v1/silences", headers={"X-CSRF-Token": b"\xff\xfe"}, json={"rule": "x"}
        )
        assert odd.status_code == 403
        page = await console.post("/alerts/99999999999999999999/ack", data={"csrf": "x"})
        assert page.status_code == 403
    assert "Traceback" not in caplog.text
    assert "Error handling request" not in caplog.text


async def test_a_locked_database_gives_503_with_retry_after(
    console: httpx.AsyncClient, tmp_path: Path
) -> None:
    admin = {"Authorization": f"Bearer {ADMIN}"}
    holder = sqlite3.connect(tmp_path / "h.db", isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        started = time.monotonic()
        ack = await console.post("/api/v1/alerts/1/ack", headers=admin)
        silence = await console.post(
            "/api/v1/silences", headers=admin, json={"rule": "reads-down", "for": "1h"}
        )
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    for reply in (ack, silence):
        assert reply.status_code == 503, reply.text
        assert reply.headers["Retry-After"] == "5"
        assert "busy" in reply.json()["error"]
        assert str(tmp_path) not in reply.text
    assert time.monotonic() - started < 30
    after = await console.post(
        "/api/v1/silences", headers=admin, json={"rule": "reads-down", "for": "1h"}
    )
    assert after.status_code == 201


async def test_bearer_and_form_failures_share_one_limit(console: httpx.AsyncClient) -> None:
    for _ in range(3):
        wrong = await console.get("/api/v1/budget", headers={"Authorization": "Bearer guess"})
        assert wrong.status_code == 401
    for _ in range(2):
        assert (await _login(console, "guess")).status_code == 401
    # five failures from this client: the right token waits too, bearer or form
    locked = await console.get("/api/v1/budget", headers={"Authorization": f"Bearer {ADMIN}"})
    assert locked.status_code == 429
    assert int(locked.headers["Retry-After"]) > 800
    assert (await _login(console, ADMIN)).status_code == 429


@pytest.mark.parametrize("console", [{"trust_proxy": True}], indirect=True)
async def test_the_limit_keys_on_the_hop_the_proxy_saw(console: httpx.AsyncClient) -> None:
    for n in range(5):
        # the client writes whatever first entries it likes; the proxy appends what it saw
        spoofed = {"Authorization": "Bearer guess", "X-Forwarded-For": f"10.0.0.{n}, 198.51.100.9"}
        assert (await console.get("/api/v1/budget", headers=spoofed)).status_code == 401
    same = {"Authorization": f"Bearer {ADMIN}", "X-Forwarded-For": "10.9.9.9, 198.51.100.9"}
    assert (await console.get("/api/v1/budget", headers=same)).status_code == 429
    other = {"Authorization": f"Bearer {ADMIN}", "X-Forwarded-For": "198.51.100.10"}
    assert (await console.get("/api/v1/budget", headers=other)).status_code == 200


# --- the console API validates a silence exactly as `silence add` does ----------------------

BAD_SILENCES = [
    ({"rule": "reads-dwn", "for": "1h"}, ["--rule", "reads-dwn", "--for", "1h"], "rule",
     "unknown rule 'reads-dwn'; did you mean 'reads-down'?"),
    ({"tag": "beuaty", "for": "1h"}, ["--tag", "beuaty", "--for", "1h"], "tag",
     "unknown tag 'beuaty'; did you mean 'beauty'?"),
    ({"creator": "Lily", "for": "1h"}, ["--creator", "Lily", "--for", "1h"], "creator",
     "unknown creator 'Lily'; did you mean 'Lilyy'?"),
    ({"rule": "reads-down", "for": "999d"}, ["--rule", "reads-down", "--for", "999d"], "for",
     "duration '999d' is too long; at most 365d"),
    ({}, [], "silence add", "give at least one of"),
]  # fmt: skip


@pytest.mark.parametrize(("body", "argv", "key", "message"), BAD_SILENCES)
async def test_the_api_refuses_a_silence_as_the_cli_does(
    console: httpx.AsyncClient,
    tmp_path: Path,
    body: dict[str, str],
    argv: list[str],
    key: str,
    message: str,
) -> None:
    from support.cli import run_cli
    from support.daemon import write_toml

    admin = {"Authorization": f"Bearer {ADMIN}"}
    reply = await console.post("/api/v1/silences", headers=admin, json=body)
    assert reply.status_code == 400
    error = reply.json()["error"]
    assert error.startswith(f"{key}: ")
    assert message in error
    config = write_toml(tmp_path / "cli.toml", _document(tmp_path))
    # in this process, off the loop that serves the console; no token, a home of its own
    done = await asyncio.to_thread(
        run_cli, "-c", config, "silence", "add", *argv, env={"HOME": str(tmp_path)}
    )
    if argv:  # argparse checks --for itself, with the same words
        assert done.returncode == 2, done.stderr
        assert message in done.stderr
    assert (await console.get("/api/v1/silences", headers=admin)).json()["silences"] == []


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 100_000 + b"]" * 100_000,  # deeper than Python's recursion limit
        b'{"rule": ' + b"[" * 5000 + b"]" * 5000 + b"}",
        b'{"rule": "reads-down", "for": "1h"',
        b"\xff\xfe{}",
    ],
)
async def test_a_body_that_is_no_json_object_is_400(
    console: httpx.AsyncClient, body: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    admin = {"Authorization": f"Bearer {ADMIN}", "Content-Type": "application/json"}
    with caplog.at_level(logging.ERROR):
        reply = await console.post("/api/v1/silences", headers=admin, content=body)
    assert reply.status_code == 400, reply.text
    assert "Traceback" not in caplog.text
    assert (await console.get("/api/v1/silences", headers=admin)).json()["silences"] == []


async def test_the_api_refuses_unknown_keys_and_wrong_types_all_at_once(
    console: httpx.AsyncClient,
) -> None:
    admin = {"Authorization": f"Bearer {ADMIN}"}
    reply = await console.post(
        "/api/v1/silences", headers=admin, json={"rule": "reads-down", "reasn": "x", "for": 2}
    )
    assert reply.status_code == 400
    error = reply.json()["error"]
    assert "reasn: unknown key 'reasn'; did you mean 'reason'?" in error
    assert "for: expected a string, got int" in error
    not_object = await console.post("/api/v1/silences", headers=admin, json=["rule"])
    assert not_object.status_code == 400
    assert "JSON object" in not_object.json()["error"]
    ok = await console.post(
        "/api/v1/silences",
        headers=admin,
        json={"creator": "Lilyy", "rule": "reads-down", "tag": "beauty", "for": "365d"},
    )
    assert ok.status_code == 201, ok.text
    assert ok.json()["silence"]["user_id"] == "5c3bf7f7000000000602fd63"


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"metric": "reads"}, "metric: unknown metric 'reads'; did you mean 'read'?"),
        ({"sort": "foo"}, "sort: unknown order 'foo'"),
        ({"page": "two"}, "page: expected a whole number from 1, got 'two'"),
        ({"per_page": "0"}, "per_page: expected a whole number from 1, got '0'"),
    ],
)
async def test_unknown_query_values_are_400_not_a_fallback(
    console: httpx.AsyncClient, query: dict[str, str], message: str
) -> None:
    admin = {"Authorization": f"Bearer {ADMIN}"}
    reply = await console.get("/api/v1/creators", headers=admin, params=query)
    assert reply.status_code == 400
    assert message in reply.json()["error"]
    page = await console.get("/", headers=admin, params=query)
    assert page.status_code == 400
    assert message in page.text
    if "metric" in query:
        series = await console.get("/api/v1/creators/Lilyy/series", headers=admin, params=query)
        assert series.status_code == 400
        assert message in series.json()["error"]


# --- a silence's reason is text: the same one line from the API, the form and the CLI --------

#: a reason that is not text, as each surface receives it, and the words every surface says
BAD_REASONS = [
    ("a\x00b", "reason: holds U+0000 (NUL); remove it"),
    ("a\x1b[31mb", "reason: holds U+001B (escape); remove it"),
    # bytes that are not UTF-8 reach the command line as surrogates (os.fsdecode), and
    # JSON may spell one ("\ud800"); neither can be stored
    ("a\udcffb", "reason: holds U+DCFF (not UTF-8 text); remove it"),
    ("\ud800", "reason: holds U+D800 (not UTF-8 text); remove it"),
]


@pytest.mark.parametrize(("reason", "message"), BAD_REASONS)
async def test_the_api_and_the_form_refuse_a_reason_that_is_not_text(
    console: httpx.AsyncClient, reason: str, message: str, caplog: pytest.LogCaptureFixture
) -> None:
    import json

    admin = {"Authorization": f"Bearer {ADMIN}", "Content-Type": "application/json"}
    body = json.dumps({"rule": "reads-down", "for": "1h", "reason": reason})  # \ud800 escaped
    with caplog.at_level(logging.ERROR):
        reply = await console.post("/api/v1/silences", headers=admin, content=body)
    assert reply.status_code == 400, reply.text
    assert reply.json()["error"] == message
    if not any("\ud800" <= c <= "\udfff" for c in reason):  # a form carries only UTF-8
        await _login(console, ADMIN)
        page = await console.get("/alerts")
        csrf = page.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        form = {"csrf": csrf, "rule": "reads-down", "for": "1h", "reason": reason}
        sent = await console.post("/silences", data=form)
        assert sent.status_code == 303
        assert httpx.URL(sent.headers["Location"]).params["error"] == message
    assert "Traceback" not in caplog.text
    assert (await console.get("/api/v1/silences", headers=admin)).json()["silences"] == []


@pytest.mark.parametrize(("reason", "message"), BAD_REASONS[:3])
def test_silence_add_refuses_a_reason_that_is_not_text(
    tmp_path: Path, reason: str, message: str
) -> None:
    from support.cli import run_cli
    from support.daemon import write_toml

    config = write_toml(tmp_path / "cli.toml", _document(tmp_path))
    assert run_cli("-c", config, "db", "upgrade").returncode == 0
    argv = ["silence", "add", "--rule", "reads-down", "--for", "1h", "--reason", reason]
    done = run_cli("-c", config, *argv)
    assert done.returncode == 2, done.stderr
    assert done.stderr == f"error: {message.replace('reason:', '--reason:')}\n"
    listed = run_cli("-c", config, "silence", "list")
    assert "reads-down" not in listed.stdout


# --- a creator's series takes its input as `history` does ------------------------------------

#: (the API's ref and query, `history`'s arguments, the words both say after the key)
BAD_SERIES = [
    ("Lilyy", {"since": "9999-12-31"}, ["Lilyy", "--since", "9999-12-31"], "since",
     "date 9999-12-31 is in the future"),
    ("Lilyy", {"since": "1999-12-31"}, ["Lilyy", "--since", "1999-12-31"], "since",
     "date 1999-12-31 is before 2000-01-01"),
    ("Lilyy", {"since": "yesterday"}, ["Lilyy", "--since", "yesterday"], "since",
     "expected a duration like 30d or a date like 2025-12-01, got 'yesterday'"),
    ("Lilyy", {"variant": "a/b/c/d"}, ["Lilyy", "--variant", "a/b/c/d"], "variant",
     "unknown business 'a'; known: DAILY_NOTE, COOPERATE_NOTE"),
    ("Lilyy", {"variant": "DAILY_NOTE"}, ["Lilyy", "--variant", "DAILY_NOTE"], "variant",
     "expected BUSINESS/NOTE_TYPE/DATE_TYPE/ADVERTISE, got 'DAILY_NOTE'"),
    ("Lily", {}, ["Lily"], "creator", "unknown creator 'Lily'; did you mean 'Lilyy'?"),
    ("5C3BF7F7000000000602FD63", {}, ["5C3BF7F7000000000602FD63"], "creator",
     "user id '5C3BF7F7000000000602FD63' has upper-case letters"),
]  # fmt: skip


@pytest.mark.parametrize(("ref", "query", "argv", "key", "message"), BAD_SERIES)
async def test_the_series_refuses_what_history_refuses(
    console: httpx.AsyncClient,
    tmp_path: Path,
    ref: str,
    query: dict[str, str],
    argv: list[str],
    key: str,
    message: str,
) -> None:
    from support.cli import run_cli
    from support.daemon import write_toml

    admin = {"Authorization": f"Bearer {ADMIN}"}
    reply = await console.get(f"/api/v1/creators/{ref}/series", headers=admin, params=query)
    assert reply.status_code == 400, reply.text
    assert reply.json()["error"].startswith(f"{key}: {message}")
    config = write_toml(tmp_path / "cli.toml", _document(tmp_path))
    done = run_cli("-c", config, "history", *argv)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr


async def test_the_series_takes_since_as_history_does(console: httpx.AsyncClient) -> None:
    admin = {"Authorization": f"Bearer {ADMIN}"}
    lowered = "daily_note/photo_text_and_video/day_30/all"  # `--variant` takes any case
    for query in ({"since": "30d"}, {"since": "2025-12-01"}, {"variant": lowered}):
        reply = await console.get("/api/v1/creators/Lilyy/series", headers=admin, params=query)
        # configured, nothing stored yet: the words `history` exits 1 with
        assert reply.status_code == 404, reply.text
        assert reply.json()["error"] == "no stored history for Lilyy (5c3bf7f7000000000602fd63)"


# --- what a hostile client makes the listener log: no traceback, one line at most -----------


async def test_hostile_requests_log_no_traceback(
    console: httpx.AsyncClient, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A header or request line too large is the client's mistake: it gets its 400, and the
    journal gets nothing (aiohttp logged it at ERROR with a traceback, the header's bytes
    within). A handler that fails is one ERROR line with the exception, the traceback only
    with --debug."""
    from support.cli import _logging_restored

    from monitor.ops.logs import configure_logging
    from monitor.web.context import Console

    admin = {"Authorization": f"Bearer {ADMIN}"}
    with _logging_restored():
        configure_logging(debug=False)
        capsys.readouterr()
        huge = await console.get("/api/v1/budget", headers={"X-Pad": "x" * 9000} | admin)
        long_line = await console.get("/api/v1/creators", params={"q": "a" * 9000}, headers=admin)
        assert (huge.status_code, long_line.status_code) == (400, 400)

        async def broken(self: Console, *args: object, **kwargs: object) -> None:
            raise RuntimeError("a handler broke")

        monkeypatch.setattr(Console, "budget", broken)
        failed = await console.get("/api/v1/budget", headers=admin)
        assert failed.status_code == 500
        logged = capsys.readouterr().err
    assert "Traceback" not in logged
    assert "x" * 100 not in logged
    assert "a" * 100 not in logged
    lines = logged.splitlines()
    assert len(lines) == 1, logged
    assert "ERROR" in lines[0]
    assert "RuntimeError: a handler broke" in lines[0]


@pytest.mark.parametrize("limit", ["\uff11", " 5", "1_0", "\u0662"])
async def test_a_limit_is_plain_digits_as_ids_and_pages_are(
    console: httpx.AsyncClient, limit: str
) -> None:
    admin = {"Authorization": f"Bearer {ADMIN}"}
    reply = await console.get(
        "/api/v1/creators/Lilyy/notes", headers=admin, params={"limit": limit}
    )
    assert reply.status_code == 400, reply.text
    assert reply.json()["error"] == f"limit: expected a whole number, got {limit!r}"


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"state": "firng"}, "state: unknown state 'firng'; did you mean 'firing'?"),
        ({"page": "two"}, "page: expected a whole number from 1, got 'two'"),
        ({"page": "0"}, "page: expected a whole number from 1, got '0'"),
    ],
)
async def test_the_alerts_page_refuses_what_the_api_refuses(
    console: httpx.AsyncClient, query: dict[str, str], message: str
) -> None:
    """The alerts page fell back to the open alerts and page 1 for any state or page it did
    not know, while the API said 400, and the overview page says 400 for its own."""
    admin = {"Authorization": f"Bearer {ADMIN}"}
    page = await console.get("/alerts", headers=admin, params=query)
    assert page.status_code == 400
    assert message in page.text
    if "state" in query:
        api = await console.get("/api/v1/alerts", headers=admin, params=query)
        assert api.status_code == 400
        assert api.json()["error"] == message


async def test_the_alerts_page_shows_every_state_the_api_knows(console: httpx.AsyncClient) -> None:
    admin = {"Authorization": f"Bearer {ADMIN}"}
    for state in ("open", "firing", "pending", "resolved", "all"):
        assert (
            await console.get("/alerts", headers=admin, params={"state": state})
        ).status_code == 200
