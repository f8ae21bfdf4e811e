"""Draining in-process: the sentence being spoken finishes, everything new is refused.

Real parts: aiohttp's test server, a real aiortc WHEP peer, the Piper voice, HTTP and
WebSocket clients. ``MediaServer.drain`` is what the runner calls on SIGTERM
(``tests/signaling/test_drain_process.py`` sends the signal to a real process).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from media_server.audio.frames import FRAME_MS
from media_server.drain import DrainSummary
from media_server.rooms.tokens import Role, TokenSigner
from signaling.keys import MEDIA_KEY
from tests.conftest import loopback_settings
from tests.whep_client import WhepClient

SDP = {"Content-Type": "application/sdp"}
SENTENCE = "The quick brown fox jumps over the lazy dog, and then it takes a well earned nap."
DRAIN_S = 20.0
"""Far longer than the sentence: a drain that ends before speech.done did not wait."""


async def assert_draining(resp: aiohttp.ClientResponse) -> None:
    """503, Retry-After and the JSON error ``draining``."""
    assert resp.status == 503, await resp.text()
    assert int(resp.headers["Retry-After"]) >= 1
    body = await resp.json()
    assert body["error"] == "draining"
    assert "shutting down" in body["message"] and body["solution"]


def start_drain(client: TestClient, timeout_s: float = DRAIN_S) -> asyncio.Task[DrainSummary]:
    return asyncio.ensure_future(client.app[MEDIA_KEY].drain(timeout_s))


async def until_draining(client: TestClient) -> None:
    async with asyncio.timeout(5):
        while not client.app[MEDIA_KEY].draining:
            await asyncio.sleep(0)


async def test_readyz_is_200_until_the_drain_then_503_while_healthz_stays_200(
    client: TestClient,
) -> None:
    resp = await client.get("/readyz")
    assert resp.status == 200 and await resp.json() == {"status": "ready"}
    drain = start_drain(client, 0)
    await until_draining(client)
    summary = await drain
    assert summary == DrainSummary(summary.waited_s, 0, 0, 0) and summary.clean
    await assert_draining(await client.get("/readyz"))
    health = await client.get("/healthz")
    assert health.status == 200 and (await health.json())["status"] == "ok"


async def test_new_sessions_requests_and_sockets_get_503_draining(
    client: TestClient, offer: str
) -> None:
    await start_drain(client, 0)
    await assert_draining(await client.post("/whep", data=offer, headers=SDP))
    await assert_draining(await client.post("/tts", json={"text": "Hello."}))
    await assert_draining(await client.get("/tts/ws"))
    assert len(client.app[MEDIA_KEY].sessions) == 0


@pytest.mark.slow  # plays a sentence in real time
async def test_the_sentence_playing_finishes_before_the_drain_returns(
    client: TestClient, http: aiohttp.ClientSession, offer: str
) -> None:
    peer = WhepClient(str(client.make_url("")).rstrip("/"))
    await peer.connect(http)
    try:
        peer.say(SENTENCE, "s1")
        await peer.next_event("speech.started")
        drain = start_drain(client)
        await until_draining(client)

        await assert_draining(await client.get("/readyz"))
        assert (await client.get("/healthz")).status == 200
        await assert_draining(await client.post("/whep", data=offer, headers=SDP))
        peer.say("Nobody hears this one.", "s2")
        refused = await peer.next_event("error")
        assert (refused["error"], refused["id"]) == ("draining", "s2")
        assert not drain.done()  # the sentence is still playing

        done = await peer.next_event("speech.done")
        summary = await drain
        drained_at = time.monotonic()
        assert done["id"] == "s1"
        heard_ms = done["source_duration_ms"] - done["trimmed_ms"]
        assert done["source_duration_ms"] > 2000
        assert abs(done["duration_ms"] - heard_ms) <= FRAME_MS + 1  # all of it, not a cut
        assert [e for _, e in peer.events if e["type"] == "speech.cancelled"] == []
        done_at = next(t for t, e in peer.events if e["type"] == "speech.done")
        assert done_at <= drained_at
        assert summary.clean and summary.sessions == 1
        assert summary.waited_s < DRAIN_S
        assert client.app[MEDIA_KEY].session(peer.location.rsplit("/", 1)[-1])  # type: ignore[union-attr]
    finally:
        await peer.close(http)


@pytest.mark.slow  # a long synthesis
async def test_a_tts_request_running_is_waited_for_and_completes(client: TestClient) -> None:
    text = " ".join([SENTENCE] * 4)  # synthesised sentence by sentence: still running
    async with client.post("/tts", json={"text": text, "format": "wav"}) as resp:
        assert resp.status == 200
        first = await resp.content.readany()  # the request is now running
        drain = start_drain(client)
        await until_draining(client)
        await assert_draining(await client.post("/tts", json={"text": "Hello."}))
        rest = await resp.read()
    summary = await drain
    assert summary.clean
    assert summary.waited_s > 0  # the request was running when the drain began
    body = first + rest
    rate = int(resp.headers["X-Sample-Rate"])
    assert body.startswith(b"RIFF") and len(body) > 2 * rate * 8  # four sentences, whole


async def test_a_socket_finishes_its_utterance_and_is_refused_a_new_one(
    client: TestClient,
) -> None:
    async with client.ws_connect("/tts/ws?format=pcm") as ws:
        ready = await ws.receive_json()
        assert ready["type"] == "ready"
        await ws.send_json({"type": "say", "text": SENTENCE, "id": "w1"})
        events: list[dict[str, Any]] = []
        audio_bytes = 0
        drain: asyncio.Task[DrainSummary] | None = None
        async with asyncio.timeout(30):
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.BINARY:
                    audio_bytes += len(msg.data)
                    if drain is None:
                        drain = start_drain(client)
                        await until_draining(client)
                        await ws.send_json({"type": "say", "text": "No.", "id": "w2"})
                    continue
                events.append(msg.json())
                if events[-1]["type"] == "speech.done":
                    break
    assert drain is not None
    summary = await drain
    assert summary.clean
    kinds = [(e["type"], e.get("id"), e.get("error")) for e in events]
    assert ("error", None, "draining") in kinds
    assert kinds[-1] == ("speech.done", "w1", None)
    assert "speech.cancelled" not in [kind for kind, _, _ in kinds]
    heard_ms = 1000 * audio_bytes / 2 / ready["sample_rate_hz"]  # 16-bit PCM
    assert heard_ms > 2000
    assert abs(heard_ms - events[-1]["source_duration_ms"]) < 1


@pytest.mark.parametrize("settings", [loopback_settings(api_token="operator-token-0123456789")])
async def test_readyz_and_healthz_need_no_token(client: TestClient, offer: str) -> None:
    assert (await client.post("/whep", data=offer, headers=SDP)).status == 401
    assert (await client.get("/readyz")).status == 200
    await start_drain(client, 0)
    await assert_draining(await client.get("/readyz"))
    assert (await client.get("/healthz")).status == 200


ROOM_SECRET = "room-test-secret-0123456789"


@pytest.mark.slow  # the room plays the sentence in real time
@pytest.mark.parametrize("settings", [loopback_settings(token_secret=ROOM_SECRET)])
async def test_a_room_finishes_its_sentence_and_refuses_new_members(
    client: TestClient, offer: str
) -> None:
    signer = TokenSigner(ROOM_SECRET.encode())
    async with client.ws_connect(
        f"/rooms/hall/bot?token={signer.issue('hall', Role.BOT, 'b1')}"
    ) as bot:
        assert (await bot.receive_json())["type"] == "ready"
        await bot.send_json({"type": "say", "text": "Good evening, everyone.", "id": "r1"})
        events = [await bot.receive_json()]
        while events[-1]["type"] != "speech.started":
            events.append(await bot.receive_json())
        drain = start_drain(client)
        await until_draining(client)
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await client.ws_connect(f"/rooms/hall/bot?token={signer.issue('hall', Role.BOT, 'b2')}")
        assert refused.value.status == 503
        bearer = signer.issue("hall", Role.LISTENER, "l1")
        await assert_draining(
            await client.post(
                "/rooms/hall/whep",
                data=offer,
                headers={**SDP, "Authorization": f"Bearer {bearer}"},
            )
        )
        await bot.send_json({"type": "say", "text": "No.", "id": "r2"})
        async with asyncio.timeout(20):
            while events[-1]["type"] != "speech.done":
                events.append(await bot.receive_json())
        summary = await drain
    kinds = [(e["type"], e.get("id"), e.get("error")) for e in events]
    assert ("error", None, "draining") in kinds
    assert kinds[-1] == ("speech.done", "r1", None)
    assert "speech.cancelled" not in [kind for kind, _, _ in kinds]
    assert summary.clean and summary.sessions == 1
