"""Logging to stderr in a form journald reads well, with secrets scrubbed from every record.

Owns the root handler and its formatter. Must not decide what is worth logging: callers do.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable
from typing import ClassVar, TextIO

from monitor.ops.redaction import SecretFilter

_SYSLOG_PRIORITY = {
    logging.CRITICAL: 2,
    logging.ERROR: 3,
    logging.WARNING: 4,
    logging.INFO: 6,
    logging.DEBUG: 7,
}


class JournalFormatter(logging.Formatter):
    """``<6>monitor.service.fetching.dispatch: message``: journald maps the prefix to a priority and
    adds the time."""

    def format(self, record: logging.LogRecord) -> str:
        prefix = _SYSLOG_PRIORITY.get(record.levelno, 6)
        return f"<{prefix}>{super().format(record)}"


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is when a record comes (tests and embedders swap it;
    a handler bound to a closed stream would fail in other threads' late log lines)."""

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _value: TextIO) -> None:
        pass


class _LibraryChatter(logging.Filter):
    """Keeps apprise's and alembic's own lines off the operator's stderr (their failures reach
    the user through our own one-line messages); ``--debug`` shows them."""

    QUIET: ClassVar[dict[str, int]] = {"apprise": logging.CRITICAL, "alembic": logging.WARNING}

    def filter(self, record: logging.LogRecord) -> bool:
        top = record.name.partition(".")[0]
        return record.levelno >= self.QUIET.get(top, logging.NOTSET)


class _ClientMistakes(logging.Filter):
    """On the ``aiohttp.server`` logger: a request the HTTP parser refused (a header or request
    line too large, bytes that are no HTTP) is the client's mistake, answered with its 400;
    aiohttp logs each at ERROR with a traceback and the offending bytes (an ``Authorization``
    header among them), so a hostile client could flood the journal. Those are dropped; any
    other failure of a request (a handler that raised, a 500) stays one ERROR line naming the
    exception. ``--debug`` keeps both as aiohttp wrote them."""

    def __init__(self) -> None:
        super().__init__()
        self.debug = False

    def filter(self, record: logging.LogRecord) -> bool:
        if self.debug or not record.exc_info or record.exc_info[1] is None:
            return True
        exc = record.exc_info[1]
        if _client_mistake(exc):
            return False
        record.msg = f"{record.getMessage()}: {type(exc).__name__}: {exc} (--debug: traceback)"
        record.args = None
        record.exc_info = None
        return True


def _client_mistake(exc: BaseException) -> bool:
    from aiohttp.http_exceptions import HttpProcessingError  # aiohttp: only with a listener

    return isinstance(exc, HttpProcessingError)


_CLIENT_MISTAKES = _ClientMistakes()


def configure_logging(*, debug: bool, secrets: Iterable[str] = ()) -> SecretFilter:
    """Install one stderr handler on the root logger; returns the filter so secrets can be added."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = _StderrHandler()
    if os.environ.get("JOURNAL_STREAM"):
        handler.setFormatter(JournalFormatter("%(name)s: %(message)s"))
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")
        )
    secret_filter = SecretFilter(secrets)
    handler.addFilter(secret_filter)
    if not debug:
        handler.addFilter(_LibraryChatter())
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    _CLIENT_MISTAKES.debug = debug
    server = logging.getLogger("aiohttp.server")
    if _CLIENT_MISTAKES not in server.filters:
        server.addFilter(_CLIENT_MISTAKES)
    # httpx logs every request URL at INFO; the client keeps the token off it, but one line per
    # call is noise for an operator.
    for noisy in (
        "httpx",
        "httpcore",
        "apscheduler",
        "aiohttp.access",
        "alembic.runtime.migration",
    ):
        logging.getLogger(noisy).setLevel(logging.DEBUG if debug else logging.WARNING)
    # a job still running at its next interval (a drain waiting on a slow channel) is skipped
    # by design (max_instances=1, coalesce); APScheduler says so at WARNING on every interval
    logging.getLogger("apscheduler.scheduler").setLevel(logging.DEBUG if debug else logging.ERROR)
    return secret_filter


def mask_secrets(*secrets: str) -> None:
    """Also mask ``secrets`` in every log line from now on, on every handler that scrubs (a
    reloaded config's renewed token file, new channel URLs and console tokens)."""
    for handler in logging.getLogger().handlers:
        for found in handler.filters:
            if isinstance(found, SecretFilter):
                found.add(*(s for s in secrets if s))
