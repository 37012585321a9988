"""Apprise channels: loading a channel URL, checking it, and keeping its secret parts out of
apprise's and urllib3's logs and out of every error line.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import apprise

from monitor.ops.redaction import SecretFilter, redact

#: loggers that write channel URLs (or parts of them) at DEBUG/TRACE and in errors
_THIRD_PARTY_LOGGERS = ("apprise", "urllib3.connectionpool")
#: shorter URL parts are words like "hook", not secrets; masking them would garble every line
_MIN_FRAGMENT = 6
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
    """The apprise object for ``url``; None when apprise cannot use it."""
    instance = apprise.Apprise()
    if not instance.add(url) or len(instance) == 0:
        return None
    return instance


def takes_files(target: apprise.Apprise) -> bool:
    """Whether every service behind ``target`` accepts attachments."""
    return all(getattr(service, "attachment_support", False) for service in target)


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
