"""The console's guard in-process: /metrics needs a token off loopback, the token files follow
the API token's rules, Secure cookies only behind TLS (a trusted proxy's word counts only with
trust_proxy), the failed-login limit, and the language each request gets.
"""

from __future__ import annotations

import logging
from contextlib import AsyncExitStack
from pathlib import Path

import httpx
import pytest

from monitor.config import parse_config
from monitor.errors import ConfigError
from monitor.ops.telemetry import Telemetry, serve
from monitor.store import migrate
from monitor.web.auth import LoginLimit, console_tokens
from monitor.web.i18n import negotiate
from monitor.web.server import console_mount


async def _healthy() -> bool:
    return True


def _config(tmp_path: Path, **http: object) -> tuple[object, str, str]:
    admin, reader = tmp_path / "admin", tmp_path / "reader"
    admin.write_text("admin-secret-long-1\n")
    reader.write_text("reader-secret-long-2\n")
    admin.chmod(0o600)
    reader.chmod(0o600)
    config = parse_config(
        {
            "storage": {"url": f"sqlite+aiosqlite:///{tmp_path}/h.db"},
            "http": {"token_file": str(admin), "readonly_token_file": str(reader), **http},
        }
    )
    return config, "admin-secret-long-1", "reader-secret-long-2"


async def test_metrics_need_a_token_off_loopback(tmp_path: Path) -> None:
    config, admin, reader = _config(tmp_path)
    await migrate.upgrade(f"sqlite+aiosqlite:///{tmp_path}/h.db")
    async with AsyncExitStack() as stack:
        mount = await console_mount(config, stack, {})  # type: ignore[arg-type]
        endpoint = await serve("0.0.0.0:0", Telemetry(), _healthy, mount=mount)
        stack.push_async_callback(endpoint.close)
        url = f"http://127.0.0.1:{endpoint.port}"
        async with httpx.AsyncClient(base_url=url) as client:
            assert (await client.get("/healthz")).status_code == 200
            assert (await client.get("/metrics")).status_code == 401
            wrong = await client.get("/metrics", headers={"Authorization": "Bearer nope"})
            assert wrong.status_code == 401
            ok = await client.get("/metrics", headers={"Authorization": f"Bearer {reader}"})
            assert ok.status_code == 200
            assert "creator_monitor_upstream_billed_calls_total" in ok.text
            both = await client.get("/api/v1/budget", headers={"Authorization": f"Bearer {admin}"})
            assert both.status_code == 200
            assert admin not in both.text


async def test_session_cookie_is_secure_only_behind_tls(tmp_path: Path) -> None:
    for trust, forwarded, secure in ((False, "https", False), (True, "https", True),
                                     (True, "http", False)):  # fmt: skip
        config, admin, _ = _config(tmp_path, trust_proxy=trust)
        await migrate.upgrade(f"sqlite+aiosqlite:///{tmp_path}/h.db")
        async with AsyncExitStack() as stack:
            mount = await console_mount(config, stack, {})  # type: ignore[arg-type]
            endpoint = await serve("127.0.0.1:0", Telemetry(), _healthy, mount=mount)
            stack.push_async_callback(endpoint.close)
            headers = {"X-Forwarded-Proto": forwarded}
            async with httpx.AsyncClient(base_url=endpoint.url, headers=headers) as client:
                form = await client.get("/login")
                nonce = form.cookies["cm_login"]
                assert f'value="{nonce}"' in form.text
                # a Secure cookie is not sent back over plain http by the client: send it by hand
                client.cookies.clear()
                reply = await client.post(
                    "/login",
                    data={"nonce": nonce, "token": admin, "next": "//evil.example"},
                    headers={"Cookie": f"cm_login={nonce}"},
                )
                assert reply.status_code == 303
                assert reply.headers["Location"] == "/"  # never off-site
                cookie = next(
                    h for h in reply.headers.get_list("Set-Cookie") if h.startswith("cm_session=")
                )
                assert "HttpOnly" in cookie
                assert "SameSite=Strict" in cookie
                assert ("Secure" in cookie) is secure


