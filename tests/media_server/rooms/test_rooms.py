"""Rooms over loopback: real aiortc listeners, a bot over the WebSocket, the real Piper voice."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import numpy as np
import pytest
from aiohttp.test_utils import TestClient

from media_server.audio.frames import FRAME_MS, FRAME_SAMPLES
from media_server.config import Settings
from media_server.rooms.tokens import Role, TokenSigner
from signaling.keys import MEDIA_KEY
from tests.conftest import loopback_settings
from tests.whep_client import WhepClient

pytestmark = [pytest.mark.loopback, pytest.mark.slow]

SECRET = "room-test-secret-0123456789"
SPEECH_RMS = 300.0
SILENT_RMS = 10.0
SENTENCE = "Good evening everyone, this is the room bot speaking to all of you at once."


@pytest.fixture
def settings() -> Settings:
    return loopback_settings(token_secret=SECRET)


@pytest.fixture
def signer() -> TokenSigner:
    return TokenSigner(SECRET.encode())


def bearer(signer: TokenSigner, room: str, role: Role, identity: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {signer.issue(room, role, identity)}"}


class Listener(WhepClient):
    """A WHEP listener that knows where in the room's stream it joined."""

    joined_ts: int = 0

    def room_frames(self, start: int, end: int) -> dict[int, float]:
        """rms by room stream position, for positions in [start, end)."""
        return {
            f.pts + self.joined_ts: f.rms
            for f in self.frames
            if start <= f.pts + self.joined_ts < end
        }


async def join(
    client: TestClient, http: aiohttp.ClientSession, signer: TokenSigner, room: str, name: str,
    role: Role = Role.LISTENER,
) -> Listener:  # fmt: skip
    listener = Listener(str(client.make_url("")).rstrip("/"))
    await listener.connect(
        http, path=f"/rooms/{room}/whep", headers=bearer(signer, room, role, name)
    )
    joined = await listener.next_event("room.joined")
    listener.joined_ts = joined["stream_ts"]
    return listener


@pytest.fixture
async def bot(
    client: TestClient, signer: TokenSigner
) -> AsyncIterator[aiohttp.ClientWebSocketResponse]:
    token = signer.issue("hall", Role.BOT, "host-bot")
    async with client.ws_connect(f"/rooms/hall/bot?token={token}") as ws:
        ready = await ws.receive_json()
        assert ready["type"] == "ready" and ready["room"] == "hall"
        yield ws


async def bot_event(ws: aiohttp.ClientWebSocketResponse, kind: str) -> dict[str, Any]:
    async with asyncio.timeout(20):
        while True:
            event = json.loads((await ws.receive()).data)
            if event["type"] == kind:
                return event  # type: ignore[no-any-return]


def skipped_ticks(client: TestClient, room: str) -> int:
    """Ticks the room's pacer skipped after a stall (RTP positions that were never sent)."""
    return client.app[MEDIA_KEY].rooms.rooms[room].pacer.stats.skipped_frames


def underruns(client: TestClient, room: str) -> int:
    """Silent ticks inside an utterance because encoding fell behind playout."""
    return client.app[MEDIA_KEY].rooms.rooms[room].speech.underruns


def gaps(positions: list[int]) -> int:
    """Missing 20 ms positions between the first and the last."""
    return (positions[-1] - positions[0]) // FRAME_SAMPLES + 1 - len(positions)


async def wait_until_heard(listeners: list[Listener], room_pts: int) -> None:
    async with asyncio.timeout(10):
        while any(not lst.frames or lst.frames[-1].pts + lst.joined_ts < room_pts
                  for lst in listeners):  # fmt: skip
            await asyncio.sleep(0.02)


