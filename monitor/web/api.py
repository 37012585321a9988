"""The JSON API under ``/api/v1/`` and its OpenAPI document: creators, a creator's series,
followers and notes, alerts and acknowledgements, silences, budget. Same store paths as the
pages and the CLI; the followers and notes take their input through the same checks as
``history --source fans`` and ``notes``, so the same input gets the same answer or error.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import date, datetime
from typing import Any

from aiohttp import web

from monitor.app import creator_followers, creator_notes
from monitor.config.references import (
    DEFAULT_NOTES,
    MAX_NOTES,
    count_of,
    daily_source,
    parse_since,
    parse_variant,
    resolve_creator,
    silence_body,
)
from monitor.errors import ConfigError, NothingStored
from monitor.model import METRICS
from monitor.validation import unknown
from monitor.web.context import console_of, problem_text, row_id
from monitor.web.pages import alert_state, overview_query

PREFIX = "/api/v1"


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=_dumps)


def _dumps(data: Any) -> str:
    return json.dumps(data, default=_default, ensure_ascii=False)


def _default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


def _error(status: int, message: str) -> web.Response:
    return _json({"error": message}, status)


async def creators(request: web.Request) -> web.Response:
    console = console_of(request)
    try:
        q = overview_query(request.query)
    except ConfigError as exc:
        return _error(400, problem_text(exc))
    page = await console.store.overview(q)
    return _json(
        {
            "total": page.total,
            "page": q.page,
            "per_page": q.per_page,
            "metric": q.metric,
            "anchor": page.anchor,
            "creators": [asdict(r) for r in page.rows],
        }
    )


async def series(request: web.Request) -> web.Response:
    """A creator's daily points, its input checked as ``history`` checks it: the creator, a
    ``since`` date or duration, a ``variant`` in any case, with the command line's words."""
    console = console_of(request)
    if (other := await _other_source(request)) is not None:
        return other
    metric = request.query.get("metric") or None
    if metric is not None and metric not in METRICS:
        return _error(400, f"metric: {unknown('metric', metric, METRICS)}")
    given = request.match_info["ref"]
    try:
        since = parse_since(_text(request, "since"), console.clock().date(), arg="since")
        variant = parse_variant(_text(request, "variant"), arg="variant")
        user_id = resolve_creator(console.config, given, arg="creator").user_id
    except ConfigError as exc:
        # a name only the database knows (``serve`` with a config that lists nobody)
        found = await console.store.find_creator_ref(given)
        if found is None or exc.path != "creator":
            return _error(400, problem_text(exc))
    else:
        found = await console.store.find_creator_ref(user_id)
        if found is None:
            named = f"{given.strip()} ({user_id})" if given.strip() != user_id else user_id
            return _error(404, f"no stored history for {named}")
    points = await console.store.creator_points(
        found.id,
        variant=None if variant is None else variant.label,
        since=None if since is None else since.isoformat(),
    )
    return _json(
        {
            "user_id": found.user_id,
            "name": found.name,
            "metric": metric,
            "points": [
                {"variant": p.variant, "date": p.date_key}
                | ({"value": p.values.get(metric)} if metric else {"values": p.values})
                for p in points
            ],
        }
    )


async def _other_source(request: web.Request) -> web.Response | None:
    """``series?source=``, checked as ``history --source``: None for ``core`` (the series
    itself), else the follower counts or the refusal."""
    try:
        source = daily_source(
            request.query.get("source") or "core",
            arg="source",
            notes_instead="GET /api/v1/creators/{ref}/notes lists them",
        )
    except ConfigError as exc:
        return _error(400, problem_text(exc))
    if source == "core":
        return None
    for key in ("metric", "variant"):
        if request.query.get(key):
            return _error(400, f"{key}: is for source core; followers are one count a day")
    return await fans(request)


async def fans(request: web.Request) -> web.Response:
    """A creator's daily follower counts with their day-over-day change (``history --source
    fans``): ``since`` a date or a duration back from today, as ``--since`` takes it."""
    console = console_of(request)
    try:
        since = parse_since(_text(request, "since"), console.clock().date(), arg="since")
        named, days = await creator_followers(
            console.config, console.store, request.match_info["ref"], since=since
        )
    except ConfigError as exc:
        return _error(400, problem_text(exc))
    except NothingStored as exc:
        return _error(404, str(exc))
    points = [d.as_json() for d in days]
    return _json({"user_id": named.user_id, "name": named.name, "points": points})


