"""A real HTTP upstream that echoes the request it got, cut and spelt as the creator id asks;
and the oracle that finds any 10-character piece of a token in any text or database column."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus, unquote_plus
from zoneinfo import ZoneInfo

from aiohttp import web
from sqlalchemy import inspect, text
from sqlalchemy.ext.asyncio import create_async_engine

from monitor.ops.redaction import secret_forms
from monitor.upstream.client import CORE_DATA_PATH

#: a token with characters every encoding changes (``/``, ``+``, ``=``)
ESCAPED_TOKEN = "tok/SECRET+7f3a=9c1e/5b2d+4e6f8a0b=="
#: (which URL is echoed, how the body is shaped): "sent" is the URL as it arrived (the token
#: percent-encoded), "decoded" the URL after the upstream decoded it (the token raw)
VARIANTS: tuple[tuple[str, str], ...] = (
    ("sent", "json"),
    ("sent", "urlencoded"),
    ("sent", "text"),
    ("sent", "gateway"),
    ("sent", "success"),
    ("decoded", "json"),
    ("decoded", "slashes"),
    ("decoded", "urlencoded"),
    ("decoded", "gateway"),
    ("decoded", "success"),
)
PIECE = 10
_SAMPLE = Path(__file__).parent.parent / "data" / "core_data_success_30d.json"
_SHANGHAI = ZoneInfo("Asia/Shanghai")


def echo_id(variant: int, drop: int) -> str:
    """A 24-hex creator id asking for ``VARIANTS[variant]`` with ``drop`` characters cut off."""
    return f"5c3bf7f7{variant:04x}{drop:012x}"


def _success(echoed: str) -> dict[str, Any]:
    """The real 30-day sample, dated up to yesterday (Shanghai), with the echo beside it."""
    body = json.loads(_SAMPLE.read_text())
    today = datetime.now(UTC).astimezone(_SHANGHAI).date()
    daily = body["data"]["dailyData"]
    for back, point in enumerate(reversed(daily), start=1):
        point["dateKey"] = (today - timedelta(days=back)).isoformat()
    body["data"]["sumData"]["dateKey"] = daily[-1]["dateKey"]
    body["data"].pop("recordTime", None)
    body.pop("recordTime", None)
    body["message"] = f"served for {echoed}"
    body["echo"] = echoed
    return body


def _body(shape: str, echoed: str) -> web.Response:
    if shape == "text":
        return web.Response(status=502, text=f"bad gateway for {echoed}", content_type="text/plain")
    if shape == "gateway":  # no "code": the client cuts "error" at 80 characters
        return web.json_response({"status": 400, "error": echoed, "path": echoed}, status=400)
    if shape == "success":
        return web.json_response(_success(echoed))
    message = quote(echoed, safe="") if shape == "urlencoded" else echoed
    document = json.dumps({"code": 400, "message": f"invalid request {message}", "data": None})
    if shape == "slashes":  # PHP's json_encode and others escape every slash
        document = document.replace("/", "\\/")
    return web.Response(text=document, content_type="application/json")


class EchoUpstream:
    """Counts calls and remembers the longest URL it was sent."""

    def __init__(self) -> None:
        self.calls = 0
        self.longest = 0
        self.url = ""

    async def _answer(self, request: web.Request) -> web.Response:
        self.calls += 1
        sent = f"http://{request.host}{request.raw_path}"
        self.longest = max(self.longest, len(sent))
        user_id = request.query.get("userId", "")
        spelling, shape = VARIANTS[int(user_id[8:12], 16)]
        drop = int(user_id[12:], 16)
        url = sent if spelling == "sent" else unquote_plus(sent)
        return _body(shape, url[: max(0, len(url) - drop)])


@asynccontextmanager
async def echo_upstream() -> AsyncIterator[EchoUpstream]:
    upstream = EchoUpstream()
    app = web.Application()
    app.router.add_get(CORE_DATA_PATH, upstream._answer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    upstream.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield upstream
    finally:
        await runner.cleanup()


def token_pieces(token: str) -> set[str]:
    """Every ``PIECE``-character piece of the token in every spelling an echo can produce:
    raw, percent-encoded (once, or twice when the sent URL is encoded again), JSON-escaped."""
    forms = secret_forms(token) | {
        quote(quote_plus(token), safe=""),
        quote(token, safe="").replace("/", "\\/"),
    }
    return {form[i : i + PIECE] for form in forms for i in range(len(form) - PIECE + 1)}


def leaks(texts: Iterable[str], token: str) -> list[str]:
    """Each piece found, with some context, for the failure message."""
    haystack = "\n\0\n".join(texts)
    found = []
    for piece in sorted(token_pieces(token)):
        at = haystack.find(piece)
        if at != -1:
            found.append(f"{piece!r} in …{haystack[max(0, at - 60) : at + 60]!r}…")
    return found


async def dump_database(url: str) -> dict[str, list[tuple[str, ...]]]:
    """Every row of every table, each value as text."""
    engine = create_async_engine(url)
    tables: dict[str, list[tuple[str, ...]]] = {}
    try:
        async with engine.connect() as conn:
            names = await conn.run_sync(lambda sync: inspect(sync).get_table_names())
            for name in names:
                rows = await conn.execute(text(f'SELECT * FROM "{name}"'))
                tables[name] = [tuple(str(value) for value in row) for row in rows]
    finally:
        await engine.dispose()
    return tables
