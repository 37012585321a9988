"""Who may use the console: tokens (admin and read-only), browser sessions, CSRF tokens and
the failed-login limit, enforced by one aiohttp middleware.

Only ``/healthz``, the login form and the static chart code are served without a token; and
``/metrics`` to a client on this host (``listen`` on loopback, no proxy in front). Every failed
authentication, bearer or form, counts towards one limit per real client address. Tokens are
compared in constant time and never logged.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import math
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Middleware
from pydantic import SecretStr
from yarl import URL

from monitor import config as settings
from monitor.config import Config
from monitor.config import console_tokens as read_console_tokens

log = logging.getLogger(__name__)

HTTP_CREDENTIAL = settings.HTTP_CREDENTIAL  # the console names it when it is locked
HTTP_READONLY_CREDENTIAL = settings.HTTP_READONLY_CREDENTIAL
SESSION_COOKIE = "cm_session"
LOGIN_COOKIE = "cm_login"
CSRF_HEADER = "X-CSRF-Token"
ADMIN, READONLY = "admin", "readonly"
#: a browser session lasts this long, then the login form again
SESSION_SECONDS = 12 * 3600
#: sessions kept at most; the oldest goes first
MAX_SESSIONS = 1000
_WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_OPEN_PATHS = frozenset({"/healthz", "/login", "/favicon.ico"})
#: headers a reverse proxy adds: a request with one came from elsewhere
_PROXY_HEADERS = ("X-Forwarded-For", "Forwarded", "X-Real-IP", "X-Forwarded-Host")
#: a write that the read-only role may make too (it only ends its own session)
_ANY_ROLE_WRITES = frozenset({"/logout"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class Tokens:
    admin: SecretStr | None
    readonly: SecretStr | None

    def role_of(self, presented: str) -> str | None:
        """ADMIN, READONLY or None; both comparisons always run, in constant time."""
        given = _utf8(presented)
        if given is None:
            return None  # bytes that are not UTF-8 (0xff 0xfe …) are no token of ours
        admin = self.admin is not None and hmac.compare_digest(
            given, self.admin.get_secret_value().encode()
        )
        readonly = self.readonly is not None and hmac.compare_digest(
            given, self.readonly.get_secret_value().encode()
        )
        if admin:
            return ADMIN
        return READONLY if readonly else None


def console_tokens(config: Config, environ: Mapping[str, str] | None = None) -> Tokens:
    """The console's tokens, read and checked as ``check`` checks them (monitor.config)."""
    found = read_console_tokens(config, environ)
    return Tokens(found.admin, found.readonly)


def _utf8(text: str) -> bytes | None:
    """``text`` as UTF-8; None when it cannot be (a header's undecodable bytes arrive as
    lone surrogates)."""
    try:
        return text.encode()
    except UnicodeEncodeError:
        return None


@dataclass(slots=True)
class Session:
    role: str
    csrf: str
    expires: float


@dataclass(frozen=True, slots=True)
class Identity:
    """Who made a request: the role, and the browser session (None for a bearer token)."""

    role: str
    session: Session | None


#: where the middleware leaves the Identity on the request (aiohttp 3.13+ wants typed keys)
IDENTITY: Any = web.RequestKey("cm_identity", Identity) if hasattr(web, "RequestKey") else "cm_id"


def identity_of(request: web.Request) -> Identity | None:
    found = request.get(IDENTITY)
    return found if isinstance(found, Identity) else None


@dataclass
class LoginLimit:
    """Failed authentications (a wrong bearer token or a wrong token in the login form):
    ``per_client`` per client address and ``overall`` in total, per ``window`` s."""

    per_client: int = 5
    overall: int = 50
    window: float = 900.0
    clock: Callable[[], float] = time.monotonic
    _failures: dict[str, deque[float]] = field(default_factory=dict)
    _all: deque[float] = field(default_factory=deque)

    def _trim(self, times: deque[float], now: float) -> None:
        while times and times[0] <= now - self.window:
            times.popleft()

    def retry_after(self, client: str) -> float:
        """Seconds until ``client`` may try again; 0 when it may now."""
        now = self.clock()
        mine = self._failures.get(client, deque())
        self._trim(mine, now)
        self._trim(self._all, now)
        waits = [0.0]
        if len(mine) >= self.per_client:
            waits.append(mine[0] + self.window - now)
        if len(self._all) >= self.overall:
            waits.append(self._all[0] + self.window - now)
        return max(waits)

    def failed(self, client: str) -> None:
        now = self.clock()
        self._failures.setdefault(client, deque()).append(now)
        self._all.append(now)
        if len(self._failures) > 10_000:  # forget the stalest clients
            for key in list(self._failures)[:5000]:
                del self._failures[key]


