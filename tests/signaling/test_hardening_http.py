"""Hostile requests over real HTTP and WebSockets: refused with a 4xx or an error event."""

from __future__ import annotations

import asyncio
import base64
import json
import struct
import threading
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from media_server.config import Settings
from media_server.rooms.tokens import Role, TokenSigner
from signaling.app import create_app
from synthesis import (
    Conflict,
    EngineCapabilities,
    Mode,
    ReferenceAudio,
    VoiceInfo,
)
from synthesis.testing import ScriptedEngine
from tests.conftest import loopback_settings
from tests.synthesis.test_hardening_reference import flac_bomb

NESTED = "[" * 2000
ROOM_SECRET = "hardening-room-secret-0123456789"
GARBAGE_CLIP = base64.b64encode(b"RIFF\0\0\0\0WAVE" + b"\x5a" * 400).decode()
"""Valid base64 of a blob that cannot decode: an ``unsupported`` answer proves no decode ran."""


async def error_of(resp: Any, status: int) -> dict[str, str]:
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/json"
    body: dict[str, str] = await resp.json()
    assert body["error"] and body["message"] and body["solution"]
    return body


def voice_clip(seconds: float = 2.0, rate_hz: int = 16_000) -> str:
    samples = int(seconds * rate_hz)
    fmt = struct.pack("<HHIIHH", 1, 1, rate_hz, rate_hz * 2, 2, 16)
    pcm = (struct.pack("<h", 8000) + struct.pack("<h", -8000)) * (samples // 2)
    wav = (
        b"RIFF" + struct.pack("<I", 36 + len(pcm)) + b"WAVE"
        + b"fmt " + struct.pack("<I", len(fmt)) + fmt
        + b"data" + struct.pack("<I", len(pcm)) + pcm
    )  # fmt: skip
    return base64.b64encode(wav).decode()


# -- POST /tts on the real Piper engine ---------------------------------------------------


async def test_deeply_nested_json_body_is_400(client: TestClient) -> None:
    resp = await client.post("/tts", data=NESTED, headers={"Content-Type": "application/json"})
    got = await error_of(resp, 400)
    assert got["error"] == "invalid_json" and "deep" in got["message"]


@pytest.mark.parametrize("mode", [None, "sft", "cross_lingual", "zero_shot"])
async def test_reference_audio_on_piper_is_refused_before_decoding(
    client: TestClient, mode: str | None
) -> None:
    body: dict[str, Any] = {"text": "hi", "reference_audio": GARBAGE_CLIP, "reference_text": "hi"}
    if mode is not None:
        body["mode"] = mode
    got = await error_of(await client.post("/tts", json=body), 422)
    assert got["error"] == "unsupported"
    assert "cosyvoice" in got["message"] + got["solution"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"text": "nul\u0000byte"}, "'text'"),
        ({"text": "lone \ud800 surrogate"}, "'text'"),
        ({"text": "hi", "instruct_text": "bell\u0007"}, "'instruct_text'"),
    ],
)
async def test_control_characters_in_text_are_400(
    client: TestClient, body: dict[str, str], field: str
) -> None:
    # json.dumps writes the surrogate as the escape "\ud800", as the review sent it.
    raw = json.dumps(body)
    resp = await client.post("/tts", data=raw, headers={"Content-Type": "application/json"})
    got = await error_of(resp, 400)
    assert got["error"] == "invalid_request" and field in got["message"]


# -- /tts/ws --------------------------------------------------------------------------------


async def next_event(ws: Any, kind: str) -> dict[str, Any]:
    async with asyncio.timeout(20):
        while True:
            msg = await ws.receive()
            if msg.type.name == "TEXT":
                event: dict[str, Any] = json.loads(msg.data)
                if event["type"] == kind:
                    return event
            elif msg.type.name != "BINARY":
                raise AssertionError(f"socket ended: {msg.type}")


async def test_websocket_survives_nested_json_and_refuses_reference_audio(
    client: TestClient,
) -> None:
    async with client.ws_connect("/tts/ws") as ws:
        await next_event(ws, "ready")
        await ws.send_str(NESTED)
        error = await next_event(ws, "error")
        assert error["error"] == "invalid_json"
        say = {"type": "say", "text": "hi", "mode": "sft", "reference_audio": GARBAGE_CLIP}
        await ws.send_json(say)
        assert (await next_event(ws, "error"))["error"] == "unsupported"
        await ws.send_json({"type": "say", "text": "Still here.", "id": "ok"})
        done = await next_event(ws, "speech.done")
        assert done["id"] == "ok" and done["duration_ms"] > 0


