"""The /healthz and /metrics endpoint over real HTTP on 127.0.0.1, and the metrics registry."""

from __future__ import annotations

import asyncio
import logging
import socket
from datetime import UTC, datetime

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from monitor.errors import ConfigError, StoreError
from monitor.ops.telemetry import Telemetry, parse_listen, serve


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape, keyed by (name, sorted labels)."""
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


class Flag:
    def __init__(self) -> None:
        self.ok = True

    async def check(self) -> bool:
        return self.ok


async def test_healthz_200_then_503_with_reason(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="monitor.ops.telemetry")
    flag = Flag()
    async with await serve("127.0.0.1:0", Telemetry(), flag.check) as endpoint:
        assert endpoint.port > 0
        assert endpoint.url == f"http://127.0.0.1:{endpoint.port}"
        async with httpx.AsyncClient(base_url=endpoint.url) as http:
            ok = await http.get("/healthz")
            assert (ok.status_code, ok.text) == (200, "ok\n")

            flag.ok = False
            bad = await http.get("/healthz")
            assert (bad.status_code, bad.text) == (503, "unhealthy: health check failed\n")
            assert (await http.get("/healthz")).status_code == 503

            flag.ok = True
            assert (await http.get("/healthz")).status_code == 200
            assert (await http.get("/nope")).status_code == 404
    messages = [r.getMessage() for r in caplog.records if r.name == "monitor.ops.telemetry"]
    # one line per transition, not one per probe
    assert messages[1:] == ["unhealthy: health check failed", "healthy again"]
    assert messages[0].startswith("serving /healthz and /metrics on 127.0.0.1:")


async def test_healthz_reason_from_our_error_and_nothing_foreign(token: str) -> None:
    answers: list[BaseException] = [
        StoreError("database is read-only: /var/lib/creator-monitor/history.db"),
        RuntimeError(f"postgresql://user:{token}@db/x refused"),
    ]

    async def check() -> bool:
        raise answers.pop(0)

    async with (
        await serve("127.0.0.1:0", Telemetry(), check) as endpoint,
        httpx.AsyncClient(base_url=endpoint.url) as http,
    ):
        first = await http.get("/healthz")
        assert (first.status_code, first.text) == (
            503,
            "unhealthy: database is read-only: /var/lib/creator-monitor/history.db\n",
        )
        second = await http.get("/healthz")
        assert (second.status_code, second.text) == (503, "unhealthy: RuntimeError\n")
        assert token not in second.text


async def test_healthz_hung_check_is_unhealthy() -> None:
    async def hang() -> bool:
        await asyncio.Event().wait()
        return True

    async with (
        await serve("127.0.0.1:0", Telemetry(), hang, health_timeout=0.05) as endpoint,
        httpx.AsyncClient(base_url=endpoint.url) as http,
    ):
        r = await http.get("/healthz")
        assert (r.status_code, r.text) == (503, "unhealthy: health check timed out after 0.05s\n")


async def test_metrics_exposes_names_and_values() -> None:
    t = Telemetry()
    t.record_call(0, billed=True)
    t.record_call(0, billed=True)
    t.record_call(201, billed=True)
    t.record_call(302, billed=False)
    t.record_call("transport", billed=False)
    t.set_budget(tokens_left=3.5, daily_calls_left=1990)
    t.set_paused(601)
    t.set_inflight(2)
    t.set_oldest_overdue(125.0)
    t.set_outbox(depth=4, dead_letters=1)
    t.set_last_success(datetime(2026, 11, 28, 12, 0, tzinfo=UTC))

    async with (
        await serve("127.0.0.1:0", t, Flag().check) as endpoint,
        httpx.AsyncClient(base_url=endpoint.url) as http,
    ):
        r = await http.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    got = samples(r.text)
    p = "creator_monitor_"
    assert got[(p + "upstream_calls_total", (("code", "0"),))] == 2
    assert got[(p + "upstream_calls_total", (("code", "201"),))] == 1
    assert got[(p + "upstream_calls_total", (("code", "302"),))] == 1
    assert got[(p + "upstream_calls_total", (("code", "transport"),))] == 1
    assert got[(p + "upstream_billed_calls_total", ())] == 3
    assert got[(p + "budget_tokens_left", ())] == 3.5
    assert got[(p + "budget_daily_calls_left", ())] == 1990
    assert not any(k[0] == p + "upstream_quota_left" for k in got)  # the daemon cannot know it
    assert got[(p + "paused", (("reason", "601"),))] == 1
    assert got[(p + "inflight_calls", ())] == 2
    assert got[(p + "oldest_overdue_seconds", ())] == 125
    assert got[(p + "outbox_depth", ())] == 4
    assert got[(p + "outbox_dead_letters", ())] == 1
    assert got[(p + "last_success_timestamp_seconds", ())] == 1795867200.0
    # exactly one paused series at a time
    assert [k for k in got if k[0] == p + "paused"] == [(p + "paused", (("reason", "601"),))]


async def test_metrics_openmetrics_when_asked() -> None:
    t = Telemetry()
    t.set_inflight(1)
    async with (
        await serve("127.0.0.1:0", t, Flag().check) as endpoint,
        httpx.AsyncClient(base_url=endpoint.url) as http,
    ):
        r = await http.get("/metrics", headers={"Accept": "application/openmetrics-text"})
    assert r.headers["content-type"].startswith("application/openmetrics-text")
    assert "creator_monitor_inflight_calls 1.0" in r.text
    assert r.text.endswith("# EOF\n")


def test_paused_clears_and_quota_unknown() -> None:
    t = Telemetry()
    assert t.registry.get_sample_value("creator_monitor_paused", {"reason": ""}) == 0
    t.set_paused(303)
    t.set_paused("601")
    assert t.registry.get_sample_value("creator_monitor_paused", {"reason": "303"}) is None
    assert t.registry.get_sample_value("creator_monitor_paused", {"reason": "601"}) == 1
    t.set_paused(None)
    assert t.registry.get_sample_value("creator_monitor_paused", {"reason": "601"}) is None
    assert t.registry.get_sample_value("creator_monitor_paused", {"reason": ""}) == 0
    assert t.registry.get_sample_value("creator_monitor_upstream_quota_left") is None
    t.set_oldest_overdue(-3)
    assert t.registry.get_sample_value("creator_monitor_oldest_overdue_seconds") == 0
    with pytest.raises(ValueError):
        t.set_last_success(datetime(2026, 1, 1))


def test_the_balance_gauges_are_absent_until_known() -> None:
    t = Telemetry()
    assert t.registry.get_sample_value("creator_monitor_balance") is None  # not 0: not empty
    assert t.registry.get_sample_value("creator_monitor_balance_days_left") is None
    t.set_funds(balance=1234.56, days_left=None)  # one reading: no price, no days left yet
    assert t.registry.get_sample_value("creator_monitor_balance") == 1234.56
    assert t.registry.get_sample_value("creator_monitor_balance_days_left") is None
    t.set_funds(balance=0.0, days_left=0.0)
    assert t.registry.get_sample_value("creator_monitor_balance") == 0
    assert t.registry.get_sample_value("creator_monitor_balance_days_left") == 0


def test_instances_do_not_collide() -> None:
    a, b = Telemetry(), Telemetry()
    a.record_call(0, billed=True)
    assert a.registry.get_sample_value("creator_monitor_upstream_calls_total", {"code": "0"}) == 1
    assert (
        b.registry.get_sample_value("creator_monitor_upstream_calls_total", {"code": "0"}) is None
    )


async def test_refresh_runs_before_each_scrape_and_failures_serve_stale() -> None:
    calls: list[str] = []

    async def refresh() -> None:
        calls.append("refresh")
        if len(calls) == 2:
            raise StoreError("database is locked")
        t.set_outbox(depth=len(calls), dead_letters=0)

    t = Telemetry(refresh=refresh)
    async with (
        await serve("127.0.0.1:0", t, Flag().check) as endpoint,
        httpx.AsyncClient(base_url=endpoint.url) as http,
    ):
        first = samples((await http.get("/metrics")).text)
        second = samples((await http.get("/metrics")).text)
        third = samples((await http.get("/metrics")).text)
    assert calls == ["refresh"] * 3
    assert first[("creator_monitor_outbox_depth", ())] == 1
    assert second[("creator_monitor_outbox_depth", ())] == 1  # stale, still served
    assert second[("creator_monitor_telemetry_refresh_errors_total", ())] == 1
    assert third[("creator_monitor_outbox_depth", ())] == 3


async def test_slow_refresh_times_out() -> None:
    async def slow() -> None:
        await asyncio.Event().wait()

    t = Telemetry(refresh=slow, refresh_timeout=0.05)
    body, _ = await t.scrape()
    assert b"creator_monitor_telemetry_refresh_errors_total 1.0" in body


@pytest.mark.parametrize(
    ("listen", "expected"),
    [
        ("127.0.0.1:9464", ("127.0.0.1", 9464)),
        ("[::1]:9464", ("::1", 9464)),
        ("0.0.0.0:80", ("0.0.0.0", 80)),
        ("localhost:0", ("localhost", 0)),
    ],
)
def test_parse_listen(listen: str, expected: tuple[str, int]) -> None:
    assert parse_listen(listen) == expected


@pytest.mark.parametrize("listen", [":9464", "9464", "*:9464", "127.0.0.1:x", "127.0.0.1:70000"])
def test_parse_listen_refuses_implicit_or_bad(listen: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_listen(listen)
    assert caught.value.path == "http.listen"


async def test_busy_port_is_a_config_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=f"cannot listen on 127.0.0.1:{port}"):
            await serve(f"127.0.0.1:{port}", Telemetry(), Flag().check)


async def test_close_stops_listening_and_is_idempotent() -> None:
    endpoint = await serve("127.0.0.1:0", Telemetry(), Flag().check)
    url = endpoint.url
    await endpoint.close()
    await endpoint.close()
    async with httpx.AsyncClient() as http:
        with pytest.raises(httpx.ConnectError):
            await http.get(url + "/healthz")


async def test_non_loopback_host_warns(caplog: pytest.LogCaptureFixture) -> None:
    # an explicit wildcard host is bound as asked (port 0, closed at once), with a warning
    async with await serve("0.0.0.0:0", Telemetry(), Flag().check):
        pass
    assert any("not loopback" in r.getMessage() for r in caplog.records)