async def notes(request: web.Request) -> web.Response:
    """A creator's newest notes with their totals and growth (``notes``): ``limit`` as
    ``--limit``, ``since`` (published on or after) as ``--since``."""
    console = console_of(request)
    try:
        text = _text(request, "limit")
        limit = DEFAULT_NOTES if text is None else count_of(text, 1, MAX_NOTES, arg="limit")
        since = parse_since(_text(request, "since"), console.clock().date(), arg="since")
        named, lines = await creator_notes(
            console.config, console.store, request.match_info["ref"], limit=limit, since=since
        )
    except ConfigError as exc:
        return _error(400, problem_text(exc))
    except NothingStored as exc:
        return _error(404, str(exc))
    listed = [line.as_json() for line in lines]
    return _json({"user_id": named.user_id, "name": named.name, "notes": listed})


def _text(request: web.Request, key: str) -> str | None:
    """A query parameter, None when absent or empty."""
    return request.query.get(key) or None


async def alerts(request: web.Request) -> web.Response:
    console = console_of(request)
    try:
        state = alert_state(request.query)
    except ConfigError as exc:
        return _error(400, problem_text(exc))
    rows = await console.store.console_alerts(state=state, limit=500)  # type: ignore[arg-type]
    return _json({"alerts": [asdict(a) for a in rows]})


async def ack(request: web.Request) -> web.Response:
    console = console_of(request)
    alert_id = row_id(request.match_info["id"])
    if alert_id is None:
        return _error(404, "no such alert")
    result = await console.store.ack_alert(alert_id, now=console.clock(), by="api")
    if result == "missing":
        return _error(404, "no such alert")
    if result == "resolved":
        return _error(409, "the alert has resolved")
    alert = await console.store.console_alert(alert_id)
    return _json({"result": result, "alert": None if alert is None else asdict(alert)})


async def silences(request: web.Request) -> web.Response:
    console = console_of(request)
    rows = await console.store.list_silences(console.clock())
    return _json({"silences": [asdict(s) for s in rows]})


async def add_silence(request: web.Request) -> web.Response:
    console = console_of(request)
    try:
        body = await request.json()
    except ValueError:
        return _error(400, "the body is not JSON")
    except RecursionError:  # json's decoder recurses per level: [[[[…]]]] a few thousand deep
        return _error(400, "the body is JSON nested too deeply; send one flat object")
    try:
        text = silence_body(body)
        silence_id, ends = await console.add_silence(
            creator=text["creator"],
            rule=text["rule"],
            tag=text["tag"],
            for_=text["for"] or "2h",
            reason=text["reason"] or "",
        )
    except ConfigError as exc:
        return _error(400, problem_text(exc))
    found = next(
        (s for s in await console.store.list_silences(console.clock()) if s.id == silence_id),
        None,
    )
    body_out = asdict(found) if found is not None else {"id": silence_id, "ends_at": ends}
    return _json({"silence": body_out}, 201)


async def remove_silence(request: web.Request) -> web.Response:
    console = console_of(request)
    silence_id = row_id(request.match_info["id"])
    if silence_id is None:
        return _error(404, "no such silence")
    if not await console.store.remove_silence(silence_id):
        return _error(404, "no such silence")
    return web.Response(status=204)


async def budget(request: web.Request) -> web.Response:
    return _json(await console_of(request).budget())


async def openapi(request: web.Request) -> web.Response:
    return _json(OPENAPI)


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get(f"{PREFIX}/creators", creators)
    router.add_get(f"{PREFIX}/creators/{{ref}}/series", series)
    router.add_get(f"{PREFIX}/creators/{{ref}}/fans", fans)
    router.add_get(f"{PREFIX}/creators/{{ref}}/notes", notes)
    router.add_get(f"{PREFIX}/alerts", alerts)
    router.add_post(f"{PREFIX}/alerts/{{id}}/ack", ack)
    router.add_get(f"{PREFIX}/silences", silences)
    router.add_post(f"{PREFIX}/silences", add_silence)
    router.add_delete(f"{PREFIX}/silences/{{id}}", remove_silence)
    router.add_get(f"{PREFIX}/budget", budget)
    router.add_get(f"{PREFIX}/openapi.json", openapi)


def _op(summary: str, *, params: list[dict[str, Any]] | None = None, **extra: Any) -> Any:
    responses = extra.pop("responses", {"200": {"description": "OK"}})
    responses |= {
        "401": {"description": "no token, or a wrong one"},
        "403": {"description": "a write with the read-only token, or without a CSRF token"},
        "429": {"description": "too many failed authentications from this client (Retry-After)"},
        "503": {"description": "the database is busy; try again after Retry-After seconds"},
    }
    return {"summary": summary, "parameters": params or [], "responses": responses, **extra}


def _q(name: str, description: str, **schema: Any) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": {"type": "string", **schema},
    }


def _p(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": {"type": "string"},
    }