async def test_every_listener_hears_the_same_frames(
    client: TestClient, http: aiohttp.ClientSession, signer: TokenSigner, bot: Any
) -> None:
    listeners = [await join(client, http, signer, "hall", f"guest-{i}") for i in range(3)]
    joined = await bot_event(bot, "participant.joined")
    assert joined["role"] in ("bot", "listener")
    skipped_before = skipped_ticks(client, "hall")
    underruns_before = underruns(client, "hall")
    await bot.send_json({"type": "say", "text": SENTENCE, "id": "welcome"})
    started = await bot_event(bot, "speech.started")
    done = await bot_event(bot, "speech.done")
    assert started["owner"] == "host-bot" and done["id"] == "welcome"
    # a stalled loop (a loaded 2-core runner) makes the pacer skip ticks: their RTP
    # positions are never sent, and the speech goes on after them
    skipped = skipped_ticks(client, "hall") - skipped_before
    silent = underruns(client, "hall") - underruns_before
    speech_frames = done["duration_ms"] // FRAME_MS
    start, end = started["stream_ts"], done["end_ts"]
    await wait_until_heard(listeners, end + 5 * FRAME_SAMPLES)
    # listeners get the events too
    for listener in listeners:
        assert (await listener.next_event("speech.started"))["stream_ts"] == start
    heard = [lst.room_frames(start, end) for lst in listeners]
    positions = sorted(heard[0])
    assert speech_frames <= len(positions) <= speech_frames + silent
    assert gaps(positions) <= skipped
    for frames in heard:
        assert sorted(frames) == positions  # every frame, at the same positions
    reference = np.array([heard[0][p] for p in positions])
    assert reference.mean() > SPEECH_RMS
    for frames in heard[1:]:
        # the same packets, decoded: aligned to the frame
        np.testing.assert_allclose([frames[p] for p in positions], reference, rtol=0.05, atol=5)
    for listener in listeners:
        await listener.close(http)


async def test_joining_and_leaving_mid_utterance(
    client: TestClient, http: aiohttp.ClientSession, signer: TokenSigner, bot: Any
) -> None:
    skipped_before = skipped_ticks(client, "hall")  # the bot's join made the room
    early = await join(client, http, signer, "hall", "early")
    leaver = await join(client, http, signer, "hall", "leaver")
    await bot.send_json({"type": "say", "text": SENTENCE + " " + SENTENCE, "id": "long"})
    started = await bot_event(bot, "speech.started")
    await wait_until_heard([early], started["stream_ts"] + 50 * FRAME_SAMPLES)
    late = await join(client, http, signer, "hall", "late")  # mid-sentence
    assert late.joined_ts > started["stream_ts"]
    async with http.delete(f"{leaver.base_url}{leaver.location}", headers=leaver.auth) as resp:
        assert resp.status == 200
    left = await bot_event(bot, "participant.left")
    assert left["identity"] == "leaver"
    await wait_until_heard([early, late], late.joined_ts + 40 * FRAME_SAMPLES)
    # the late listener hears speech from its first frames on
    first = late.room_frames(late.joined_ts, late.joined_ts + 40 * FRAME_SAMPLES)
    skipped = skipped_ticks(client, "hall") - skipped_before
    assert len(first) >= 40 - skipped and np.mean(list(first.values())) > SPEECH_RMS
    # the early one never missed a frame across the join and the leave
    # (positions are missing only where the pacer skipped ticks after a stall)
    pts = [f.pts for f in early.frames]
    assert pts == sorted(set(pts))
    assert gaps(pts) <= skipped
    for listener in (early, late):
        await listener.close(http)
    await leaver.pc.close()


async def test_bot_text_deltas_are_heard(
    client: TestClient, http: aiohttp.ClientSession, signer: TokenSigner, bot: Any
) -> None:
    listener = await join(client, http, signer, "hall", "guest")
    for delta in ["Sure, ", "let me ", "check that ", "for you. ", "One moment"]:
        await bot.send_json({"type": "text.delta", "text": delta, "id": "reply"})
    started = await bot_event(bot, "speech.started")  # before text.done
    await bot.send_json({"type": "text.done", "id": "reply"})
    done = await bot_event(bot, "speech.done")
    assert done["id"] == "reply" == started["id"]
    end = done["end_ts"]
    await wait_until_heard([listener], end)
    frames = listener.room_frames(started["stream_ts"], end)
    # the span may also hold ticks that waited for the bot's next text (silence)
    assert len(frames) >= done["duration_ms"] // FRAME_MS
    assert np.mean(list(frames.values())) > SPEECH_RMS
    await listener.close(http)


