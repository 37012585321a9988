"""The console's HTML pages and browser forms: log in and out, overview, creator, alerts (with
silence and acknowledge), account, instances. Every form write ends in a 303 to a page.
"""

from __future__ import annotations

import hmac
import math
import secrets
from datetime import timedelta
from typing import Any
from urllib.parse import quote

from aiohttp import web
from yarl import URL

from monitor.app import NoteLine, OverviewQuery, Sort
from monitor.config.references import check_name
from monitor.errors import ConfigError
from monitor.model import METRICS
from monitor.validation import raise_all, unknown
from monitor.web import auth
from monitor.web.context import console_of, problem_text, row_id
from monitor.web.i18n import translator

PER_PAGE = 50
MAX_PER_PAGE = 200
_SORTS: tuple[Sort, ...] = ("name", "change", "change_asc", "fans_change", "fans_change_asc")
#: the newest notes the creator page lists
PAGE_NOTES = 20


#: the alert states the page and the API list, as ``?state=`` names them
ALERT_STATES = ("open", "firing", "pending", "resolved", "all")


def alert_state(query: Any) -> str:
    """``?state=`` of the alerts page and API (``open`` when absent); a ConfigError with a
    "did you mean" for anything else, never a silent fallback."""
    state = query.get("state") or "open"
    return check_name("state", state, ALERT_STATES, arg="state")


def _whole(query: Any, key: str, default: int, high: int) -> int:
    """A whole number from 1 to ``high`` (larger is taken as ``high``); else a ConfigError."""
    text = query.get(key)
    if text is None or text == "":
        return default
    if not (text.isascii() and text.isdigit()) or int(text[:12]) < 1:
        raise ConfigError(key, f"expected a whole number from 1, got {text[:40]!r}")
    return min(high, int(text[:12]))


def overview_query(query: Any) -> OverviewQuery:
    """The overview's filters from query parameters, checked as the command line checks its
    options: an unknown metric or order is a ConfigError with a "did you mean", not a
    silent fallback."""
    metric = query.get("metric") or "imp"
    sort = query.get("sort") or "name"
    problems: list[ConfigError] = []
    if metric not in METRICS:
        problems.append(ConfigError("metric", unknown("metric", metric, METRICS)))
    if sort not in _SORTS:
        problems.append(ConfigError("sort", unknown("order", sort, _SORTS)))
    page, per_page = 1, PER_PAGE
    try:
        page = _whole(query, "page", 1, 1_000_000)
    except ConfigError as exc:
        problems.append(exc)
    try:
        per_page = _whole(query, "per_page", PER_PAGE, MAX_PER_PAGE)
    except ConfigError as exc:
        problems.append(exc)
    raise_all(problems)
    order = next(s for s in _SORTS if s == sort)
    return OverviewQuery(
        metric=metric,
        tag=query.get("tag", "").strip()[:100],
        text=query.get("q", "").strip()[:100],
        sort=order,
        page=page,
        per_page=per_page,
    )


async def _page(
    request: web.Request, template: str, status: int = 200, **context: Any
) -> web.Response:
    """A page of the signed-in console: with the pause banner while calls are paused."""
    console = console_of(request)
    return console.render(request, template, status, pause=await console.pause(), **context)


def _next_target(value: str) -> str:
    """``value`` when it is a path on this site, else ``/``. Browsers drop tabs and newlines
    from a URL and read a backslash as a slash, so a path starting with a slash, a tab and a
    second slash would leave the site: no control character, no backslash, no second leading
    slash, no scheme or host."""
    if (
        not value.startswith("/")
        or value.startswith("//")
        or "\\" in value
        or any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in value)
        or len(value) > 2000
    ):
        return "/"
    try:
        url = URL(value)
    except ValueError:
        return "/"
    return "/" if url.is_absolute() or url.scheme else value


