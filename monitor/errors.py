"""The one exception tree of creator-monitor; it imports nothing from monitor.

    MonitorError
    ├── ConfigError                  a bad config: ``path: what is wrong``
    ├── UpstreamError                one call to Just One API went wrong (code, message,
    │   │                            http_status, latency_ms, billed)
    │   ├── AccountBlocked           100 / 600 / 601 / 602: pause every call, probe slowly
    │   ├── QuotaExceeded            303: pause every call until the quota day turns
    │   ├── RateLimited              302: slow the whole client (retry_after)
    │   ├── Retryable                301 / 500 / gateway body / non-JSON / transport
    │   │   └── TransportError       timeout, connection refused, reset, oversized body
    │   │       └── Unreached        never reached a server (refused, DNS): not counted
    │   ├── InvalidRequest           400: the creator's parameters are wrong; do not retry
    │   ├── NoContent                201: billed, nothing to store this fetch
    │   ├── UnknownCode              any other code: an error, message kept
    │   └── ParseError               code 0 but a body we cannot read (raw body kept)
    │       └── UnreadableAnswer     … from a source beyond core_data: source, params, whole body
    ├── StoreError                   the database refused (locked, full, read-only …)
    │   ├── SchemaOutOfDate          the schema is behind the code: run ``db upgrade``
    │   └── WritesRefused            no call is sent: paid answers wait for the database
    ├── BudgetError                  a call may not be sent now (paused, daily cap reached)
    ├── NothingStored                a creator has nothing stored from the source asked for
    └── NotifyError                  a channel did not take a message (permanent or not)

Every message is one line meant for an operator; none may carry the API token or a
channel URL (the client and notifier redact before they raise).
"""

from __future__ import annotations

from datetime import datetime


class MonitorError(Exception):
    """Root of everything creator-monitor raises on purpose."""


class ConfigError(MonitorError):
    """A config problem, located by its key path (``rules[2].metric``)."""

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        self.message = message
        super().__init__(f"{path}: {message}" if path else message)


class UpstreamError(MonitorError):
    """One upstream call failed; carries what a handler or the ``fetches`` table needs."""

    #: whether the vendor charges for a call that ends this way (overridden per family)
    default_billed = False

    def __init__(
        self,
        message: str,
        *,
        code: int | None = None,
        http_status: int | None = None,
        latency_ms: int | None = None,
        billed: bool | None = None,
        raw_body: str | None = None,
    ) -> None:
        self.message = message
        self.code = code
        self.http_status = http_status
        self.latency_ms = latency_ms
        self.billed = self.default_billed if billed is None else billed
        self.raw_body = raw_body
        super().__init__(message)

    def __str__(self) -> str:
        parts = [self.message]
        if self.code is not None:
            parts.append(f"code {self.code}")
        if self.http_status is not None:
            parts.append(f"HTTP {self.http_status}")
        # what an operator reads (a log line, ``fetches.error``, the CLI): no class name
        return ", ".join(parts)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(message={self.message!r}, code={self.code!r}, "
            f"http_status={self.http_status!r}, latency_ms={self.latency_ms!r}, "
            f"billed={self.billed!r})"
        )


class AccountBlocked(UpstreamError):
    """100 bad token, 600 permission denied, 601 no balance, 602 token spending cap."""


class QuotaExceeded(UpstreamError):
    """303: the account's daily quota is used up."""


class RateLimited(UpstreamError):
    """302: too many calls; ``retry_after`` seconds is a hint when the upstream gives one."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: object) -> None:
        super().__init__(message, **kw)  # type: ignore[arg-type]
        self.retry_after = retry_after


class Retryable(UpstreamError):
    """301 collection failed, 500 upstream error, a gateway body without ``code``, non-JSON."""


class TransportError(Retryable):
    """The call did not complete: timeout, refused, reset, or a body over the size limit."""


class Unreached(TransportError):
    """The call never reached a server (connection refused, host not found, no connection
    within the timeout): nothing was sent, so it is not counted against ``daily_calls``."""


class InvalidRequest(UpstreamError):
    """400: the parameters are invalid for this creator; retrying will not help."""


class NoContent(UpstreamError):
    """201: the upstream had nothing for this creator; billed."""

    default_billed = True


class UnknownCode(UpstreamError):
    """A code the vendor does not document (101, 202, 300, 404, 503 …)."""


class ParseError(UpstreamError):
    """Code 0 but the data cannot be read; billed, and the raw body is kept for audit."""

    default_billed = True


class UnreadableAnswer(ParseError):
    """Code 0 (billed) from any endpoint, but ``data`` is in a shape this version cannot read.
    ``raw_body`` is the whole (redacted) body; ``source`` (``core``, ``fans``, ``notes``,
    ``balance``) and ``params`` (the query without the token) say what was
    asked, so the answer can be kept and read again by a newer version (``reparse``)."""

    def __init__(
        self,
        message: str,
        *,
        source: str,
        params: dict[str, str] | None = None,
        **kw: object,
    ) -> None:
        super().__init__(message, **kw)  # type: ignore[arg-type]
        self.source = source
        self.params = dict(params or {})


class StoreError(MonitorError):
    """The database could not do what was asked (locked, full, read-only, unreachable)."""


class SchemaOutOfDate(StoreError):
    """The database schema is not at the revision this code needs; ``current`` is the revision
    it is at (None: an empty database)."""

    def __init__(self, message: str, *, current: str | None = None) -> None:
        self.current = current
        super().__init__(message)


class WritesRefused(StoreError):
    """No call is sent: paid answers wait for the database, or its last write failed."""


class BudgetError(MonitorError):
    """A call may not be sent now: the account is paused or the daily cap is reached.

    ``cap`` names what refused it (``daily_calls``, ``quota``, ``account``); ``until`` is when it
    frees up, if known (an account pause frees up only when a probe succeeds).
    """

    def __init__(self, message: str, *, cap: str = "budget", until: datetime | None = None):
        self.cap = cap
        self.until = until
        super().__init__(message)


class NothingStored(MonitorError):
    """A creator (known or not to the database) has nothing stored from the source asked for:
    ``history``/``notes`` exit 1 with it, the console API answers 404 with the same words."""


class NotifyError(MonitorError):
    """A channel did not take a message; ``permanent`` means retrying cannot help."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        self.permanent = permanent
        super().__init__(message)