async def test_cancel_needs_a_speaker_token_and_stops_the_bot(
    client: TestClient, http: aiohttp.ClientSession, signer: TokenSigner, bot: Any
) -> None:
    listener = await join(client, http, signer, "hall", "quiet-guest")
    speaker = await join(client, http, signer, "hall", "loud-guest", Role.SPEAKER)
    await bot.send_json({"type": "say", "text": SENTENCE + " " + SENTENCE, "id": "long"})
    await bot_event(bot, "speech.started")
    listener.cancel()
    refused = await listener.next_event("error")
    assert refused["error"] == "forbidden" and "speaker" in refused["solution"]
    listener.say("Let me talk.")
    assert (await listener.next_event("error"))["error"] == "forbidden"
    speaker.cancel()  # a person barging in
    cancelled = await bot_event(bot, "speech.cancelled")
    assert cancelled["id"] == "long" and cancelled["played_ms"] > 0
    speaker.say("Thanks, my turn.", "mine")
    started = await bot_event(bot, "speech.started")
    assert (started["id"], started["owner"]) == ("mine", "loud-guest")
    for member in (listener, speaker):
        await member.close(http)


async def test_token_failures(client: TestClient, signer: TokenSigner) -> None:
    offer = "v=0\r\n"
    sdp = {"Content-Type": "application/sdp"}
    resp = await client.post("/rooms/hall/whep", data=offer, headers=sdp)
    assert resp.status == 401 and (await resp.json())["error"] == "token_required"
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    for headers, status, error in [
        (bearer(signer, "other", Role.LISTENER, "x"), 403, "wrong_room"),
        (bearer(signer, "hall", Role.BOT, "x"), 403, "wrong_role"),
        ({"Authorization": "Bearer nonsense.token"}, 401, "invalid_token"),
        ({"Authorization": f"Bearer {signer.issue('hall', Role.LISTENER, 'x', ttl_s=-1)}"},
         401, "token_expired"),
    ]:  # fmt: skip
        resp = await client.post("/rooms/hall/whep", data=offer, headers={**sdp, **headers})
        body = await resp.json()
        assert (resp.status, body["error"]) == (status, error)
        assert body["message"] and body["solution"]
    listener_token = signer.issue("hall", Role.LISTENER, "x")
    resp = await client.get(f"/rooms/hall/bot?token={listener_token}")
    assert resp.status == 403
    resp = await client.get("/rooms/bad%20name/bot")
    assert resp.status == 400
    assert not client.app[MEDIA_KEY].rooms.rooms  # nothing was created by refused joins


async def test_rooms_are_removed_when_empty(
    client: TestClient, http: aiohttp.ClientSession, signer: TokenSigner
) -> None:
    rooms = client.app[MEDIA_KEY].rooms
    listener = await join(client, http, signer, "pop-up", "guest")
    assert "pop-up" in rooms.rooms
    await listener.close(http)
    assert "pop-up" not in rooms.rooms


@pytest.mark.parametrize(
    "settings", [loopback_settings(token_secret=SECRET, max_room_participants=1)]
)
async def test_room_participant_limit(
    client: TestClient, http: aiohttp.ClientSession, signer: TokenSigner, settings: Settings
) -> None:
    listener = await join(client, http, signer, "tiny", "first")
    token = signer.issue("tiny", Role.BOT, "bot")
    resp = await client.get(f"/rooms/tiny/bot?token={token}")
    assert resp.status == 503 and (await resp.json())["error"] == "room_full"
    await listener.close(http)


@pytest.mark.parametrize("settings", [loopback_settings()])
async def test_rooms_are_off_without_a_secret(client: TestClient, settings: Settings) -> None:
    resp = await client.post(
        "/rooms/hall/whep", data="v=0", headers={"Content-Type": "application/sdp"}
    )
    assert resp.status == 503 and (await resp.json())["error"] == "rooms_disabled"
