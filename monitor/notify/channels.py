"""Apprise channels: loading a channel URL, checking it, and keeping its secret parts out of
apprise's and urllib3's logs and out of every error line.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from monitor.config import MIN_SECRET
from monitor.ops.redaction import SecretFilter, redact

if TYPE_CHECKING:
    import apprise

#: loggers that write channel URLs (or parts of them) at DEBUG/TRACE and in errors
_THIRD_PARTY_LOGGERS = ("apprise", "urllib3.connectionpool")
#: shorter URL parts are words like "hook", not secrets; masking them would garble every line
_MIN_FRAGMENT = MIN_SECRET
_MAX_ERROR = 300


def secret_fragments(url: str) -> list[str]:
    """The URL and every part of it that may be a secret: apprise URLs hide tokens in the
    host, the user info, path segments and query values alike.
    """
    parts = urlsplit(url)
    fragments = {url, url.split("?", 1)[0], parts.netloc + parts.path}
    pieces = [parts.netloc, *re.split(r"[@:]", parts.netloc), *parts.path.split("/")]
    pieces += [value for pair in parts.query.split("&") for value in pair.split("=")[1:]]
    pieces.append(parts.fragment)
    for piece in pieces:
        for form in (piece, unquote(piece)):
            if len(form) >= _MIN_FRAGMENT:
                fragments.add(form)
    return sorted(fragments, key=len, reverse=True)


@contextmanager
def scrubbed_logs(secrets: Sequence[str]) -> Iterator[SecretFilter]:
    """Mask ``secrets`` in every record apprise and urllib3 write while the block runs."""
    secret_filter = SecretFilter(secrets)
    loggers = [logging.getLogger(name) for name in _THIRD_PARTY_LOGGERS]
    for logger in loggers:
        logger.addFilter(secret_filter)
    try:
        yield secret_filter
    finally:
        for logger in loggers:
            logger.removeFilter(secret_filter)


def load_target(url: str) -> apprise.Apprise | None:
    """The apprise object for ``url``; None when apprise cannot use it.

    Its services run in the thread that calls ``notify`` (no ``async_mode``, no
    ``service_timeout``): apprise would otherwise hand them to its own pool, whose threads it
    cannot stop and the interpreter joins at exit, so a server that trickles its answer held
    the process after the stop. ``send_bounded`` bounds the call instead.
    """
    import apprise  # a leaf library: loaded by the first channel, not at import

    instance = apprise.Apprise(asset=apprise.AppriseAsset(async_mode=False, service_timeout=0))
    if not instance.add(url) or len(instance) == 0:
        return None
    return instance


def send_in_thread(
    target: apprise.Apprise, name: str, **message: Any
) -> tuple[asyncio.Future[Any], threading.Thread]:
    """``target.notify(**message)`` in a daemon thread of its own: the future of its result,
    and the thread.

    The caller bounds the wait (``asyncio.timeout``). A send past it cannot be interrupted (a
    blocking socket read that gets one byte every few seconds never reaches its read timeout),
    so the thread is abandoned; being a daemon thread, it never holds the process at exit.
    """
    loop = asyncio.get_running_loop()
    done: asyncio.Future[Any] = loop.create_future()

    def settle(outcome: Any, failed: bool) -> None:
        if done.done():  # the caller stopped waiting
            return
        if failed:
            done.set_exception(outcome)
        else:
            done.set_result(outcome)

    def work() -> None:
        outcome: Any
        try:
            outcome, failed = target.notify(**message), False
        except Exception as exc:  # noqa: BLE001 - handed to the waiting coroutine
            outcome, failed = exc, True
        with contextlib.suppress(RuntimeError):  # the loop closed while the send ran
            loop.call_soon_threadsafe(settle, outcome, failed)

    thread = threading.Thread(target=work, name=f"send {name}", daemon=True)
    thread.start()
    return done, thread


def takes_files(target: apprise.Apprise) -> bool:
    """Whether every service behind ``target`` accepts attachments."""
    return all(getattr(service, "attachment_support", False) for service in target)


def reads_text(target: apprise.Apprise) -> bool:
    """Whether every service behind ``target`` is e-mail, which gets our own plain-text
    rendering (``plaintext.plain_text``): apprise takes one body per send and would derive the
    text part from HTML itself, splitting inline code and dropping link URLs. A mailto URL
    with ``format=html`` still gets an HTML mail (apprise's own text part beside it)."""
    from apprise.plugins.email import NotifyEmail

    return len(target) > 0 and all(isinstance(service, NotifyEmail) for service in target)


def validate_channel_url(url: str) -> str | None:
    """None when apprise can use ``url``; else a one-line reason that never echoes the URL."""
    scheme = url.split("://", 1)[0] if "://" in url else ""
    with scrubbed_logs(secret_fragments(url)):
        loaded = load_target(url)
    if loaded is not None:
        return None
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*", scheme):
        return "not an apprise URL (expected SCHEME://…, e.g. slack://… or json://…)"
    return (
        f"apprise cannot use this {scheme}:// URL (unknown scheme or missing parts; "
        "see the apprise wiki for the scheme's format)"
    )


def one_line(text: str, secrets: Sequence[str]) -> str:
    """``text`` redacted, on one line, at most ``_MAX_ERROR`` characters."""
    flat = " ".join(redact(text, secrets).split())
    return flat if len(flat) <= _MAX_ERROR else flat[: _MAX_ERROR - 1] + "…"


@dataclass(frozen=True, slots=True)
class Channel:
    name: str
    target: apprise.Apprise | None  # None: the URL did not parse (a permanent error)
    secrets: tuple[str, ...]
    problem: str | None = None


@dataclass(frozen=True, slots=True)
class Delivery:
    """The outcome of one send: ``error`` is None on success; never contains the URL."""

    error: str | None = None
    permanent: bool = False