async def login_form(request: web.Request, *, error: str = "", status: int = 200) -> web.Response:
    console = console_of(request)
    # one nonce per browser, not per form: a second tab (or a favicon request redirected
    # here) must not invalidate the form already shown
    nonce = request.cookies.get(auth.LOGIN_COOKIE, "")
    if len(nonce) < 32:
        nonce = secrets.token_urlsafe(24)
    response = console.render(
        request,
        "login.html.j2",
        status=status,
        nonce=nonce,
        error=error,
        next=_next_target(request.query.get("next", "/")),
    )
    console.guard.set_cookie(response, request, auth.LOGIN_COOKIE, nonce, max_age=3600)
    return response


async def login(request: web.Request) -> web.StreamResponse:
    console = console_of(request)
    guard = console.guard
    form = await request.post()
    nonce = str(form.get("nonce", ""))
    cookie = request.cookies.get(auth.LOGIN_COOKIE, "")
    if not cookie or not hmac.compare_digest(nonce.encode(), cookie.encode()):
        return web.Response(status=403, text="missing or wrong CSRF token\n")
    client = guard.client(request)
    wait = guard.limit.retry_after(client)
    if wait > 0:
        response = await login_form(
            request, error="Too many failed logins; try again later.", status=429
        )
        response.headers["Retry-After"] = str(math.ceil(wait))
        return response
    role = guard.tokens.role_of(str(form.get("token", "")).strip())
    if role is None:
        guard.limit.failed(client)
        return await login_form(request, error="Wrong token.", status=401)
    sid, _ = guard.open_session(role)
    response = _see_other(_next_target(str(form.get("next", "/"))))
    guard.set_cookie(response, request, auth.SESSION_COOKIE, sid, max_age=auth.SESSION_SECONDS)
    response.del_cookie(auth.LOGIN_COOKIE, path="/")
    return response


async def favicon(request: web.Request) -> web.Response:
    return web.Response(status=204)


async def logout(request: web.Request) -> web.StreamResponse:
    guard = console_of(request).guard
    if (sid := request.cookies.get(auth.SESSION_COOKIE)) is not None:
        guard.close_session(sid)
    response = _see_other("/login")
    response.del_cookie(auth.SESSION_COOKIE, path="/")
    return response


async def overview(request: web.Request) -> web.Response:
    console = console_of(request)
    try:
        q = overview_query(request.query)
    except ConfigError as exc:
        return web.Response(status=400, text=f"{problem_text(exc)}\n")
    page = await console.store.overview(q)
    pages = max(1, math.ceil(page.total / q.per_page))
    # the followers' column only where there are followers to show (not on core-only installs)
    followers = q.sort.startswith("fans") or any(r.followers for r in page.rows)
    return await _page(
        request,
        "overview.html.j2",
        q=q,
        page=page,
        pages=pages,
        metrics=METRICS,
        sorts=_SORTS,
        followers=followers,
    )


async def creator(request: web.Request) -> web.Response:
    console = console_of(request)
    store = console.store
    found = await store.find_creator_ref(request.match_info["ref"])
    if found is None:
        return await _page(request, "missing.html.j2", status=404)
    points = await store.creator_points(found.id)
    variants = list(dict.fromkeys(p.variant for p in points))
    chosen = request.query.get("variant", variants[0] if variants else "")
    chosen = chosen if chosen in variants else (variants[0] if variants else "")
    shown = [p for p in points if p.variant == chosen]
    alerts = await store.console_alerts(scope=found.user_id, limit=200)
    words = translator(console.language(request))
    markers = [
        {"date": a.data_date, "metric": a.metric, "label": f"{a.rule} ({words(a.state)})"}
        for a in alerts
        if a.data_date is not None
    ]
    chart = {
        "dates": [p.date_key for p in shown],
        "metrics": {m: [p.values.get(m) for p in shown] for m in METRICS},
        "markers": markers,
    }
    now = console.clock()
    silences = [
        s
        for s in await store.list_silences(now)
        if s.user_id == found.user_id or (s.tag is not None and s.tag in found.tags)
    ]
    followers = await store.follower_series(found.id)
    fans_chart = {
        "dates": [p.date_key.isoformat() for p in followers],
        "metrics": {"fans": [p.fans for p in followers]},
        "markers": [],
    }
    notes = [NoteLine.of(r) for r in await store.latest_notes(found.id, PAGE_NOTES)]
    return await _page(
        request,
        "creator.html.j2",
        creator=found,
        variants=variants,
        variant=chosen,
        chart=chart,
        metrics=METRICS,
        alerts=alerts,
        fetches=await store.fetch_log(found.id),
        silences=silences,
        fans_chart=fans_chart if followers else None,
        notes=notes,
    )


