"""HTTP synthesis cannot starve live sessions, nor outlive a client that left or stopped reading.

These run the app the way ``web.run_app`` does (``handler_cancellation`` off: aiohttp
does not cancel a handler whose client disconnected), unlike aiohttp's ``TestServer``,
which cancels it and so hides what the handler itself must notice.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from media_server.config import Settings
from signaling.app import KEEPALIVE_TIMEOUT_S, create_app
from signaling.keys import MEDIA_KEY, QUOTAS_KEY
from signaling.quotas import Quota
from synthesis import Engine, SynthesisRequest, SynthesisService
from tests.conftest import loopback_settings
from tests.signaling.test_tts_api import LONG_TEXT

pytestmark = pytest.mark.slow  # each synthesises long audio, some for seconds

SMALL_RCVBUF_BYTES = 4096
"""A client socket buffer this small fills at once, so the server's writes soon block."""


@dataclass
class Server:
    app: web.Application
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def service(self) -> SynthesisService:
        return self.app[MEDIA_KEY].synthesis


@pytest.fixture
async def server(settings: Settings, piper_engine: Engine) -> AsyncIterator[Server]:
    app = create_app(settings, engine=piper_engine)
    runner = web.AppRunner(app, keepalive_timeout=KEEPALIVE_TIMEOUT_S, shutdown_timeout=2.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield Server(app, runner.addresses[0][1])
    finally:
        await runner.cleanup()


async def until(condition: Callable[[], bool], timeout_s: float) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.05)


async def stats(http: aiohttp.ClientSession, server: Server) -> dict[str, Any]:
    async with http.get(f"{server.url}/stats") as resp:
        assert resp.status == 200
        body: dict[str, Any] = await resp.json()
        return body["synthesis"]  # type: ignore[no-any-return]