@pytest.mark.parametrize("settings", [loopback_settings(max_text_chars=10)])
@pytest.mark.slow
async def test_websocket_caps_one_streamed_utterance(client: TestClient) -> None:
    cap = 10 * 10
    delta = "Go on. "
    async with client.ws_connect("/tts/ws") as ws:
        await next_event(ws, "ready")
        for _ in range(cap // len(delta)):
            await ws.send_json({"type": "text.delta", "text": delta, "id": "s"})
        await ws.send_json({"type": "text.delta", "text": "more", "id": "s"})
        error = await next_event(ws, "error")
        assert error["error"] == "text_too_long" and str(cap) in error["message"]
        # what was taken still plays, and the socket is still up
        await ws.send_json({"type": "text.done", "id": "s"})
        done = await next_event(ws, "speech.done")
        assert done["id"] == "s" and done["duration_ms"] > 0


# -- POST /voices on a cloning engine ---------------------------------------------------------


class CloningEngine(ScriptedEngine):
    """Clones by remembering the id; both racing registrations meet inside the engine."""

    def __init__(self) -> None:
        super().__init__(chunks=1)
        self.registered: list[str] = []
        self._lock = threading.Lock()
        self._both_inside = threading.Barrier(2, timeout=5)

    @property
    def capabilities(self) -> EngineCapabilities:
        modes = frozenset({Mode.SFT, Mode.ZERO_SHOT, Mode.CROSS_LINGUAL})
        return EngineCapabilities(modes, self.sample_rate_hz, ("xx",), cloning=True)

    @property
    def voices(self) -> tuple[VoiceInfo, ...]:
        clones = tuple(VoiceInfo(v, "xx", self.sample_rate_hz, True) for v in self.registered)
        return (*super().voices, *clones)

    def register_voice(
        self, voice_id: str, reference: ReferenceAudio, reference_text: str | None
    ) -> VoiceInfo:
        try:
            self._both_inside.wait()
        except threading.BrokenBarrierError:
            pass  # only one request got here: the other was refused earlier
        with self._lock:
            if voice_id in self.registered:
                raise Conflict(
                    "voice_exists", f"a voice {voice_id!r} already exists", "choose another"
                )
            self.registered.append(voice_id)
        return VoiceInfo(voice_id, "xx", self.sample_rate_hz, True)


@pytest.fixture
async def cloning_client(settings: Settings) -> AsyncIterator[TestClient]:
    app = create_app(settings, engine=CloningEngine())
    async with TestClient(TestServer(app, host="127.0.0.1")) as test_client:
        yield test_client


async def test_two_registrations_of_one_voice_are_201_and_409(
    cloning_client: TestClient,
) -> None:
    body = {"voice_id": "alice", "reference_audio": voice_clip()}
    first, second = await asyncio.gather(
        cloning_client.post("/voices", json=body), cloning_client.post("/voices", json=body)
    )
    statuses = sorted([first.status, second.status])
    assert statuses == [201, 409], [await first.text(), await second.text()]
    loser = first if first.status == 409 else second
    assert (await error_of(loser, 409))["error"] == "voice_exists"


@pytest.mark.parametrize("voice_id", ["alice\n", "alice\r\n", "\nalice", "al ice"])
async def test_voice_ids_with_a_newline_are_400(cloning_client: TestClient, voice_id: str) -> None:
    body = {"voice_id": voice_id, "reference_audio": voice_clip()}
    got = await error_of(await cloning_client.post("/voices", json=body), 400)
    assert got["error"] == "invalid_request" and "voice_id" in got["message"]


async def test_voices_checks_the_request_before_decoding_and_bombs_are_400(
    cloning_client: TestClient,
) -> None:
    bomb = flac_bomb(frame_rates_hz=(0,))  # 16384 s of audio in 61 bytes
    body = {"voice_id": "bob", "reference_audio": base64.b64encode(bomb).decode()}
    got = await error_of(await cloning_client.post("/voices", json=body), 400)
    assert got["error"] == "reference_undecodable"
    body = {"text": "hi", "mode": "sft", "reference_audio": GARBAGE_CLIP}
    got = await error_of(await cloning_client.post("/tts", json=body), 422)
    assert got["error"] == "unsupported" and "sft" in got["message"]


# -- rooms ----------------------------------------------------------------------------------


@pytest.mark.parametrize("settings", [loopback_settings(token_secret=ROOM_SECRET)])
@pytest.mark.parametrize("path", ["/rooms/demo%0A/whep", "/rooms/demo%0A/bot"])
async def test_room_names_with_a_trailing_newline_are_400(client: TestClient, path: str) -> None:
    method = client.post if path.endswith("whep") else client.get
    resp = await method(path, data="v=0\r\n", headers={"Content-Type": "application/sdp"})
    assert (await error_of(resp, 400))["error"] == "invalid_room"


@pytest.mark.parametrize("settings", [loopback_settings(token_secret=ROOM_SECRET)])
async def test_room_bot_survives_nested_json(client: TestClient) -> None:
    token = TokenSigner(ROOM_SECRET.encode()).issue("hall", Role.BOT, "bot")
    async with client.ws_connect(f"/rooms/hall/bot?token={token}") as ws:
        await next_event(ws, "ready")
        await ws.send_str(NESTED)
        assert (await next_event(ws, "error"))["error"] == "invalid_json"
        await ws.send_json({"type": "text.delta", "text": "a\u0000b"})
        assert (await next_event(ws, "error"))["error"] == "invalid_request"
        await ws.send_json({"type": "text.done"})  # still reading messages
        assert (await next_event(ws, "error"))["error"] == "no_open_text"
