"""A real HTTP receiver for apprise's ``json://`` URLs, on 127.0.0.1 with an OS-chosen port.

It records every JSON body it accepts and can be told to answer 500, to hang, or to stop
(connection refused). Test support only: no assertions live here.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web

Mode = Literal["ok", "fail", "hang"]


@dataclass
class Received:
    path: str
    body: dict[str, Any]


@dataclass
class Receiver:
    """``async with Receiver() as r``; ``r.url("/a")`` is a ``json://`` URL that posts here."""

    mode: Mode = "ok"
    status: int = 500
    received: list[Received] = field(default_factory=list)
    #: every request that reached the handler, whatever it was answered
    hits: int = 0
    port: int = 0
    _runner: web.AppRunner | None = None
    _release: asyncio.Event = field(default_factory=asyncio.Event)

    async def __aenter__(self) -> Receiver:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Listen (again) on 127.0.0.1; keeps the port of a previous start so URLs stay valid."""
        app = web.Application(client_max_size=64 * 1024 * 1024)  # reports come with attachments
        app.router.add_post("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        if not self.port:
            server = site._server
            assert server is not None
            self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._release = asyncio.Event()

    async def stop(self) -> None:
        """Stop listening: further sends get connection refused."""
        self._release.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def url(self, path: str = "/hook") -> str:
        return f"json://127.0.0.1:{self.port}{path}"

    def fail(self, status: int = 500) -> None:
        self.mode, self.status = "fail", status

    def hang(self) -> None:
        self.mode = "hang"
        self._release = asyncio.Event()

    def recover(self) -> None:
        self.mode = "ok"
        self._release.set()

    def bodies(self, path: str | None = None) -> list[dict[str, Any]]:
        return [r.body for r in self.received if path is None or r.path == path]

    async def _handle(self, request: web.Request) -> web.Response:
        self.hits += 1
        if self.mode == "hang":
            await self._release.wait()
            return web.Response(status=503)
        if self.mode == "fail":
            return web.Response(status=self.status, text="receiver told to fail")
        body = json.loads(await request.text())
        self.received.append(Received(request.path, body))
        return web.json_response({"ok": True})


@dataclass
class Trickler:
    """A channel endpoint that never finishes its answer: it reads the request, answers
    ``200`` with ``Content-Length: 100000`` and then sends one byte every ``every`` seconds, so
    no single read ever waits long enough for a read timeout. ``r.url("/hook")`` as above."""

    every: float = 2.0
    #: requests whose headers were read
    hits: int = 0
    port: int = 0
    _server: asyncio.Server | None = None
    _writers: list[asyncio.StreamWriter] = field(default_factory=list)

    async def __aenter__(self) -> Trickler:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.close()
        await self._server.wait_closed()

    def url(self, path: str = "/hook") -> str:
        return f"json://127.0.0.1:{self.port}{path}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        try:
            await reader.readuntil(b"\r\n\r\n")
            self.hits += 1
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
            writer.write(b"Content-Length: 100000\r\n\r\n")
            await writer.drain()
            for _ in range(100_000):
                await asyncio.sleep(self.every)
                writer.write(b" ")
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
