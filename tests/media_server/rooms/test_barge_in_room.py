"""Barge-in in a real room: a real aiortc listener, a bot over the WebSocket, the real
Piper voice; the caller's voice activity is fed to the room's BargeIn as the caller
path would (the inbound media path is tested on its own)."""

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
from media_server.listening.caller_audio import VoiceActivity
from media_server.rooms.room import Room
from media_server.rooms.tokens import Role, TokenSigner
from media_server.speech.queue import monotonic_ms
from signaling.keys import MEDIA_KEY
from tests.conftest import loopback_settings
from tests.media_server.rooms.test_rooms import (
    SECRET,
    SENTENCE,
    SILENT_RMS,
    SPEECH_RMS,
    join,
    wait_until_heard,
)
from voice_bot import BotError, RoomBot

pytestmark = [pytest.mark.loopback, pytest.mark.slow]

LONG = (
    SENTENCE + " After that we will talk about the weather, the trains and the plans for the"
    " weekend, one after another, slowly."
)


@pytest.fixture
def settings() -> Settings:
    return loopback_settings(token_secret=SECRET)


@pytest.fixture
def signer() -> TokenSigner:
    return TokenSigner(SECRET.encode())


@pytest.fixture
async def bot(
    client: TestClient, signer: TokenSigner
) -> AsyncIterator[aiohttp.ClientWebSocketResponse]:
    token = signer.issue("hall", Role.BOT, "host-bot")
    async with client.ws_connect(f"/rooms/hall/bot?token={token}") as ws:
        assert (await ws.receive_json())["type"] == "ready"
        yield ws


async def events_until(ws: aiohttp.ClientWebSocketResponse, kind: str) -> list[dict[str, Any]]:
    """The bot's events up to and including the first ``kind``."""
    events: list[dict[str, Any]] = []
    async with asyncio.timeout(20):
        while not events or events[-1]["type"] != kind:
            events.append(json.loads((await ws.receive()).data))
    return events


async def bot_event(ws: aiohttp.ClientWebSocketResponse, kind: str) -> dict[str, Any]:
    return (await events_until(ws, kind))[-1]


def room(client: TestClient) -> Room:
    return client.app[MEDIA_KEY].rooms.rooms["hall"]


def caller_voice(client: TestClient, speaking: bool) -> None:
    """What the caller's VAD tells the room's sinks at speech onset and end."""
    room(client).barge_in.voice_activity(VoiceActivity("caller", speaking, 0, monotonic_ms()))


async def configure(bot: aiohttp.ClientWebSocketResponse, **fields: Any) -> dict[str, Any]:
    await bot.send_json({"type": "barge_in", **fields})
    return await bot_event(bot, "barge_in")


async def test_a_long_interruption_pauses_at_once_then_cancels_with_the_words_heard(
    client: TestClient, http: aiohttp.ClientSession, signer: TokenSigner, bot: Any
) -> None:
    listener = await join(client, http, signer, "hall", "guest")
    assert await configure(bot, min_speech_ms=300) == {
        "type": "barge_in",
        "mode": "pause",  # VMS_BARGE_IN's default
        "min_speech_ms": 300,
    }
    await bot.send_json({"type": "say", "text": LONG, "id": "long"})
    started = await bot_event(bot, "speech.started")
    underruns_before = room(client).speech.underruns
    skipped_before = room(client).pacer.stats.skipped_frames
    await wait_until_heard([listener], started["stream_ts"] + 75 * FRAME_SAMPLES)
    caller_voice(client, True)
    paused = await bot_event(bot, "speech.paused")
    cancelled = await bot_event(bot, "speech.cancelled")  # the caller spoke on past 300 ms
    caller_voice(client, False)
    assert paused["id"] == cancelled["id"] == "long"
    assert cancelled["played_ms"] == paused["played_ms"] >= 75 * FRAME_MS
    assert cancelled["end_ts"] == paused["end_ts"]
    heard = paused["heard_text"]
    assert cancelled["heard_text"] == heard and heard and LONG.startswith(heard)
    # whole words, about as many as that much speech says (Piper: ~15 characters a second)
    assert LONG[len(heard) : len(heard) + 1] in ("", " ")
    assert 5 <= len(heard) / (paused["played_ms"] / 1000) <= 30
    assert (await listener.next_event("speech.paused"))["heard_text"] == heard
    # what the listener received: every frame up to the pause, then silence
    start, stop = started["stream_ts"], paused["end_ts"]
    await wait_until_heard([listener], stop + 30 * FRAME_SAMPLES)
    silent_ticks = room(client).speech.underruns - underruns_before
    skipped = room(client).pacer.stats.skipped_frames - skipped_before
    received = listener.room_frames(start, stop)
    played_frames = paused["played_ms"] // FRAME_MS
    assert played_frames - skipped <= len(received) <= played_frames + silent_ticks
    assert np.mean(list(received.values())) > SPEECH_RMS
    after = listener.room_frames(stop + 2 * FRAME_SAMPLES, stop + 30 * FRAME_SAMPLES)
    assert len(after) >= 20 and max(after.values()) < SILENT_RMS
    await listener.close(http)


