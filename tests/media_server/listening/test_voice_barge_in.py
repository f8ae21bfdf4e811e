"""Voice barge-in end to end: a real aiortc caller whose microphone plays a Piper sentence
(or a short piece of one) over a room's speech; the server's own VAD decides, the room
pauses, then cancels or resumes, and a real listener hears exactly that."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, Final

import aiohttp
import numpy as np
import numpy.typing as npt
import pytest
from aiohttp.test_utils import TestClient

from media_server.audio.frames import FRAME_MS, FRAME_SAMPLES
from media_server.config import Settings
from media_server.rooms.tokens import Role, TokenSigner
from signaling.keys import MEDIA_KEY
from synthesis import Engine
from tests.conftest import loopback_settings
from tests.media_server.listening.speech import spoken
from tests.media_server.listening.test_callers import MIC_RATE_HZ, Microphone
from tests.media_server.rooms.test_barge_in_room import LONG, bot_event, events_until, room
from tests.media_server.rooms.test_rooms import (
    SECRET,
    SILENT_RMS,
    SPEECH_RMS,
    Listener,
    join,
    wait_until_heard,
)

pytestmark = [pytest.mark.loopback, pytest.mark.slow]

LEAD_S: Final = 0.8
"""Silence the caller's microphone plays first: the room is well into its sentence."""
BURST_S: Final = 0.25
"""A cough-like burst: the VAD hears about 340 ms of it, under the 400 ms that cancels."""


@pytest.fixture
def settings() -> Settings:
    return loopback_settings(token_secret=SECRET)


@pytest.fixture
def signer() -> TokenSigner:
    return TokenSigner(SECRET.encode())


@pytest.fixture(scope="module")
def caller_sentence(piper_engine: Engine) -> npt.NDArray[np.int16]:
    return spoken(piper_engine, MIC_RATE_HZ, "Sorry to interrupt, but can I ask something?")


@pytest.fixture
async def bot(
    client: TestClient, signer: TokenSigner
) -> AsyncIterator[aiohttp.ClientWebSocketResponse]:
    token = signer.issue("hall", Role.BOT, "host-bot")
    async with client.ws_connect(f"/rooms/hall/bot?token={token}") as ws:
        assert (await ws.receive_json())["type"] == "ready"
        yield ws


def script(speech: npt.NDArray[np.int16]) -> Microphone:
    lead = np.zeros(int(LEAD_S * MIC_RATE_HZ), np.int16)
    tail = np.zeros(3 * MIC_RATE_HZ, np.int16)
    return Microphone(np.concatenate([lead, speech, tail]).astype(np.int16))


def barge_ins(client: TestClient, outcome: str) -> float:
    """``vms_barge_ins_total{outcome}`` as ``GET /metrics`` would show it."""
    registry = client.app[MEDIA_KEY].metrics.registry
    return registry.get_sample_value("vms_barge_ins_total", {"outcome": outcome}) or 0.0


async def call(
    client: TestClient, http: aiohttp.ClientSession, signer: TokenSigner, mic: Microphone
) -> Listener:
    caller = Listener(str(client.make_url("")).rstrip("/"))
    token = signer.issue("hall", Role.CALLER, "caller")
    await caller.connect(
        http, path="/rooms/hall/whep", headers={"Authorization": f"Bearer {token}"}, microphone=mic
    )
    return caller


async def test_a_caller_talking_over_the_room_pauses_then_cancels_it(
    client: TestClient,
    http: aiohttp.ClientSession,
    signer: TokenSigner,
    bot: Any,
    caller_sentence: npt.NDArray[np.int16],
) -> None:
    listener = await join(client, http, signer, "hall", "guest")
    await bot.send_json({"type": "say", "text": LONG, "id": "long"})
    started = await bot_event(bot, "speech.started")
    skipped_before = room(client).pacer.stats.skipped_frames
    underruns_before = room(client).speech.underruns
    caller = await call(client, http, signer, script(caller_sentence))

    paused = await bot_event(bot, "speech.paused")
    assert client.app[MEDIA_KEY].load().callers_speaking == 1  # vms_callers_speaking
    cancelled = await bot_event(bot, "speech.cancelled")  # it spoke for over 400 ms
    assert paused["id"] == cancelled["id"] == "long"
    assert cancelled["played_ms"] == paused["played_ms"]
    # the pause came with the caller's voice: after its silent lead-in, long before the end
    assert LEAD_S * 1000 - 200 <= paused["played_ms"] <= (LEAD_S + 1.5) * 1000 + 1000
    heard = paused["heard_text"]
    assert cancelled["heard_text"] == heard and heard and LONG.startswith(heard)
    assert LONG[len(heard) : len(heard) + 1] in ("", " ")  # whole words

    # the listener heard the sentence up to the pause, then silence
    start, stop = started["stream_ts"], paused["end_ts"]
    await wait_until_heard([listener], stop + 40 * FRAME_SAMPLES)
    skipped = room(client).pacer.stats.skipped_frames - skipped_before
    silent_ticks = room(client).speech.underruns - underruns_before
    received = listener.room_frames(start, stop)
    played_frames = paused["played_ms"] // FRAME_MS
    assert played_frames - skipped <= len(received) <= played_frames + silent_ticks
    assert np.mean(list(received.values())) > SPEECH_RMS
    after = listener.room_frames(stop + 2 * FRAME_SAMPLES, stop + 40 * FRAME_SAMPLES)
    assert len(after) >= 30 and max(after.values()) < SILENT_RMS
    assert room(client).barge_in.stats()["cancels"] == 1
    assert barge_ins(client, "cancelled") == 1 and barge_ins(client, "resumed") == 0
    async with asyncio.timeout(10):  # the caller's sentence ends: its VAD stops
        while client.app[MEDIA_KEY].load().callers_speaking:
            await asyncio.sleep(0.05)
    await caller.close(http)
    await listener.close(http)


async def test_a_short_burst_from_the_caller_resumes_the_reply(
    client: TestClient,
    http: aiohttp.ClientSession,
    signer: TokenSigner,
    bot: Any,
    caller_sentence: npt.NDArray[np.int16],
) -> None:
    listener = await join(client, http, signer, "hall", "guest")
    # the loudest 250 ms of the caller's sentence: a cough-like burst of voice
    window = int(BURST_S * MIC_RATE_HZ)
    energy = np.convolve(caller_sentence.astype(np.float64) ** 2, np.ones(window), "valid")
    at = int(np.argmax(energy))
    burst = caller_sentence[at : at + window]
    await bot.send_json({"type": "say", "text": LONG, "id": "reply"})
    await bot_event(bot, "speech.started")
    caller = await call(client, http, signer, script(burst))

    paused = await bot_event(bot, "speech.paused")
    events = await events_until(bot, "speech.done")  # events_until waits 20 s: LONG is ~10 s
    kinds = [e["type"] for e in events]
    assert "speech.cancelled" not in kinds and kinds.count("speech.resumed") == 1, kinds
    resumed = next(e for e in events if e["type"] == "speech.resumed")
    assert resumed["played_ms"] == paused["played_ms"]
    done = events[-1]
    made_ms = done["source_duration_ms"] - done["trimmed_ms"]
    assert abs(done["duration_ms"] - made_ms) <= FRAME_MS + 1  # the whole reply played
    await wait_until_heard([listener], done["end_ts"])
    assert room(client).barge_in.stats()["short_bursts"] == 1
    assert barge_ins(client, "resumed") == 1 and barge_ins(client, "cancelled") == 0
    await caller.close(http)
    await listener.close(http)