async def slow_reader(port: int) -> socket.socket:
    """A connected client socket that takes almost nothing unless read."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SMALL_RCVBUF_BYTES)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    return sock


def tts_request(body: dict[str, Any]) -> bytes:
    payload = json.dumps(body).encode()
    head = (
        "POST /tts HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\n\r\n"
    )
    return head.encode() + payload


def ws_text_frame(text: str) -> bytes:
    """One masked text frame, as a client must send it (RFC 6455 5.2)."""
    payload = text.encode()
    mask = os.urandom(4)
    size = len(payload)
    if size < 126:
        header = bytes([0x81, 0x80 | size])
    elif size < 65536:
        header = bytes([0x81, 0x80 | 126]) + size.to_bytes(2, "big")
    else:
        header = bytes([0x81, 0x80 | 127]) + size.to_bytes(8, "big")
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


async def ws_say_never_read(port: int, text: str) -> socket.socket:
    """Open ``/tts/ws`` by hand, ask for ``text`` and read nothing after the handshake."""
    loop = asyncio.get_running_loop()
    sock = await slow_reader(port)
    await loop.sock_sendall(
        sock,
        b"GET /tts/ws?format=pcm HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Sec-WebSocket-Version: 13\r\n\r\n",
    )
    head = b""
    async with asyncio.timeout(10):
        while b"\r\n\r\n" not in head:
            head += await loop.sock_recv(sock, 1024)
    assert head.startswith(b"HTTP/1.1 101"), head
    await loop.sock_sendall(sock, ws_text_frame(json.dumps({"type": "say", "text": text})))
    return sock


async def live_stream_starts(service: SynthesisService) -> bool:
    """A 1:1 session or room (the default caller) can start synthesis and gets audio."""
    stream = service.stream(SynthesisRequest(text="Live sessions still speak."))
    try:
        chunk = await anext(stream)
        return chunk.pcm.size > 0
    finally:
        await stream.aclose()


async def closed_by_server(sock: socket.socket, timeout_s: float) -> bool:
    """Read (and drop) what the server sent until it closed the connection."""
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout_s):
            while await loop.sock_recv(sock, 1 << 16):
                pass
    except ConnectionResetError:
        pass
    return True


def access_statuses(records: list[logging.LogRecord]) -> list[str]:
    return [r.getMessage() for r in records if r.name == "aiohttp.access"]


# -- 1. live sessions keep synthesis capacity HTTP cannot take ------------------------------


@pytest.mark.parametrize("settings", [loopback_settings(synthesis_workers=2)])
async def test_http_cannot_take_the_slot_kept_for_live_sessions(
    server: Server, http: aiohttp.ClientSession, settings: Settings
) -> None:
    first = await http.post(f"{server.url}/tts", json={"text": LONG_TEXT})
    assert first.status == 200
    await first.content.readany()
    # one slot of two is free, but it is kept for live sessions: HTTP is refused
    second = await http.post(f"{server.url}/tts", json={"text": "Me too."})
    assert second.status == 503
    body = await second.json()
    assert body["error"] == "engine_busy" and body["solution"]
    assert int(second.headers["Retry-After"]) > 0
    async with http.ws_connect(f"{server.url}/tts/ws") as ws:
        await ws.receive_json()  # ready
        await ws.send_json({"type": "say", "text": "And me.", "id": "w"})
        event = await ws.receive_json(timeout=10)
        assert event["type"] == "error" and event["error"] == "engine_busy"
    synthesis = await stats(http, server)
    assert synthesis["http_max_concurrent"] == 1 and synthesis["max_concurrent"] == 2
    assert synthesis["http_running"] == 1 and synthesis["http_refused_total"] == 2
    assert await live_stream_starts(server.service)
    first.close()


# -- 2. one client address holds at most max_syntheses_per_client --------------------------


@pytest.mark.parametrize("settings", [loopback_settings(max_syntheses_per_client=1)])
async def test_one_client_holds_at_most_its_syntheses(
    server: Server, http: aiohttp.ClientSession, settings: Settings
) -> None:
    first = await http.post(f"{server.url}/tts", json={"text": LONG_TEXT})
    assert first.status == 200
    await first.content.readany()
    second = await http.post(f"{server.url}/tts", json={"text": "Me too."})
    assert second.status == 429
    body = await second.json()
    assert body["error"] == "too_many_synthesis" and body["solution"]
    assert int(second.headers["Retry-After"]) > 0
    assert server.service.running == 1  # refused before it took an engine slot
    async with http.ws_connect(f"{server.url}/tts/ws") as ws:
        await ws.receive_json()  # ready
        await ws.send_json({"type": "say", "text": "Over my share.", "id": "a"})
        event = await ws.receive_json(timeout=10)
        assert event["type"] == "error" and event["id"] == "a"
        assert event["error"] == "too_many_synthesis" and event["solution"]
        first.close()  # the HTTP stream ends: the client's share is free again
        quotas = server.app[QUOTAS_KEY]
        await until(lambda: quotas.held(Quota.SYNTHESIS, "127.0.0.1") == 0, 10)
        # the socket stayed up and now speaks
        await ws.send_json({"type": "say", "text": "My turn now.", "id": "b"})
        types = []
        while not types or types[-1] != "speech.done":
            msg = await ws.receive(timeout=10)
            if msg.type == aiohttp.WSMsgType.TEXT:
                types.append(json.loads(msg.data)["type"])
        assert types == ["speech.started", "speech.done"]


# -- 3. a client that stops reading is cut off, and its synthesis stops --------------------


@pytest.mark.parametrize(
    "settings", [loopback_settings(synthesis_workers=2, http_write_timeout_s=1.0)]
)
async def test_a_tts_client_that_stops_reading_frees_its_slot(
    server: Server, http: aiohttp.ClientSession, settings: Settings
) -> None:
    loop = asyncio.get_running_loop()
    sock = await slow_reader(server.port)
    try:
        await loop.sock_sendall(sock, tts_request({"text": LONG_TEXT, "format": "pcm"}))
        await until(lambda: server.service.http_running == 1, 10)
        assert await live_stream_starts(server.service)  # meanwhile live sessions speak
        # minutes of audio: without a write timeout the slot is held for as long as
        # the client stays connected
        async with asyncio.timeout(30):
            while (await stats(http, server))["running"]:
                await asyncio.sleep(0.2)
        assert await closed_by_server(sock, 10)
    finally:
        sock.close()


@pytest.mark.parametrize(
    "settings", [loopback_settings(synthesis_workers=2, http_write_timeout_s=1.0)]
)
async def test_a_socket_that_stops_reading_frees_its_slot(
    server: Server, settings: Settings
) -> None:
    sock = await ws_say_never_read(server.port, LONG_TEXT)
    try:
        await until(lambda: server.service.http_running == 1, 10)
        await until(lambda: server.service.running == 0, 30)
        assert await closed_by_server(sock, 10)
    finally:
        sock.close()


# -- 4. a departed client always stops its synthesis, quietly --------------------------------


async def test_a_departed_client_stops_a_whole_body_synthesis(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    loop = asyncio.get_running_loop()
    sock = await slow_reader(server.port)
    try:
        body = {"text": LONG_TEXT, "format": "pcm", "stream": False}
        await loop.sock_sendall(sock, tts_request(body))
        await until(lambda: server.service.running == 1, 10)
    finally:
        sock.close()  # gone before the answer, which only comes once all is synthesised
    left = time.monotonic()
    await until(lambda: server.service.running == 0, 30)
    # the whole text takes ~10 s to synthesise here; a sentence well under one
    assert time.monotonic() - left < 4
    await until(lambda: bool(access_statuses(caplog.records)), 5)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert any(
        r.name == "signaling.routes.tts" and "went away" in r.getMessage() for r in caplog.records
    )
    assert not [m for m in access_statuses(caplog.records) if '" 500 ' in m]


async def test_a_client_that_drops_a_stream_is_no_error(
    server: Server, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    resp = await http.post(f"{server.url}/tts", json={"text": LONG_TEXT})
    assert resp.status == 200
    await resp.content.readany()
    resp.close()  # the client goes away mid-stream
    await until(lambda: server.service.running == 0, 10)
    await until(lambda: bool(access_statuses(caplog.records)), 5)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert any(
        r.name == "signaling.routes.tts" and "went away" in r.getMessage() for r in caplog.records
    )
    assert not [m for m in access_statuses(caplog.records) if '" 500 ' in m]


@pytest.mark.parametrize(
    "settings", [loopback_settings(http_write_timeout_s=30.0, max_text_chars=20_000)]
)
async def test_a_reset_while_the_server_waits_to_write_is_no_error(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    # aiohttp reports a reset during drain as ConnectionError("Connection lost"), not as
    # ConnectionResetError: it was an ERROR with a traceback and a 500 (bench.hostile)
    caplog.set_level(logging.INFO)
    loop = asyncio.get_running_loop()
    sock = await slow_reader(server.port)
    await loop.sock_sendall(sock, tts_request({"text": LONG_TEXT * 4, "format": "pcm"}))
    await until(lambda: server.service.http_running == 1, 10)
    await asyncio.sleep(8.0)  # long enough to fill every buffer: the handler waits to drain
    sock.close()  # with unread data: the kernel answers the server's next bytes with a reset
    await until(lambda: server.service.running == 0, 10)
    await until(lambda: bool(access_statuses(caplog.records)), 5)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not [m for m in access_statuses(caplog.records) if '" 500 ' in m]