_SOURCE_RESPONSES = {
    "200": {"description": "OK"},
    "400": {"description": "an unknown creator or a bad query (the command line's words)"},
    "404": {"description": "nothing stored for the creator from this source"},
}

OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "creator-monitor console API", "version": "1"},
    "servers": [{"url": PREFIX}],
    "security": [{"bearer": []}],
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "schemas": {
            "NewSilence": {
                "type": "object",
                "description": "checked as `creator-monitor silence add` checks its options",
                "additionalProperties": False,
                "properties": {
                    "creator": {
                        "type": "string",
                        "description": "user id, configured name or 'account'",
                    },
                    "rule": {"type": "string", "description": "a configured rule"},
                    "tag": {"type": "string", "description": "a tag of configured creators"},
                    "for": {"type": "string", "example": "2h", "description": "at most 365d"},
                    "reason": {"type": "string", "maxLength": 500},
                },
            }
        },
    },
    "paths": {
        "/creators": {
            "get": _op(
                "Every active creator × variant: last point, 7-day change, sparkline, fetch "
                "status, open alerts; paged",
                responses={"200": {"description": "OK"}, "400": {"description": "bad query"}},
                params=[
                    _q("q", "part of the name, or the start of the user id"),
                    _q("tag", "only creators with this tag"),
                    _q("metric", "the metric shown", enum=list(METRICS)),
                    _q(
                        "sort",
                        "order: by name, by the metric's 7-day change, or by the followers' "
                        "(fans_change: most gained first)",
                        enum=["name", "change", "change_asc", "fans_change", "fans_change_asc"],
                    ),
                    _q("page", "1-based page", pattern="^[0-9]+$"),
                    _q("per_page", "rows per page (at most 200)", pattern="^[0-9]+$"),
                ],
            )
        },
        "/creators/{ref}/series": {
            "get": _op(
                "A creator's daily points (source=fans: the followers, as /creators/{ref}/fans)",
                params=[
                    _p("ref", "user id or configured name (checked as the command line does)"),
                    _q("source", "core (default) or fans", enum=["core", "fans"]),
                    _q("metric", "one metric (else all)", enum=list(METRICS)),
                    _q("variant", "BUSINESS/NOTE_TYPE/DATE_TYPE/ADVERTISE, any case"),
                    _q("since", "first day: YYYY-MM-DD, or a duration back from today (30d)"),
                ],
                responses={
                    "200": {"description": "OK"},
                    "400": {"description": "an unknown creator or a bad query, as history says"},
                    "404": {"description": "a creator with nothing stored"},
                },
            )
        },
        "/creators/{ref}/fans": {
            "get": _op(
                "A creator's daily follower counts, oldest first, each with its change from "
                "the day before (null when that day is not stored)",
                params=[
                    _p("ref", "user id or configured name (checked as the command line does)"),
                    _q("since", "first day: YYYY-MM-DD, or a duration back from today (30d)"),
                ],
                responses=_SOURCE_RESPONSES,
            )
        },
        "/creators/{ref}/notes": {
            "get": _op(
                "A creator's notes, newest published first: totals when last seen, what they "
                "gained since first seen, link",
                params=[
                    _p("ref", "user id or configured name (checked as the command line does)"),
                    _q(
                        "limit",
                        f"how many (default {DEFAULT_NOTES}, at most {MAX_NOTES})",
                        pattern="^[0-9]+$",
                    ),
                    _q("since", "published on or after: YYYY-MM-DD, or a duration (30d)"),
                ],
                responses=_SOURCE_RESPONSES,
            )
        },
        "/alerts": {
            "get": _op(
                "Alerts, newest first",
                params=[
                    _q("state", "which", enum=["open", "firing", "pending", "resolved", "all"])
                ],
            )
        },
        "/alerts/{id}/ack": {
            "post": _op(
                "Acknowledge an open alert: its repeats stop until it resolves",
                params=[_p("id", "alert id")],
                responses={
                    "200": {"description": "acknowledged (or already)"},
                    "404": {"description": "no such alert"},
                    "409": {"description": "resolved"},
                },
            )
        },
        "/silences": {
            "get": _op("Silences not yet over"),
            "post": _op(
                "Add a silence",
                requestBody={
                    "required": True,
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/NewSilence"}}
                    },
                },
                responses={"201": {"description": "created"}, "400": {"description": "bad"}},
            ),
        },
        "/silences/{id}": {
            "delete": _op(
                "Remove a silence",
                params=[_p("id", "silence id")],
                responses={"204": {"description": "removed"}, "404": {"description": "none"}},
            )
        },
        "/budget": {
            "get": _op(
                "Calls and billed calls today, use per minute, pauses, per day; the balance, "
                "the derived price per call and the days left"
            )
        },
        "/openapi.json": {"get": _op("This document")},
    },
}
