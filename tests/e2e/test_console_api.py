"""The console's JSON API against a real ``creator-monitor run`` on the simulator, with httpx:
401 without or with a wrong token, 403 for the read-only token on writes, silences (and the
CLI seeing them), acknowledgements stored, series by id or name, budget, OpenAPI; no secret
in any answer. Also ``creator-monitor serve`` on the same database without the daemon.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from support.console import (
    CHANNEL_SECRET,
    NAMES,
    LiveConsole,
    alerts_json,
    live_console,
    no_secret_in,
)
from support.daemon import cli
from support.ports import free_port
from support.wait import until_blocking

#: one worker runs the module (ONE_WORKER_MODULES in conftest.py): its daemon starts once
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveConsole]:
    from conftest import TEST_TOKEN

    yield from live_console(tmp_path_factory.mktemp("console-api"), TEST_TOKEN)


WRITES = [
    ("POST", "/api/v1/silences", {"rule": "imp-seen", "for": "1h"}),
    ("POST", "/api/v1/alerts/1/ack", None),
    ("DELETE", "/api/v1/silences/1", None),
]
READS = ["/api/v1/creators", "/api/v1/alerts", "/api/v1/silences", "/api/v1/budget", "/"]


def test_only_healthz_is_open(live: LiveConsole) -> None:
    with live.api() as anonymous:
        assert anonymous.get("/healthz").text == "ok\n"
        # loopback: /metrics may stay open
        assert anonymous.get("/metrics").status_code == 200
        for path in READS[:-1]:
            reply = anonymous.get(path)
            assert reply.status_code == 401, path
            assert reply.headers["WWW-Authenticate"].startswith("Bearer")
        page = anonymous.get("/", follow_redirects=False)
        assert page.status_code == 303
        assert page.headers["Location"].startswith("/login")
        for method, path, body in WRITES:
            assert anonymous.request(method, path, json=body).status_code == 401
    # from an address of its own: its failures lock that address, not the other tests'
    with live.api("not-the-token", source="127.0.0.2") as wrong:
        replies = [wrong.get(path) for path in READS]
        replies += [wrong.request(method, path, json=body) for method, path, body in WRITES]
        # five failed authentications, then that client waits, whatever it sends
        assert [r.status_code for r in replies] == [401] * 5 + [429] * (len(replies) - 5)
        assert all(int(r.headers["Retry-After"]) > 800 for r in replies[5:])
        assert wrong.get("/healthz").status_code == 200


def test_read_only_token_reads_but_cannot_write(live: LiveConsole) -> None:
    with live.api(live.readonly) as reader:
        for path in READS:
            assert reader.get(path).status_code == 200, path
        for method, path, body in WRITES:
            reply = reader.request(method, path, json=body)
            assert reply.status_code == 403, path
            assert "read-only" in reply.json()["error"]
    assert "imp-seen" not in live.cli("silence", "list").stdout


def test_creators_paged_filtered_and_series_by_id_or_name(live: LiveConsole) -> None:
    with live.api(live.admin) as admin:
        everyone = admin.get("/api/v1/creators", params={"per_page": 4}).json()
        assert everyone["total"] == len(NAMES)
        assert [c["name"] for c in everyone["creators"]] == sorted(NAMES)[:4]
        first = everyone["creators"][0]
        assert first["last_value"] is not None
        assert len(first["spark"]) >= 20
        assert first["status"] == "ok"
        assert first["open_alerts"] == 1
        food = admin.get("/api/v1/creators", params={"tag": "food"}).json()
        assert sorted(c["name"] for c in food["creators"]) == ["Bob Wang", "Eve Sun"]
        rising = admin.get("/api/v1/creators", params={"sort": "change"}).json()["creators"]
        changes = [c["change_pct"] for c in rising if c["change_pct"] is not None]
        assert changes == sorted(changes, reverse=True)

        by_id = admin.get(f"/api/v1/creators/{live.users[1]}/series", params={"metric": "imp"})
        by_name = admin.get("/api/v1/creators/Bob Wang/series", params={"metric": "imp"})
        assert by_id.status_code == 200
        assert by_id.json() == by_name.json()
        points = by_id.json()["points"]
        assert len(points) >= 20
        assert all(set(p) == {"variant", "date", "value"} for p in points)
        since = points[-3]["date"]
        recent = admin.get(
            f"/api/v1/creators/{live.users[1]}/series", params={"metric": "imp", "since": since}
        ).json()["points"]
        assert [p["date"] for p in recent] == [p["date"] for p in points[-3:]]
        nobody = admin.get("/api/v1/creators/nobody/series")
        assert nobody.status_code == 400  # as `history nobody` exits 2
        assert nobody.json()["error"].startswith("creator: unknown creator 'nobody'")
        bad = admin.get(f"/api/v1/creators/{live.users[1]}/series", params={"metric": "x"})
        assert bad.status_code == 400


def test_silence_via_api_shows_in_the_cli_and_goes_away(live: LiveConsole) -> None:
    with live.api(live.admin) as admin:
        made = admin.post(
            "/api/v1/silences",
            json={"creator": "Carol Li", "rule": "imp-seen", "for": "2h", "reason": "api test"},
        )
        assert made.status_code == 201, made.text
        silence = made.json()["silence"]
        assert silence["user_id"] == live.users[2]
        assert silence["reason"] == "api test"
        listed = live.cli("silence", "list")
        assert listed.returncode == 0
        assert "api test" in listed.stdout
        assert live.users[2] in listed.stdout
        assert [s["id"] for s in admin.get("/api/v1/silences").json()["silences"]] == [
            silence["id"]
        ]
        assert admin.post("/api/v1/silences", json={"for": "2h"}).status_code == 400
        assert admin.post("/api/v1/silences", json={"rule": "x", "for": "soon"}).status_code == 400
        assert admin.delete(f"/api/v1/silences/{silence['id']}").status_code == 204
        assert admin.delete(f"/api/v1/silences/{silence['id']}").status_code == 404
    assert "api test" not in live.cli("silence", "list").stdout


def test_acknowledge_via_api_is_stored_and_shown(live: LiveConsole) -> None:
    target = next(a for a in alerts_json(live, "firing") if a["acked_at"] is None)
    with live.api(live.admin) as admin:
        reply = admin.post(f"/api/v1/alerts/{target['id']}/ack")
        assert reply.status_code == 200
        assert reply.json()["result"] == "acked"
        assert reply.json()["alert"]["acked_by"] == "api"
        again = admin.post(f"/api/v1/alerts/{target['id']}/ack").json()
        assert again["result"] == "already"
        assert admin.post("/api/v1/alerts/999999/ack").status_code == 404
    stored = next(a for a in alerts_json(live) if a["id"] == target["id"])
    assert stored["acked_at"] is not None


def test_budget_openapi_and_no_secret_anywhere(live: LiveConsole) -> None:
    with live.api(live.admin) as admin:
        budget = admin.get("/api/v1/budget").json()
        assert budget["calls_today"] >= len(NAMES)
        assert budget["daily_calls"] == 5000
        assert budget["paused"] is False
        assert any(c["code"] == "0" for c in budget["codes"])
        spec = admin.get("/api/v1/openapi.json").json()
        assert spec["openapi"].startswith("3.")
        assert {"/creators", "/creators/{ref}/series", "/alerts", "/alerts/{id}/ack",
                "/silences", "/silences/{id}", "/budget"} <= set(spec["paths"])  # fmt: skip
        texts = [admin.get(p).text for p in READS]
        texts += [admin.get(p).text for p in ("/alerts", "/account", "/instances")]
        texts.append(admin.get(f"/creators/{live.users[0]}").text)
        for text in texts:
            no_secret_in(text, live)


def test_serve_shows_the_same_database_without_the_daemon(live: LiveConsole) -> None:
    port = free_port()
    serve = subprocess.Popen(
        [*cli(), "-c", str(live.config), "serve", "--listen", f"127.0.0.1:{port}"],
        env=live.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        until_blocking(
            lambda: httpx.get(f"{url}/healthz").status_code == 200,
            30,
            "serve answering /healthz",
            every=0.1,
            ended=lambda: None if serve.poll() is None else "serve exited",
            ignore=(httpx.TransportError,),
        )
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {live.admin}"}) as c:
            served = c.get("/api/v1/creators").json()
            assert served["total"] == len(NAMES)
            assert c.get("/metrics").status_code == 404  # no daemon: no metrics
        assert httpx.get(f"{url}/api/v1/creators").status_code == 401
    finally:
        serve.terminate()
        assert serve.wait(timeout=15) == 0
        assert serve.stdout is not None
        out = serve.stdout.read()
        serve.stdout.close()
    for secret in (live.admin, live.readonly, CHANNEL_SECRET):
        assert secret not in out
    assert Path(live.config).exists()
