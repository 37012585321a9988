"""docs/install.md, run: every command of its fenced ``sh`` blocks, in order, against a wheel built
from this tree and the built-in simulator, with the guide's paths moved under a temporary root.

This machine has no systemd as PID 1, so the few commands that need it are done as systemd would
do them: ``systemctl daemon-reload`` verifies the installed unit with ``systemd-analyze verify``;
``systemctl start`` runs the unit's ExecStart by hand with what systemd would give it (the
credentials of its LoadCredential= lines in a fresh $CREDENTIALS_DIRECTORY, its Environment=,
its state and working directory, a notify socket, the watchdog); ``systemctl stop`` sends
SIGTERM. Creating the virtualenv and pip-installing the wheel are stood in for by the session's
wheel install (``support.wheel``). Everything else runs as written, through bash.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.daemon import NotifySocket
from support.ports import free_port
from support.wheel import ROOT, wheel_script

from monitor.upstream.simulator import SimKnobs, Simulator

GUIDE = ROOT / "docs" / "install.md"
UNIT_NAME = "creator-monitor.service"
TOKEN = "install-guide-token-0123456789abcdef"


def guide_commands(text: str) -> Iterator[str]:
    """Each command of the guide's ``sh`` blocks, in order; a heredoc is one command."""
    for block in re.findall(r"^```sh\n(.*?)^```", text, re.S | re.M):
        lines = block.splitlines()
        i = 0
        while i < len(lines):
            command = lines[i]
            i += 1
            if not command.strip() or command.lstrip().startswith("#"):
                continue
            heredoc = re.search(r"<<-?'?(\w+)'?", command)
            if heredoc is not None:
                end = lines.index(heredoc.group(1), i)
                command = "\n".join([command, *lines[i : end + 1]])
                i = end + 1
            yield command


def _fetches(history: Path) -> int:
    with sqlite3.connect(f"file:{history}?mode=ro", uri=True) as db:
        found: int = db.execute("SELECT count(*) FROM fetches").fetchone()[0]
    return found


class Host:
    """The guide's machine under ``root``: its paths, its shell, and a stand-in for systemd."""

    def __init__(self, root: Path, venv: Path, base_url: str) -> None:
        self.root = root
        self.port = free_port()
        self.subs = {
            "/opt/creator-monitor/venv": str(venv),
            "/etc/systemd/system": str(root / "systemd"),
            "/etc/creator-monitor": str(root / "etc"),
            "/var/lib/creator-monitor": str(root / "state"),
            "https://api.justoneapi.com": base_url,
            "127.0.0.1:9464": f"127.0.0.1:{self.port}",
            "YOUR-JUST-ONE-API-TOKEN": TOKEN,
        }
        (root / "systemd").mkdir()
        self.env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("JUSTONEAPI", "CREATOR_MON", "NOTIFY_SOCKET", "WATCHDOG"))
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.notify: NotifySocket | None = None
        self.journal = root / "journal.log"
        self.ran: list[str] = []

    def sub(self, text: str) -> str:
        for old, new in self.subs.items():
            text = text.replace(old, new)
        return text

    # --- commands ------------------------------------------------------------------------

    def run(self, command: str) -> str:
        """One command of the guide; returns its output. Fails the test when it fails."""
        self.ran.append(command)
        words = command.split()
        if words[:3] == ["python3", "-m", "venv"] or (
            len(words) > 1 and words[0].endswith("/bin/pip") and words[1] == "install"
        ):
            assert "creator_monitor-*.whl" in command or "creator-monitor" in command, command
            return ""  # the session's wheel install stands in
        if words[0] == "systemctl":
            return self.systemctl(words[1:])
        if words[0] == "journalctl":
            return self.journal.read_text(encoding="utf-8", errors="replace")
        return self.shell(command)

    def shell(self, command: str) -> str:
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", self.sub(command)],
            cwd=ROOT,  # the source tree: deploy/creator-monitor.service is found where it says
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, (
            f"{command}\nexit {done.returncode}\n{done.stdout}{done.stderr}"
        )
        assert TOKEN not in done.stdout + done.stderr
        return done.stdout

    def systemctl(self, args: list[str]) -> str:
        verb = args[0]
        if verb == "daemon-reload":
            return self.verify_unit()
        if verb in ("start", "enable"):
            assert verb == "start" or "--now" in args, args
            self.start()
            return ""
        if verb == "stop":
            self.stop()
            return ""
        if verb == "restart":
            self.stop()
            self.start()
            return ""
        if verb == "status":
            return self.status()
        raise AssertionError(f"the guide runs `systemctl {' '.join(args)}`: no stand-in for it")

    # --- systemd, by hand ----------------------------------------------------------------

    def unit(self) -> dict[str, list[str]]:
        path = self.root / "systemd" / UNIT_NAME
        settings: dict[str, list[str]] = {}
        for raw in self.sub(path.read_text(encoding="utf-8")).splitlines():
            line = raw.strip()
            if not line or line.startswith(("#", ";", "[")):
                continue
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
        return settings

    def verify_unit(self) -> str:
        tool = shutil.which("systemd-analyze")
        if tool is None:
            if os.environ.get("CI"):
                pytest.fail("systemd-analyze is required under CI (apt-get install systemd)")
            return ""
        installed = self.root / "systemd" / UNIT_NAME
        checked = self.root / "verify" / UNIT_NAME
        checked.parent.mkdir(exist_ok=True)
        checked.write_text(self.sub(installed.read_text(encoding="utf-8")), encoding="utf-8")
        done = subprocess.run(
            [tool, "verify", str(checked)],
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, "SYSTEMD_LOG_LEVEL": "notice"},
        )
        ours = [line for line in done.stderr.splitlines() if UNIT_NAME in line]
        assert done.returncode == 0, done.stderr
        assert ours == [], ours
        return ""

    def start(self) -> None:
        """ExecStart as systemd runs it: credentials, environment, state, notify, watchdog."""
        unit = self.unit()
        state = self.root / "state"
        state.mkdir(mode=0o700, exist_ok=True)  # StateDirectory=
        creds = self.root / "run" / "credentials"
        shutil.rmtree(creds, ignore_errors=True)
        creds.mkdir(parents=True, mode=0o700)
        for entry in unit.get("LoadCredential", []):
            name, _, source = entry.partition(":")
            # systemd refuses to start the unit when a credential's file is missing
            assert Path(source).is_file(), f"LoadCredential={entry}: no such file"
            shutil.copyfile(source, creds / name)
            (creds / name).chmod(0o400)
        env = {"PATH": self.env["PATH"], "LANG": "C.UTF-8", "CREDENTIALS_DIRECTORY": str(creds)}
        for entry in unit.get("Environment", []):
            key, _, value = entry.partition("=")
            env[key] = value
        for entry in unit.get("EnvironmentFile", []):
            path = Path(entry.removeprefix("-"))
            if path.exists():
                for line in path.read_text().splitlines():
                    if "=" in line and not line.lstrip().startswith("#"):
                        key, _, value = line.partition("=")
                        env[key.strip()] = value.strip()
        (self.root / "run" / "notify.sock").unlink(missing_ok=True)  # the last start's
        self.notify = NotifySocket(self.root / "run")
        env["NOTIFY_SOCKET"] = self.notify.path
        env["WATCHDOG_USEC"] = str(int(unit["WatchdogSec"][0]) * 1_000_000)
        [exec_start] = unit["ExecStart"]
        [workdir] = unit.get("WorkingDirectory", [str(state)])
        with self.journal.open("ab") as sink:
            self.proc = subprocess.Popen(
                exec_start.split(),
                cwd=workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=sink,
            )
        deadline = time.monotonic() + float(unit["TimeoutStartSec"][0])
        while self.notify.count("READY=1") == 0:
            code = self.proc.poll()
            assert code is None, f"the service exited {code} before READY=1:\n{self.log()}"
            assert time.monotonic() < deadline, f"no READY=1 in TimeoutStartSec:\n{self.log()}"
            time.sleep(0.05)

    def status(self) -> str:
        """``active (running)``: alive, READY sent, a first fetch stored; its STATUS line."""
        assert self.proc is not None
        assert self.notify is not None
        history = self.root / "state" / "history.db"
        deadline = time.monotonic() + 30
        while _fetches(history) == 0:
            assert self.proc.poll() is None, self.log()
            assert time.monotonic() < deadline, f"no fetch stored:\n{self.log()}"
            time.sleep(0.1)
        lines = [
            field
            for message in self.notify.drain()
            for field in message.split("\n")
            if field.startswith("STATUS=")
        ]
        assert re.fullmatch(r"STATUS=1 series, \d+ calls in flight, \d+ fetches done", lines[-1])
        return lines[-1]

    def stop(self) -> None:
        assert self.proc is not None
        assert self.notify is not None
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=60)
        assert code == 0, self.log()
        assert self.notify.count("STOPPING=1") >= 1
        self.notify.close()
        self.proc = None

    def log(self) -> str:
        return self.journal.read_text(encoding="utf-8", errors="replace")[-3000:]

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        if self.notify is not None:
            self.notify.close()