async def test_a_short_burst_resumes_the_utterance_where_it_paused(
    client: TestClient, http: aiohttp.ClientSession, signer: TokenSigner, bot: Any
) -> None:
    listener = await join(client, http, signer, "hall", "guest")
    await bot.send_json({"type": "say", "text": SENTENCE, "id": "reply"})
    started = await bot_event(bot, "speech.started")
    underruns_before = room(client).speech.underruns
    await wait_until_heard([listener], started["stream_ts"] + 40 * FRAME_SAMPLES)
    caller_voice(client, True)  # a cough: 150 ms, under the 400 ms default
    paused = await bot_event(bot, "speech.paused")
    await asyncio.sleep(0.15)
    caller_voice(client, False)
    events = await events_until(bot, "speech.done")
    resumed, done = events[0], events[-1]
    assert [e["type"] for e in events] == ["speech.resumed", "speech.done"]
    assert resumed == {"type": "speech.resumed", "id": "reply", "played_ms": paused["played_ms"],
                       "owner": "host-bot"}  # fmt: skip
    # the whole utterance went out: all the engine made, nothing dropped, nothing twice
    made_ms = done["source_duration_ms"] - done["trimmed_ms"]
    assert abs(done["duration_ms"] - made_ms) <= FRAME_MS + 1  # to the frame
    # the listener: speech up to the pause, a silent gap as long as the burst, the rest
    await wait_until_heard([listener], done["end_ts"])
    silent_ticks = room(client).speech.underruns - underruns_before
    span_frames = (done["end_ts"] - started["stream_ts"]) // FRAME_SAMPLES
    gap_frames = span_frames - done["duration_ms"] // FRAME_MS - silent_ticks
    assert gap_frames >= 150 // FRAME_MS
    stop = paused["end_ts"]
    gap = listener.room_frames(stop + 2 * FRAME_SAMPLES, stop + (gap_frames - 1) * FRAME_SAMPLES)
    assert gap and max(gap.values()) < SILENT_RMS
    rest = listener.room_frames(stop + gap_frames * FRAME_SAMPLES, done["end_ts"])
    assert len(rest) >= (done["duration_ms"] - paused["played_ms"]) // FRAME_MS - 2
    assert np.mean(list(rest.values())) > SPEECH_RMS
    kinds = [e["type"] for _, e in listener.events]
    assert kinds.index("speech.paused") < kinds.index("speech.resumed")
    await listener.close(http)


async def test_off_leaves_speech_alone_and_bad_settings_are_refused(
    client: TestClient, bot: Any
) -> None:
    for bad, field in [
        ({"mode": "shout"}, "'mode'"),
        ({"min_speech_ms": "400"}, "'min_speech_ms'"),
        ({"min_speech_ms": 99999}, "'min_speech_ms'"),
        ({"mode": "off", "volume": 3}, "'volume'"),
    ]:
        await bot.send_json({"type": "barge_in", **bad})
        error = await bot_event(bot, "error")
        assert error["error"] == "invalid_request" and field in error["message"]
    assert room(client).barge_in.policy.mode == "pause"  # unchanged
    assert (await configure(bot, mode="off"))["mode"] == "off"
    await bot.send_json({"type": "say", "text": "Nobody can stop me now.", "id": "calm"})
    await bot_event(bot, "speech.started")
    caller_voice(client, True)
    events = await events_until(bot, "speech.done")
    caller_voice(client, False)
    assert [e["type"] for e in events] == ["speech.done"]
    assert room(client).stats()["barge_in"] == {
        "mode": "off",
        "min_speech_ms": 400,
        "interruptions": 0,
        "cancels": 0,
        "short_bursts": 0,
    }


async def test_a_room_bot_sets_the_rooms_barge_in(client: TestClient, signer: TokenSigner) -> None:
    base_url = str(client.make_url("")).rstrip("/")
    async with RoomBot(base_url, "hall", signer.issue("hall", Role.BOT, "agent")) as agent:
        setting = await agent.barge_in("cancel", 250)
        assert setting == {"type": "barge_in", "mode": "cancel", "min_speech_ms": 250}
        assert (await agent.barge_in(min_speech_ms=500))["mode"] == "cancel"
        with pytest.raises(BotError, match="invalid_request"):
            await agent.barge_in("loudly")
        assert room(client).barge_in.policy.min_speech_ms == 500
