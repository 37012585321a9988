"""sd_notify over real unix datagram sockets, and the unit file through systemd-analyze."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from monitor.ops.systemd import SystemdNotifier, watchdog_interval, watchdog_loop

UNIT = Path(__file__).parent.parent.parent / "deploy" / "creator-monitor.service"
INSTALLED_EXEC = "/opt/creator-monitor/venv/bin/creator-monitor"


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A bound unix datagram socket in tmp_path, as systemd would listen on it."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(tmp_path / "notify")
    sock.bind(path)
    sock.setblocking(False)
    try:
        yield sock, path
    finally:
        sock.close()


def drain(sock: socket.socket) -> list[str]:
    out: list[str] = []
    while True:
        try:
            out.append(sock.recv(4096).decode())
        except BlockingIOError:
            return out


def test_path_socket_gets_exact_datagrams(receiver: tuple[socket.socket, str]) -> None:
    sock, path = receiver
    with SystemdNotifier({"NOTIFY_SOCKET": path}) as notifier:
        assert notifier.enabled
        notifier.ready("watching 3 creators")
        notifier.status("fetching Lilyy")
        notifier.watchdog()
        notifier.stopping()
        notifier.stopping("draining outbox")
    assert drain(sock) == [
        "READY=1\nSTATUS=watching 3 creators",
        "STATUS=fetching Lilyy",
        "WATCHDOG=1",
        "STOPPING=1",
        "STOPPING=1\nSTATUS=draining outbox",
    ]


def test_abstract_socket_name() -> None:
    name = f"cm-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.setblocking(False)
    try:
        with SystemdNotifier({"NOTIFY_SOCKET": "@" + name}) as notifier:
            notifier.ready()
            notifier.watchdog()
        assert drain(sock) == ["READY=1", "WATCHDOG=1"]
    finally:
        sock.close()


def test_reload_extend_and_status_injection(receiver: tuple[socket.socket, str]) -> None:
    sock, path = receiver
    with SystemdNotifier({"NOTIFY_SOCKET": path}, monotonic_usec=lambda: 123456789) as notifier:
        notifier.reloading("reloading config")
        notifier.ready("config reloaded")
        notifier.extend_timeout(90, "migrating 2 of 5")
        notifier.extend_timeout(0.25)
        notifier.status("bad\nREADY=1\n  text")
    assert drain(sock) == [
        "RELOADING=1\nMONOTONIC_USEC=123456789\nSTATUS=reloading config",
        "READY=1\nSTATUS=config reloaded",
        "EXTEND_TIMEOUT_USEC=90000000\nSTATUS=migrating 2 of 5",
        "EXTEND_TIMEOUT_USEC=250000",
        "STATUS=bad READY=1 text",
    ]


def test_real_monotonic_clock_is_close_to_time_monotonic(
    receiver: tuple[socket.socket, str],
) -> None:
    sock, path = receiver
    before = int(time.monotonic() * 1_000_000)
    with SystemdNotifier({"NOTIFY_SOCKET": path}) as notifier:
        notifier.reloading()
    (datagram,) = drain(sock)
    usec = int(datagram.removeprefix("RELOADING=1\nMONOTONIC_USEC="))
    assert before <= usec <= before + 5_000_000


@pytest.mark.parametrize("env", [{}, {"NOTIFY_SOCKET": ""}, {"NOTIFY_SOCKET": "vsock:2:1234"}])
def test_without_socket_everything_is_a_noop(env: dict[str, str]) -> None:
    with SystemdNotifier(env) as notifier:
        assert not notifier.enabled
        notifier.ready("x")
        notifier.status("x")
        notifier.watchdog()
        notifier.reloading()
        notifier.extend_timeout(5)
        notifier.stopping()


def test_send_errors_never_raise_and_log_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="monitor.ops.systemd")
    with SystemdNotifier({"NOTIFY_SOCKET": str(tmp_path / "missing")}) as notifier:
        assert notifier.enabled
        for _ in range(3):
            notifier.ready()
            notifier.watchdog()
    failures = [r for r in caplog.records if r.name == "monitor.ops.systemd"]
    assert len(failures) == 1
    assert failures[0].levelno == logging.DEBUG


def test_closed_notifier_is_silent(receiver: tuple[socket.socket, str]) -> None:
    sock, path = receiver
    notifier = SystemdNotifier({"NOTIFY_SOCKET": path})
    notifier.close()
    notifier.close()
    notifier.ready()
    assert drain(sock) == []


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, None),
        ({"WATCHDOG_USEC": "60000000"}, 30.0),
        ({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": "4242"}, 30.0),
        ({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": "1"}, None),
        ({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": "x"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "-5"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({"WATCHDOG_USEC": "500000"}, 0.25),
    ],
)
def test_watchdog_interval(env: dict[str, str], expected: float | None) -> None:
    assert watchdog_interval(env, pid=4242) == expected


def test_watchdog_interval_defaults_to_own_pid() -> None:
    env = {"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())}
    assert watchdog_interval(env) == 1.0


async def wait_for_datagrams(sock: socket.socket, count: int, timeout: float = 2.0) -> list[str]:
    got: list[str] = []
    deadline = time.monotonic() + timeout
    while len(got) < count:
        assert time.monotonic() < deadline, f"only {got} within {timeout}s"
        await asyncio.sleep(0.005)
        got += drain(sock)
    return got


async def test_watchdog_loop_pings_only_while_healthy(
    receiver: tuple[socket.socket, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="monitor.ops.systemd")
    sock, path = receiver
    state = {"healthy": True}
    with SystemdNotifier({"NOTIFY_SOCKET": path}) as notifier:
        task = asyncio.create_task(watchdog_loop(notifier, 0.01, lambda: state["healthy"]))
        try:
            pings = await wait_for_datagrams(sock, 3)
            assert set(pings) == {"WATCHDOG=1"}

            state["healthy"] = False
            drain(sock)  # pings sent before the flip
            await asyncio.sleep(0.1)  # ten intervals
            assert drain(sock) == []

            state["healthy"] = True
            assert set(await wait_for_datagrams(sock, 2)) == {"WATCHDOG=1"}
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    assert task.cancelled()
    messages = [r.getMessage() for r in caplog.records if r.name == "monitor.ops.systemd"]
    assert messages == [
        "unhealthy; withholding watchdog pings so systemd restarts the service",
        "health restored; watchdog pings resumed",
    ]


async def test_blocked_event_loop_sends_no_pings(receiver: tuple[socket.socket, str]) -> None:
    sock, path = receiver
    with SystemdNotifier({"NOTIFY_SOCKET": path}) as notifier:
        task = asyncio.create_task(watchdog_loop(notifier, 0.01, lambda: True))
        try:
            await wait_for_datagrams(sock, 1)
            drain(sock)
            time.sleep(0.1)  # a coroutine that blocks the loop: the pinger cannot run
            assert drain(sock) == []
            assert await wait_for_datagrams(sock, 1)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


# --- the unit file ------------------------------------------------------------------------


def unit_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def test_unit_file_declares_the_contract() -> None:
    s = unit_settings()
    expected_single = {
        "Type": "notify",
        "NotifyAccess": "main",
        "ExecStart": f"{INSTALLED_EXEC} -c /etc/creator-monitor/config.toml run",
        "ExecReload": "/bin/kill -HUP $MAINPID",
        "WatchdogSec": "60",
        "Restart": "on-failure",
        "RestartSec": "5",
        "StateDirectory": "creator-monitor",
        "RestartPreventExitStatus": "2",  # a config or schema refusal: no restart loop
        "DynamicUser": "yes",
        "UMask": "0077",
        "ProtectSystem": "strict",
        "MemoryDenyWriteExecute": "yes",
        "CapabilityBoundingSet": "",
        "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
    }
    for key, value in expected_single.items():
        assert s.get(key) == [value], key
    # every secret through a credential: a DynamicUser cannot read a root-owned 0600 file
    folder = "/etc/creator-monitor/credentials"
    assert s["LoadCredential"] == [
        f"{name}:{folder}/{name}"
        for name in (
            "justoneapi-token",
            "creator-monitor-http-token",
            "creator-monitor-http-readonly-token",
        )
    ]
    # the graceful stop bound is 30 s grace plus the outbox flush
    assert int(s["TimeoutStopSec"][0]) > 30
    assert "@system-service" in s["SystemCallFilter"]


def systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("systemd-analyze is required under CI (apt-get install systemd)")
        pytest.skip("systemd-analyze not installed")
    return found


def unit_copy(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at an executable that exists here, so verify means it."""
    here = Path(sys.executable).parent / "creator-monitor"
    executable = str(here if here.exists() else Path(sys.executable))
    copy = tmp_path / UNIT.name
    copy.write_text(UNIT.read_text().replace(INSTALLED_EXEC, executable))
    return copy


@pytest.mark.slow
def test_systemd_analyze_verify(tmp_path: Path) -> None:
    tool = systemd_analyze()
    result = subprocess.run(
        [tool, "verify", str(unit_copy(tmp_path))],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "SYSTEMD_LOG_LEVEL": "notice"},
    )
    # verify also lints the host's own units when they are pulled in; only ours matters
    ours = [line for line in result.stderr.splitlines() if UNIT.name in line]
    assert result.returncode == 0, result.stderr
    assert ours == [], ours


@pytest.mark.slow
def test_systemd_analyze_security_score(tmp_path: Path) -> None:
    tool = systemd_analyze()
    result = subprocess.run(
        [tool, "security", "--offline=yes", "--no-pager", str(unit_copy(tmp_path))],
        capture_output=True,
        text=True,
        check=False,
    )
    if "--offline" in result.stderr and "unrecognized" in result.stderr:
        pytest.skip("this systemd-analyze has no --offline")
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    score = float(match.group(1))
    print(f"systemd-analyze security exposure: {score}")
    assert score < 3.0