def test_token_files_follow_the_api_token_rules(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    missing = parse_config({"http": {"token_file": str(tmp_path / "none")}})
    with pytest.raises(ConfigError, match="not found") as caught:
        console_tokens(missing, {})
    assert caught.value.path == "http.token_file"
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(ConfigError, match="empty"):
        console_tokens(parse_config({"http": {"token_file": str(empty)}}), {})
    exposed = tmp_path / "exposed"
    exposed.write_text("tok-exposed-0123456\n")
    exposed.chmod(0o644)
    with caplog.at_level(logging.WARNING):
        tokens = console_tokens(parse_config({"http": {"token_file": str(exposed)}}), {})
    assert tokens.role_of("tok-exposed-0123456") == "admin"
    assert "chmod 600" in caplog.text
    assert "tok-exposed-0123456" not in caplog.text
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "creator-monitor-http-token").write_text("from-systemd-0123456\n")
    tokens = console_tokens(parse_config({}), {"CREDENTIALS_DIRECTORY": str(creds)})
    assert tokens.role_of("from-systemd-0123456") == "admin"
    assert tokens.role_of("") is None
    assert console_tokens(parse_config({}), {}).role_of("anything") is None


def test_the_readonly_token_has_a_systemd_credential_too(tmp_path: Path) -> None:
    """A DynamicUser= service cannot read a root-owned 0600 file: systemd hands both console
    tokens over as credentials, and each gets its own role."""
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "creator-monitor-http-token").write_text("admin-from-systemd\n")
    (creds / "creator-monitor-http-readonly-token").write_text("viewer-from-systemd\n")
    tokens = console_tokens(parse_config({}), {"CREDENTIALS_DIRECTORY": str(creds)})
    assert tokens.role_of("admin-from-systemd") == "admin"
    assert tokens.role_of("viewer-from-systemd") == "readonly"
    (creds / "creator-monitor-http-token").unlink()
    alone = console_tokens(parse_config({}), {"CREDENTIALS_DIRECTORY": str(creds)})
    assert alone.role_of("viewer-from-systemd") == "readonly"
    (creds / "creator-monitor-http-token").write_text("viewer-from-systemd\n")
    with pytest.raises(ConfigError, match="equals the admin token"):
        console_tokens(parse_config({}), {"CREDENTIALS_DIRECTORY": str(creds)})


def test_failed_logins_lock_a_client_then_everyone() -> None:
    now = [0.0]
    limit = LoginLimit(per_client=3, overall=5, window=60, clock=lambda: now[0])
    for _ in range(3):
        assert limit.retry_after("a") == 0
        limit.failed("a")
    assert limit.retry_after("a") == 60
    assert limit.retry_after("b") == 0
    limit.failed("b")
    limit.failed("c")
    assert limit.retry_after("d") == 60  # five failures in all: everyone waits
    now[0] = 61
    assert limit.retry_after("a") == 0


@pytest.mark.parametrize(
    ("explicit", "accept", "default", "expected"),
    [
        (None, "zh-CN,zh;q=0.9,en;q=0.8", "en", "zh"),
        (None, "en-US,en;q=0.9,zh;q=0.5", "zh", "en"),
        (None, "fr-FR,de;q=0.8", "zh", "zh"),
        (None, "", "en", "en"),
        ("en", "zh-CN", "zh", "en"),
        ("xx", "fr", "zh", "zh"),
    ],
)
def test_language_follows_choice_then_browser_then_config(
    explicit: str | None, accept: str, default: str, expected: str
) -> None:
    assert negotiate(explicit, accept, default) == expected


async def test_every_page_renders_on_both_backends(db_url: str, tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from monitor.store import Store

    config, admin, _ = _config(tmp_path)
    config = config.model_copy(
        update={"storage": config.storage.model_copy(update={"url": db_url})}
    )  # type: ignore[attr-defined]
    await migrate.upgrade(db_url)
    now = datetime.now(UTC)
    async with Store.open(db_url) as store:
        await store.heartbeat(
            "host-a:42:abcdef", host="host-a", pid=42, version="0.1.0", started_at=now, now=now
        )
    async with AsyncExitStack() as stack:
        mount = await console_mount(config, stack, {})  # type: ignore[arg-type]
        endpoint = await serve("127.0.0.1:0", Telemetry(), _healthy, mount=mount)
        stack.push_async_callback(endpoint.close)
        headers = {"Authorization": f"Bearer {admin}", "Accept-Language": "zh-CN"}
        async with httpx.AsyncClient(base_url=endpoint.url, headers=headers) as client:
            for path in ("/", "/?sort=change", "/alerts?state=all", "/account", "/instances"):
                reply = await client.get(path)
                assert reply.status_code == 200, path
                assert 'lang="zh"' in reply.text
            instances = (await client.get("/instances")).text
            assert ("host-a" in instances) is db_url.startswith("postgresql")
            assert (await client.get("/creators/nobody")).status_code == 404
            budget = (await client.get("/api/v1/budget")).json()
            assert budget["calls_today"] == 0
            assert budget["paused"] is False
