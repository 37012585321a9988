"""The sd_notify protocol spoken directly (READY, STATUS, WATCHDOG, STOPPING, RELOADING …).

Owns one datagram socket to ``$NOTIFY_SOCKET`` and the event-loop watchdog pinger. Must never
raise into the daemon: a lost notification is logged once at DEBUG and otherwise ignored.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping
from types import TracebackType

log = logging.getLogger(__name__)


def _monotonic_usec() -> int:
    # CLOCK_MONOTONIC is the clock systemd compares MONOTONIC_USEC against (time.monotonic()
    # is the same clock on Linux, but say so explicitly).
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def _socket_address(raw: str | None) -> str | None:
    """``/run/systemd/notify`` stays a path; ``@name`` becomes the abstract ``\\0name``."""
    if not raw:
        return None
    if raw.startswith("/"):
        return raw
    if raw.startswith("@") and len(raw) > 1:
        return "\0" + raw[1:]
    # vsock: and other transports of newer systemd are not spoken here.
    log.debug("NOTIFY_SOCKET %r is not a unix socket address; notifications are off", raw)
    return None


def _one_line(text: str) -> str:
    # A newline would start a new assignment, letting a status text forge READY=1 or worse.
    return " ".join(text.split())


class SystemdNotifier:
    """Sends state changes to systemd; every method is a no-op when ``NOTIFY_SOCKET`` is unset.

    ``environ`` defaults to ``os.environ``; ``monotonic_usec`` is injectable for tests.
    Use as a context manager, or call :meth:`close` when done.
    """

    def __init__(
        self,
        environ: Mapping[str, str] | None = None,
        *,
        monotonic_usec: Callable[[], int] = _monotonic_usec,
    ) -> None:
        env = os.environ if environ is None else environ
        self._address = _socket_address(env.get("NOTIFY_SOCKET"))
        self._monotonic_usec = monotonic_usec
        self._sock: socket.socket | None = None
        self._failed = False
        if self._address is not None:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.setblocking(False)

    @property
    def enabled(self) -> bool:
        """True when running under a service manager that listens for notifications."""
        return self._sock is not None

    def ready(self, status: str | None = None) -> None:
        """Startup (or a reload) is complete: READY=1, with an optional STATUS line."""
        self.send("READY=1", *self._status_field(status))

    def status(self, text: str) -> None:
        """Free-form one-line status shown by ``systemctl status``."""
        self.send(*self._status_field(text))

    def watchdog(self) -> None:
        """Keep-alive ping; systemd restarts the service when they stop for ``WatchdogSec``."""
        self.send("WATCHDOG=1")

    def stopping(self, status: str | None = None) -> None:
        """Orderly shutdown has begun (sent on SIGTERM)."""
        self.send("STOPPING=1", *self._status_field(status))

    def reloading(self, status: str | None = None) -> None:
        """A config reload has begun; follow with :meth:`ready` when it is done.

        MONOTONIC_USEC is what systemd >= 253 requires to accept RELOADING=1; older versions
        ignore the extra field.
        """
        self.send(
            "RELOADING=1", f"MONOTONIC_USEC={self._monotonic_usec()}", *self._status_field(status)
        )

    def extend_timeout(self, seconds: float, status: str | None = None) -> None:
        """Ask for ``seconds`` more before the start/stop timeout fires (long migrations)."""
        usec = max(0, round(seconds * 1_000_000))
        self.send(f"EXTEND_TIMEOUT_USEC={usec}", *self._status_field(status))

    def send(self, *fields: str) -> None:
        """Send ``KEY=value`` fields as one datagram; never raises."""
        if self._sock is None or self._address is None or not fields:
            return
        try:
            self._sock.sendto("\n".join(fields).encode(), self._address)
        except OSError as exc:
            # Lost notifications are not worth a log line each; systemd acts on the absence.
            if not self._failed:
                self._failed = True
                log.debug("sd_notify to NOTIFY_SOCKET failed (%s); further failures silent", exc)

    def close(self) -> None:
        """Close the socket; later calls become no-ops."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> SystemdNotifier:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @staticmethod
    def _status_field(text: str | None) -> tuple[str, ...]:
        return () if text is None else (f"STATUS={_one_line(text)}",)


def watchdog_interval(
    environ: Mapping[str, str] | None = None, pid: int | None = None
) -> float | None:
    """Seconds between watchdog pings (half of ``WATCHDOG_USEC``), or None when not asked for.

    When ``WATCHDOG_PID`` is set it must be our pid (``pid`` defaults to ``os.getpid()``):
    otherwise the variables were inherited from a parent and are not meant for us.
    """
    env = os.environ if environ is None else environ
    raw_usec = env.get("WATCHDOG_USEC", "")
    raw_pid = env.get("WATCHDOG_PID", "")
    own_pid = os.getpid() if pid is None else pid
    if raw_pid and (not raw_pid.isdigit() or int(raw_pid) != own_pid):
        return None
    if not raw_usec.isdigit() or int(raw_usec) == 0:
        return None
    return int(raw_usec) / 1_000_000 / 2


async def watchdog_loop(
    notifier: SystemdNotifier, interval: float, healthy: Callable[[], bool]
) -> None:
    """Ping the watchdog every ``interval`` seconds from the event loop, until cancelled.

    Running on the loop is the point: a blocked loop stops the pings and systemd restarts us.
    While ``healthy()`` is False the ping is skipped, so a wedged-but-running daemon is restarted
    too. ``healthy`` must be cheap and must not raise (an exception ends the loop, which also
    stops the pings).
    """
    sick = False
    while True:
        if healthy():
            if sick:
                log.info("health restored; watchdog pings resumed")
                sick = False
            notifier.watchdog()
        elif not sick:
            sick = True
            log.warning("unhealthy; withholding watchdog pings so systemd restarts the service")
        await asyncio.sleep(interval)
