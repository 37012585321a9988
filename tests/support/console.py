"""A live console for the API and browser tests: the simulator and a real ``creator-monitor run``
as subprocesses, with ``[http] listen``, admin and read-only token files, named and tagged
creators, and a rule that fires for every creator (so there are alerts to silence and ack).
The database is migrated, and the other commands run, in this process.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx

from monitor.store import migrate
from support.cli import Ran, run_cli
from support.daemon import child_env, cli, write_toml
from support.ports import free_port
from support.sim import creator_id
from support.tls import tls_context
from support.wait import until_blocking

#: a channel URL with a marker: it must never reach a page or an API answer
CHANNEL_SECRET = "chansecret-5f1d2a"
NAMES = ["Alice Chen", "Bob Wang", "Carol Li", "Dan Zhou", "Eve Sun", "Fay Wu"]
TAGS = [["beauty"], ["food"], ["beauty", "travel"], ["tech"], ["food"], ["travel"]]


@dataclass
class LiveConsole:
    url: str
    admin: str
    readonly: str
    api_token: str
    config: Path
    env: dict[str, str]
    users: list[str]

    def cli(self, *args: str) -> Ran:
        """``creator-monitor -c CONFIG ARGS`` in this process (``support.cli``): beside the
        daemon all the same, with its own connections to the database. In a thread of its own:
        the command runs its own event loop, and the browser tests' driver (Playwright's sync
        API) keeps one running on this thread."""
        argv = ("-c", self.config, *args)
        with ThreadPoolExecutor(max_workers=1) as worker:
            ran = worker.submit(run_cli, *argv, env={"JUSTONEAPI_TOKEN": self.api_token})
            return ran.result(timeout=60)

    def api(self, token: str | None = None, *, source: str | None = None) -> httpx.Client:
        """A client with ``token``; from the loopback address ``source`` (e.g. 127.0.0.2), so
        its failed authentications lock only that address."""
        headers = {} if token is None else {"Authorization": f"Bearer {token}"}
        transport = None if source is None else httpx.HTTPTransport(local_address=source)
        return httpx.Client(
            base_url=self.url,
            headers=headers,
            timeout=10,
            transport=transport,
            verify=tls_context(),
        )


def _secret_file(path: Path, value: str) -> Path:
    path.write_text(value + "\n", encoding="utf-8")
    path.chmod(0o600)
    return path


def live_console(folder: Path, api_token: str) -> Iterator[LiveConsole]:
    """Start the simulator and the daemon; yield once every creator has an open alert."""
    sim_port, http_port = free_port(), free_port()
    env = child_env(api_token)
    procs: list[subprocess.Popen[str]] = []
    log = (folder / "daemon.log").open("w")
    try:
        sim = subprocess.Popen(
            [*cli(), "simulate", "--port", str(sim_port), "--latency", "0.005"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        procs.append(sim)
        assert sim.stdout is not None
        seen: list[str] = []
        while not any("simulated Just One API" in line for line in seen):
            line = sim.stdout.readline()
            assert line, "".join(seen)
            seen.append(line)
        users = [creator_id(n) for n in range(len(NAMES))]
        admin, readonly = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
        db_url = f"sqlite+aiosqlite:///{folder}/history.db"
        document = {
            "api": {"base_url": f"http://127.0.0.1:{sim_port}", "timeout": "10s"},
            "budget": {"calls_per_minute": 120, "burst": 10, "daily_calls": 5000},
            "storage": {"url": db_url},
            "schedule": {"max_in_flight": 4, "grace": "1s"},
            "defaults": {"every": "24h"},
            "notify": {"language": "en"},
            "http": {
                "listen": f"127.0.0.1:{http_port}",
                "token_file": str(_secret_file(folder / "admin.token", admin)),
                "readonly_token_file": str(_secret_file(folder / "readonly.token", readonly)),
            },
            "creators": [
                {"user_id": u, "name": n, "tags": t}
                for u, n, t in zip(users, NAMES, TAGS, strict=True)
            ],
            "channels": [
                {"name": "team", "url": f"json://127.0.0.1:9/hook?key={CHANNEL_SECRET}"}
            ],
            "rules": [
                {"name": "imp-seen", "kind": "threshold", "metric": "imp", "op": ">=",
                 "value": 0, "repeat": "1h"},
            ],
        }  # fmt: skip
        config = write_toml(folder / "config.toml", document)
        config.chmod(0o600)
        asyncio.run(migrate.upgrade(db_url))
        daemon = subprocess.Popen(
            [*cli(), "-c", str(config), "run"], env=env, stdout=log, stderr=subprocess.STDOUT
        )
        procs.append(daemon)  # type: ignore[arg-type]
        live = LiveConsole(
            f"http://127.0.0.1:{http_port}", admin, readonly, api_token, config, env, users
        )
        with live.api(admin) as client:

            def every_creator_alerted() -> bool:
                assert daemon.poll() is None, (folder / "daemon.log").read_text()
                reply = client.get("/api/v1/alerts", params={"state": "firing"})
                return len({a["scope"] for a in reply.json()["alerts"]}) == len(users)

            until_blocking(
                every_creator_alerted,
                60,
                "an alert per creator",
                every=0.2,
                ignore=(httpx.HTTPError,),
            )
        yield live
    finally:
        for proc in reversed(procs):
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
        log.close()


def no_secret_in(text: str, live: LiveConsole) -> None:
    for secret in (CHANNEL_SECRET, live.api_token, live.admin, live.readonly):
        assert secret not in text


def alerts_json(live: LiveConsole, state: str = "all") -> list[dict[str, object]]:
    with live.api(live.readonly) as client:
        reply = client.get("/api/v1/alerts", params={"state": state})
    assert reply.status_code == 200
    return list(json.loads(reply.text)["alerts"])


def environ_has_no_display() -> bool:
    return not os.environ.get("DISPLAY")
