"""A real server in a thread of its own, for fuzzing from synchronous (hypothesis) tests."""

from __future__ import annotations

import asyncio
import concurrent.futures
import http.client
import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from media_server.config import Settings
from signaling.app import KEEPALIVE_TIMEOUT_S, create_app
from synthesis import Engine

ERROR_FIELDS = {"error", "message", "solution"}


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class ThreadedServer:
    """The app on its own event loop and thread, reached over real HTTP on 127.0.0.1."""

    def __init__(self, settings: Settings, engine: Engine) -> None:
        self._settings = settings
        self._engine = engine
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fuzz-server")
        self._runner: web.AppRunner | None = None
        self.port = 0

    def start(self) -> None:
        self._thread.start()
        self.run(self._start())

    async def _start(self) -> None:
        self._runner = web.AppRunner(
            create_app(self._settings, engine=self._engine), keepalive_timeout=KEEPALIVE_TIMEOUT_S
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert isinstance(server, asyncio.base_events.Server)
        self.port = server.sockets[0].getsockname()[1]

    def run(self, coro: Any, timeout_s: float = 60) -> Any:
        """Run ``coro`` on the server's loop and wait for its result."""
        future: concurrent.futures.Future[Any] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result(timeout_s)

    def stop(self) -> None:
        if self._runner is not None:
            self.run(self._runner.cleanup())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def request(
        self,
        method: str,
        path: str,
        body: bytes | str | None = None,
        headers: Mapping[str, str] | None = None,
        timeout_s: float = 30,
    ) -> Reply:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout_s)
        try:
            data = body.encode() if isinstance(body, str) else body
            connection.request(method, path, body=data, headers=dict(headers or {}))
            response = connection.getresponse()
            return Reply(response.status, dict(response.getheaders()), response.read())
        finally:
            connection.close()


def check_reply(reply: Reply) -> None:
    """Client input never gets a 5xx; every error is the JSON triple, nothing else."""
    assert reply.status < 500, (reply.status, reply.body[:300])
    if reply.status >= 400:
        assert reply.headers.get("Content-Type", "").startswith("application/json"), reply
        body = reply.json()
        assert set(body) == ERROR_FIELDS, body
        assert all(isinstance(body[k], str) and body[k] for k in ERROR_FIELDS), body