async def alerts(request: web.Request) -> web.Response:
    console = console_of(request)
    try:
        state = alert_state(request.query)
        page = _whole(request.query, "page", 1, 100_000)
    except ConfigError as exc:
        return web.Response(status=400, text=f"{problem_text(exc)}\n")
    rows = await console.store.console_alerts(
        state=state,  # type: ignore[arg-type]
        limit=PER_PAGE + 1,
        offset=(page - 1) * PER_PAGE,
    )
    silences = await console.store.list_silences(console.clock())
    return await _page(
        request,
        "alerts.html.j2",
        rows=rows[:PER_PAGE],
        more=len(rows) > PER_PAGE,
        state=state,
        page=page,
        silences=silences,
        error=request.query.get("error", ""),
    )


async def ack(request: web.Request) -> web.StreamResponse:
    console = console_of(request)
    alert_id = row_id(request.match_info["id"])
    if alert_id is not None:
        await console.store.ack_alert(alert_id, now=console.clock(), by=_actor(request))
    raise web.HTTPSeeOther(_back(request, "/alerts"))


async def silence(request: web.Request) -> web.StreamResponse:
    console = console_of(request)
    form = await request.post()

    def field(name: str) -> str:
        value = form.get(name, "")
        return value if isinstance(value, str) else ""

    try:
        await console.add_silence(
            creator=field("creator"),
            rule=field("rule"),
            tag=field("tag"),
            for_=field("for") or "2h",
            reason=field("reason"),
        )
    except ConfigError as exc:
        raise web.HTTPSeeOther(f"/alerts?error={quote(problem_text(exc))}") from None
    raise web.HTTPSeeOther(_back(request, "/alerts"))


async def unsilence(request: web.Request) -> web.StreamResponse:
    console = console_of(request)
    if (silence_id := row_id(request.match_info["id"])) is not None:
        await console.store.remove_silence(silence_id)
    raise web.HTTPSeeOther(_back(request, "/alerts"))


async def account(request: web.Request) -> web.Response:
    console = console_of(request)
    budget = await console.budget()
    return await _page(request, "account.html.j2", budget=budget)


async def instances(request: web.Request) -> web.Response:
    console = console_of(request)
    store = console.store
    now = console.clock()
    rows = await store.list_instances(now) if store.dialect == "postgresql" else []
    alive_after = now - max(timedelta(minutes=2), console.config.schedule.lease)
    return await _page(
        request,
        "instances.html.j2",
        rows=rows,
        postgres=store.dialect == "postgresql",
        alive_after=alive_after,
    )


def _see_other(location: str) -> web.Response:
    """A 303 that can carry cookies (aiohttp wants HTTPExceptions raised, not returned)."""
    return web.Response(status=303, headers={"Location": location})


def _actor(request: web.Request) -> str:
    identity = auth.identity_of(request)
    return "console" if identity is not None and identity.session is not None else "api"


def _back(request: web.Request, default: str) -> str:
    referer = request.headers.get("Referer", "")
    if referer:
        try:
            url = URL(referer)
        except ValueError:
            return default
        if url.host == request.url.host and url.port == request.url.port:
            return _next_target(url.path_qs)
    return default


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/login", login_form)
    router.add_get("/favicon.ico", favicon)
    router.add_post("/login", login)
    router.add_post("/logout", logout)
    router.add_get("/", overview)
    router.add_get("/creators/{ref}", creator)
    router.add_get("/alerts", alerts)
    router.add_post("/alerts/{id}/ack", ack)
    router.add_post("/silences", silence)
    router.add_post("/silences/{id}/delete", unsilence)
    router.add_get("/account", account)
    router.add_get("/instances", instances)