def test_the_guide_splits_into_the_commands_it_shows() -> None:
    commands = list(guide_commands(GUIDE.read_text(encoding="utf-8")))
    assert commands[0] == "python3 -m venv /opt/creator-monitor/venv"
    heredoc = next(c for c in commands if c.startswith("cat > /etc/creator-monitor/config.toml"))
    assert heredoc.endswith("\nEOF")
    assert "[[creators]]" in heredoc
    assert any(c.startswith("systemctl enable --now") for c in commands)


@pytest.mark.slow
async def test_the_install_guide_runs_as_written(tmp_path: Path) -> None:
    venv = wheel_script().parent.parent
    commands = list(guide_commands(GUIDE.read_text(encoding="utf-8")))
    async with Simulator(SimKnobs(latency_ms=10)) as sim:
        host = Host(tmp_path, venv, sim.base_url)
        outputs: dict[str, str] = {}
        try:
            for command in commands:
                # the simulator answers on this loop: the commands run in a thread
                outputs[command] = await asyncio.to_thread(host.run, command)
        finally:
            await asyncio.to_thread(host.close)
        assert sim.counters().calls >= 1
    check = next(out for cmd, out in outputs.items() if cmd.endswith(" check"))
    assert "config ok: 1 creators" in check
    assert "API token found" in check
    health = next(out for cmd, out in outputs.items() if "/healthz" in cmd)
    assert health.strip() == "ok"
    journal = next(out for cmd, out in outputs.items() if cmd.startswith("journalctl"))
    assert "database migrated to" in journal
    assert "running: 1 series" in journal
    shown = next(out for cmd, out in outputs.items() if cmd.endswith(" status"))
    assert "5c3bf7f70000000000000001" in shown
    # the secrets stayed where the guide put them: never in the log or the database
    assert TOKEN not in host.journal.read_text()
    history = (tmp_path / "state" / "history.db").read_bytes()
    assert TOKEN.encode() not in history
    # the credentials are root-only files; the config holds no secret and may be read by all
    credentials = tmp_path / "etc" / "credentials"
    assert credentials.stat().st_mode & 0o777 == 0o700
    for secret in credentials.iterdir():
        assert secret.stat().st_mode & 0o777 == 0o600, secret.name
    assert (tmp_path / "etc" / "config.toml").stat().st_mode & 0o777 == 0o644
