"""Each object builds its own stats: a starving producer shows up as ``underruns``
in a room's, a listener's and a 1:1 session's stats (not only on the PacedSpeech)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from media_server.config import Settings
from media_server.playout.pacer import Pacer
from media_server.playout.stats import PacingStats
from media_server.rooms.room import ListenerSession, Room
from media_server.rooms.tokens import Claims, Role
from media_server.sessions.session import VoiceSession
from media_server.speech.paced import PacedSpeech
from media_server.speech.protocol import SayMessage
from media_server.speech.queue import START_FRAMES
from media_server.speech.talker import Talker
from synthesis import SynthesisRequest, SynthesisService
from synthesis.testing import FakeClock, ScriptedEngine

SILENCE = b"\xf8\xff\xfe"

PACING_KEYS = {
    "frames_sent",
    "speech_frames_sent",
    "underruns",
    "skipped_frames",
    "lateness_p50_ms",
    "lateness_p99_ms",
    "lateness_max_ms",
}


def slow_engine() -> ScriptedEngine:
    """20 ms of audio every 50 ms: playout overtakes synthesis."""
    return ScriptedEngine(chunk_s=0.02, chunks=20, delay_s=0.05)


async def starve(speaker: PacedSpeech, pacer: Pacer, clock: FakeClock) -> None:
    """Start an utterance, then tick the pacer faster than the engine produces."""
    speaker.queue.say(SynthesisRequest(text="slow"))
    async with asyncio.timeout(5):
        while speaker.buffered_frames < START_FRAMES:
            await asyncio.sleep(0.005)
    for _ in range(20):
        pacer.emit_due()
        clock.advance(0.02)
        await asyncio.sleep(0.001)
    assert speaker.underruns > 0


@pytest.fixture
async def room() -> AsyncIterator[Room]:
    clock = FakeClock()
    room = Room("hall", Settings(), SynthesisService(slow_engine(), 4), clock, SILENCE)
    room.speech.start()
    yield room
    await room.aclose()


async def test_a_starving_room_reports_its_underruns(room: Room) -> None:
    assert isinstance(room.clock, FakeClock)
    await starve(room.speech, room.pacer, room.clock)
    assert room.pacer.stats.snapshot().underruns == room.speech.underruns
    stats = room.stats()
    assert stats["underruns"] == room.speech.underruns > 0
    assert stats["room"] == "hall" and stats["participants"] == []
    assert stats["speaking"] is True and stats["queued_utterances"] == 1
    assert PACING_KEYS <= stats.keys()


async def test_a_listener_reports_its_rooms_underruns(room: Room) -> None:
    assert isinstance(room.clock, FakeClock)
    listener_id = "guest"
    listener = ListenerSession(
        listener_id, room, Claims("hall", Role.LISTENER, "guest-1", expires_at=0.0), lambda *_: None
    )
    room.listeners[listener_id] = listener
    try:
        await starve(room.speech, room.pacer, room.clock)
        stats = listener.stats()
        assert stats["underruns"] == room.speech.underruns > 0
        assert stats["room"] == "hall"
        assert stats["participants"] == [{"identity": "guest-1", "role": "listener"}]
        assert stats["connection_state"] == "new" and stats["dropped_frames"] == 0
        assert "queued_utterances" in stats and PACING_KEYS <= stats.keys()
    finally:
        room.listeners.pop(listener_id)
        await listener.aclose()


async def test_a_starving_session_reports_its_underruns() -> None:
    clock = FakeClock()
    session = VoiceSession(
        "s1", Settings(), SynthesisService(slow_engine(), 4), clock, SILENCE, lambda *_: None
    )
    session.speech.start()
    try:
        await starve(session.speech, session.pacer, clock)
        stats = session.stats()
        assert stats["underruns"] == session.speech.underruns > 0
        assert session.pacer.stats.snapshot().underruns == session.speech.underruns
        assert stats["session_id"] == "s1" and stats["connection_state"] == "new"
        assert {"queued_utterances", "dropped_frames"} <= stats.keys()
        assert PACING_KEYS <= stats.keys()
    finally:
        await session.aclose()


async def test_a_room_keeps_when_the_last_listener_got_each_frame(room: Room) -> None:
    assert isinstance(room.clock, FakeClock)
    await starve(room.speech, room.pacer, room.clock)
    stats = room.stats()
    assert stats["send_lateness_p99_ms"] >= 0 and stats["send_lateness_max_ms"] >= 0
    assert "send_lateness_p99_ms" not in PacingStats().snapshot().as_dict()


async def test_a_new_window_forgets_frames_lateness_and_underruns(room: Room) -> None:
    assert isinstance(room.clock, FakeClock)
    await starve(room.speech, room.pacer, room.clock)
    stats = room.pacer.stats
    stats.record(0.5, speech=True)
    assert stats.snapshot().lateness_max_ms == 500 and stats.underruns > 0
    stats.start_window()
    fresh = stats.snapshot()
    assert (fresh.frames_sent, fresh.speech_frames_sent, fresh.skipped_frames) == (0, 0, 0)
    assert fresh.underruns == 0 and fresh.lateness_max_ms == 0 and fresh.lateness_p99_ms == 0
    assert fresh.send_lateness_max_ms == 0 and stats.lateness_s().size == 0
    stats.record(0.002, speech=False)
    assert stats.snapshot().lateness_p99_ms == pytest.approx(2.0)
    assert stats.snapshot().frames_sent == 1


@dataclass
class Bot:
    identity: str
    events: list[dict[str, Any]] = field(default_factory=list)

    def send_text(self, text: str) -> None:
        self.events.append(json.loads(text))


async def test_a_rooms_speech_started_carries_the_timings_when_asked() -> None:
    clock = FakeClock()
    settings = Settings(debug_timings=True)
    room = Room("hall", settings, SynthesisService(slow_engine(), 4), clock, SILENCE)
    bot = Bot("bot-1")
    room.add_bot(bot)
    room.speech.start()
    try:
        talker = Talker(bot.identity, None, settings, clock)
        room.handle(SayMessage(SynthesisRequest(text="hello"), "u1"), talker, cancel_everyone=False)
        async with asyncio.timeout(5):
            while room.speech.buffered_frames < START_FRAMES:
                await asyncio.sleep(0.005)
        room.pacer.emit_due()
    finally:
        await room.aclose()
    started = next(e for e in bot.events if e["type"] == "speech.started")
    assert started["owner"] == "bot-1" and started["id"] == "u1"
    assert None not in started["timings"].values()
