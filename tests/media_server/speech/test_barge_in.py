"""BargeIn on a real PacedSpeech (a scripted engine): pause, resume, cancel, settings."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from media_server.audio.encoder import StreamEncoder
from media_server.audio.frames import FRAME_MS
from media_server.audio.opus import OpusSettings
from media_server.config import ConfigError, Settings, settings_from_env
from media_server.listening.caller_audio import VoiceActivity
from media_server.speech.barge_in import BargeIn, BargeInMode, BargeInPolicy, barge_in_request
from media_server.speech.paced import PacedSpeech
from media_server.speech.protocol import ProtocolError
from synthesis import SynthesisRequest, SynthesisService
from synthesis.testing import ScriptedEngine


class SteppedClock:
    """Time moves only when the test says: a timer fires exactly when it is stepped past."""

    def __init__(self) -> None:
        self.t = 100.0
        self._moved = asyncio.Condition()

    def now(self) -> float:
        return self.t

    async def sleep_until(self, deadline: float) -> None:
        async with self._moved:
            await self._moved.wait_for(lambda: self.t >= deadline)

    async def advance(self, seconds: float) -> None:
        async with self._moved:
            self.t += seconds
            self._moved.notify_all()
        for _ in range(3):
            await asyncio.sleep(0)


def voice(participant: str, speaking: bool) -> VoiceActivity:
    return VoiceActivity(participant, speaking, 0, 0.0)


async def setup(
    mode: BargeInMode, min_speech_ms: int = 400
) -> tuple[PacedSpeech, BargeIn, SteppedClock, list[dict[str, Any]]]:
    events: list[dict[str, Any]] = []
    speech = PacedSpeech(
        SynthesisService(ScriptedEngine(chunk_s=0.2, chunks=5), 4),  # 1 s: 50 frames
        StreamEncoder(OpusSettings()),
        lambda event: events.append(event.as_dict()),
    )
    speech.start()
    clock = SteppedClock()
    barge_in = BargeIn(speech, clock, BargeInPolicy(mode, min_speech_ms))
    speech.queue.say(SynthesisRequest(text="one two three four five"), "a")
    for _ in range(500):
        if speech.buffered_frames >= 50:
            break
        await asyncio.sleep(0.005)
    return speech, barge_in, clock, events


def play(speech: PacedSpeech, ticks: int, at: list[int]) -> list[bytes | None]:
    out = []
    for _ in range(ticks):
        out.append(speech.next_payload(at[0]))
        at[0] += 960
    return out


def kinds(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in events]


async def test_pause_then_long_speech_cancels_with_what_was_heard() -> None:
    speech, barge_in, clock, events = await setup(BargeInMode.PAUSE)
    pts = [0]
    assert all(play(speech, 20, pts))
    barge_in.voice_activity(voice("caller", True))
    assert play(speech, 5, pts) == [None] * 5  # silent from the very next tick
    paused = events[-1]
    assert paused == {
        "type": "speech.paused",
        "id": "a",
        "played_ms": 20 * FRAME_MS,
        "heard_text": "one two",  # 400 of 1000 ms: 9.2 of 23 characters
        "stream_ts": 0,
        "end_ts": 20 * 960,
    }
    await clock.advance(0.399)
    assert kinds(events)[-1] == "speech.paused" and barge_in.interrupting
    await clock.advance(0.002)
    cancelled = events[-1]
    assert cancelled["type"] == "speech.cancelled"
    assert (cancelled["played_ms"], cancelled["heard_text"]) == (400, "one two")
    assert not speech.paused and not barge_in.interrupting
    barge_in.voice_activity(voice("caller", False))  # changes nothing now
    assert kinds(events) == ["speech.started", "speech.paused", "speech.cancelled"]
    await barge_in.aclose()
    await speech.aclose()


async def test_a_short_burst_resumes_the_same_utterance_where_it_paused() -> None:
    speech, barge_in, clock, events = await setup(BargeInMode.PAUSE)
    pts = [0]
    first = play(speech, 20, pts)
    barge_in.voice_activity(voice("caller", True))
    assert play(speech, 10, pts) == [None] * 10
    await clock.advance(0.2)
    barge_in.voice_activity(voice("caller", False))
    assert events[-1] == {"type": "speech.resumed", "id": "a", "played_ms": 400}
    rest = [p for p in play(speech, 40, pts) if p is not None]
    assert len(first) + len(rest) == 50  # no frame lost, none twice
    done = [e for e in events if e["type"] == "speech.done"]
    assert done and done[0]["duration_ms"] == 1000
    await clock.advance(1.0)  # the decision was dropped with the burst
    assert "speech.cancelled" not in kinds(events)
    assert barge_in.short_bursts == 1 and barge_in.cancels == 0
    await barge_in.aclose()
    await speech.aclose()


async def test_cancel_mode_plays_on_until_the_decision() -> None:
    speech, barge_in, clock, events = await setup(BargeInMode.CANCEL, min_speech_ms=300)
    pts = [0]
    play(speech, 10, pts)
    barge_in.voice_activity(voice("caller", True))
    assert all(play(speech, 10, pts))  # no pause in this mode
    await clock.advance(0.3)
    cancelled = events[-1]
    assert (cancelled["type"], cancelled["played_ms"]) == ("speech.cancelled", 400)
    assert "speech.paused" not in kinds(events)
    await barge_in.aclose()
    await speech.aclose()


async def test_cancel_mode_ignores_a_short_burst_and_off_ignores_everything() -> None:
    speech, barge_in, clock, events = await setup(BargeInMode.CANCEL)
    pts = [0]
    play(speech, 10, pts)
    barge_in.voice_activity(voice("caller", True))
    await clock.advance(0.1)
    barge_in.voice_activity(voice("caller", False))
    await clock.advance(1.0)
    barge_in.configure(BargeInPolicy(BargeInMode.OFF, 0))
    barge_in.voice_activity(voice("caller", True))
    await clock.advance(1.0)
    assert kinds(events) == ["speech.started"]
    assert all(play(speech, 10, pts))
    await barge_in.aclose()
    await speech.aclose()


async def test_an_interruption_lasts_while_any_caller_speaks() -> None:
    speech, barge_in, clock, events = await setup(BargeInMode.PAUSE, min_speech_ms=1000)
    pts = [0]
    play(speech, 10, pts)
    barge_in.voice_activity(voice("ann", True))
    barge_in.voice_activity(voice("bob", True))
    barge_in.voice_activity(voice("ann", False))
    assert speech.paused and kinds(events)[-1] == "speech.paused"
    barge_in.voice_activity(voice("bob", False))
    assert not speech.paused and kinds(events)[-1] == "speech.resumed"
    assert barge_in.interruptions == 1
    await barge_in.aclose()
    await speech.aclose()


async def test_a_silent_room_is_not_interrupted() -> None:
    speech, barge_in, clock, events = await setup(BargeInMode.PAUSE)
    speech.queue.cancel()
    events.clear()
    barge_in.voice_activity(voice("caller", True))
    assert not speech.paused and not barge_in.interrupting and events == []
    await barge_in.aclose()
    await speech.aclose()


def test_a_bots_barge_in_message() -> None:
    current = BargeInPolicy(BargeInMode.PAUSE, 400)

    def parsed(raw: str) -> BargeInPolicy:
        return barge_in_request(json.loads(raw), current)

    assert parsed('{"type": "barge_in", "mode": "cancel"}') == BargeInPolicy(
        BargeInMode.CANCEL, 400
    )
    assert parsed('{"type": "barge_in", "min_speech_ms": 250}') == (
        BargeInPolicy(BargeInMode.PAUSE, 250)
    )
    assert parsed('{"type": "barge_in"}') == current
    for bad in [
        '{"type": "barge_in", "mode": "loud"}',
        '{"type": "barge_in", "mode": null}',
        '{"type": "barge_in", "min_speech_ms": -1}',
        '{"type": "barge_in", "min_speech_ms": 400.5}',
        '{"type": "barge_in", "min_speech_ms": true}',
        '{"type": "barge_in", "min_speech_ms": 60000}',
        '{"type": "barge_in", "mode": "off", "threshold": 3}',
    ]:
        with pytest.raises(ProtocolError) as caught:
            parsed(bad)
        assert caught.value.code == "invalid_request" and caught.value.solution


def test_settings() -> None:
    assert BargeInPolicy.of(Settings()) == BargeInPolicy(BargeInMode.PAUSE, 400)
    env = {"VMS_BARGE_IN": "cancel", "VMS_BARGE_IN_MIN_SPEECH_MS": "250"}
    assert BargeInPolicy.of(settings_from_env(env)) == BargeInPolicy(BargeInMode.CANCEL, 250)
    with pytest.raises(ConfigError, match="barge_in must be one of"):
        settings_from_env({"VMS_BARGE_IN": "loud"})
    with pytest.raises(ConfigError, match="barge_in_min_speech_ms"):
        Settings(barge_in_min_speech_ms=-5)