class Guard:
    """Tokens, sessions and the login limit of one console."""

    def __init__(
        self,
        tokens: Tokens,
        *,
        loopback: bool,
        trust_proxy: bool = False,
        secure_cookies: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.tokens = tokens
        self.loopback = loopback
        self.trust_proxy = trust_proxy
        self.secure_cookies = secure_cookies
        self.clock = clock
        self.limit = LoginLimit(clock=clock)
        self._sessions: dict[str, Session] = {}

    def client(self, request: web.Request) -> str:
        """The real client's address: the peer's, or behind a trusted proxy the last
        ``X-Forwarded-For`` hop that is not the proxy's own (the client writes the first
        entries as it likes; the proxy appends the address it saw)."""
        peer = request.remote or "?"
        if not self.trust_proxy:
            return peer
        hops = [
            hop.strip()
            for header in request.headers.getall("X-Forwarded-For", ())
            for hop in header.split(",")
        ]
        for hop in reversed(hops):
            try:
                address = ipaddress.ip_address(hop)
            except ValueError:
                return peer  # the proxy writes addresses: this entry came from the client
            if not address.is_loopback:  # a second proxy on this host: look further back
                return str(address)
        return peer

    def metrics_open(self, request: web.Request) -> bool:
        """``/metrics`` without a token: only to a client on this host, i.e. listening on
        loopback with no reverse proxy in front (declared, or seen in the headers)."""
        if not self.loopback or self.trust_proxy:
            return False
        return not any(h in request.headers for h in _PROXY_HEADERS)

    def secure(self, request: web.Request) -> bool:
        """Cookies get ``Secure``: behind TLS, said by the request or a trusted proxy."""
        if self.secure_cookies or request.secure:
            return True
        return self.trust_proxy and request.headers.get("X-Forwarded-Proto", "") == "https"

    def open_session(self, role: str) -> tuple[str, Session]:
        while len(self._sessions) >= MAX_SESSIONS:
            del self._sessions[next(iter(self._sessions))]
        sid = secrets.token_urlsafe(32)
        session = Session(role, secrets.token_urlsafe(32), self.clock() + SESSION_SECONDS)
        self._sessions[sid] = session
        return sid, session

    def close_session(self, sid: str) -> None:
        self._sessions.pop(sid, None)

    def session(self, request: web.Request) -> tuple[str, Session] | None:
        sid = request.cookies.get(SESSION_COOKIE, "")
        session = self._sessions.get(sid)
        if session is None:
            return None
        if session.expires <= self.clock():
            del self._sessions[sid]
            return None
        return sid, session

    def set_cookie(
        self,
        response: web.StreamResponse,
        request: web.Request,
        name: str,
        value: str,
        *,
        max_age: int,
    ) -> None:
        response.set_cookie(
            name,
            value,
            max_age=max_age,
            path="/",
            httponly=True,
            samesite="Strict",
            secure=self.secure(request),
        )


def _is_api(request: web.Request) -> bool:
    return request.path.startswith("/api/")


def _deny(request: web.Request, status: int, reason: str) -> web.Response:
    headers = {"WWW-Authenticate": 'Bearer realm="creator-monitor"'} if status == 401 else {}
    if _is_api(request) or request.headers.get("Authorization") or request.path == "/metrics":
        return web.json_response({"error": reason}, status=status, headers=headers)
    return web.Response(status=status, text=f"{reason}\n", headers=headers)


def csrf_ok(request: web.Request, session: Session, form_value: str | None) -> bool:
    presented = _utf8(request.headers.get(CSRF_HEADER) or form_value or "")
    return presented is not None and hmac.compare_digest(presented, session.csrf.encode())


async def _write_refusal(request: web.Request) -> web.Response | None:
    """Why a write may not go on: the read-only role, or a browser without the CSRF token."""
    identity = request[IDENTITY]
    if identity.role != ADMIN and request.path not in _ANY_ROLE_WRITES:
        return _deny(request, 403, "the read-only token cannot change anything")
    session = identity.session
    if session is None:
        return None  # a bearer token is no ambient credential: no CSRF to fear
    form_value = None
    if request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        value = (await request.post()).get("csrf")
        form_value = value if isinstance(value, str) else None
    if not csrf_ok(request, session, form_value):
        return _deny(request, 403, "missing or wrong CSRF token")
    return None


def _bearer(guard: Guard, request: web.Request, header: str) -> web.Response | None:
    """Check an ``Authorization`` header: None (the identity set on the request), a 401 that
    counts towards the client's failed authentications, or a 429 while they are too many."""
    client = guard.client(request)
    wait = guard.limit.retry_after(client)
    if wait > 0:
        refused = _deny(request, 429, "too many failed authentications; try again later")
        refused.headers["Retry-After"] = str(math.ceil(wait))
        return refused
    scheme, _, presented = header.partition(" ")
    role = guard.tokens.role_of(presented.strip()) if scheme.lower() == "bearer" else None
    if role is None:
        guard.limit.failed(client)
        return _deny(request, 401, "invalid token")
    request[IDENTITY] = Identity(role, None)
    return None


def middleware(guard: Guard) -> Middleware:
    """Authenticate every request but the open paths; refuse writes to the read-only role and
    browser writes without the session's CSRF token."""

    @web.middleware
    async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.path
        if path in _OPEN_PATHS or path.startswith("/static/"):
            return await handler(request)
        if path == "/metrics" and guard.metrics_open(request):
            return await handler(request)
        header = request.headers.get("Authorization", "")
        if header:
            if (refused := _bearer(guard, request, header)) is not None:
                return refused
        else:
            found = guard.session(request)
            if found is None:
                if _is_api(request) or request.method in _WRITES or path == "/metrics":
                    return _deny(request, 401, "authentication required")
                target = URL("/login").with_query(next=str(request.rel_url))
                raise web.HTTPSeeOther(str(target))
            request[IDENTITY] = Identity(found[1].role, found[1])
        if request.method in _WRITES and (refused := await _write_refusal(request)) is not None:
            return refused
        return await handler(request)

    return authenticate
