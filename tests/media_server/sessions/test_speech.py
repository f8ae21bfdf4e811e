"""End to end over loopback: WHEP over HTTP, `say` on the data channel, Opus RTP decoded.

Real parts only: the embedded Piper voice, real aiortc peers on 127.0.0.1, real Opus.
Received frames carry their stream position (``pts``, 48 kHz samples; the first
RTP packet of a session is position 0), the same clock as the ``stream_ts``
fields of the server's events, so the test can line up audio and events.
"""

from __future__ import annotations

import asyncio
import gc
import time
import weakref
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import numpy as np
import pytest
from aiohttp.test_utils import TestClient

from media_server.audio.frames import FRAME_MS, FRAME_SAMPLES
from media_server.audio.opus import WIDEBAND_MAX_COMPLEXITY, OpusSettings
from media_server.config import Settings
from signaling.keys import MEDIA_KEY
from tests.conftest import loopback_settings
from tests.whep_client import WhepClient

pytestmark = [pytest.mark.loopback, pytest.mark.slow]

SILENT_RMS = 10.0
"""-70 dBFS: decoded silence is zero but for the decoder's decaying tail after a cut."""
SPEECH_RMS = 300.0
"""Piper's normalised voice is far louder than this on average."""

SENTENCE = "The quick brown fox jumps over the lazy dog, and then it takes a well earned nap."
LONG_TEXT = " ".join(
    [
        "This is a long paragraph that the server will speak for many seconds.",
        "It keeps going, sentence after sentence, so that there is time to cancel it.",
        "Nobody should hear this third sentence, because the test cancels before it.",
        "And certainly nobody should hear this fourth one either.",
    ]
)


@pytest.fixture
async def voice(client: TestClient, http: aiohttp.ClientSession) -> AsyncIterator[WhepClient]:
    peer = WhepClient(str(client.make_url("")).rstrip("/"))
    await peer.connect(http)
    yield peer
    await peer.close(http)


async def server_stats(peer: WhepClient, http: aiohttp.ClientSession) -> dict[str, Any]:
    """The session's pacing stats: ``underruns`` (silent ticks inside an utterance
    because encoding fell behind) and ``skipped_frames`` (ticks the pacer skipped
    after a stall) are what may legitimately separate frames from positions."""
    async with http.get(f"{peer.base_url}{peer.location}/stats") as resp:
        assert resp.status == 200
        stats: dict[str, Any] = await resp.json()
        return stats


async def wait_frames_until(peer: WhepClient, pts: int, wait_s: float = 5.0) -> None:
    async with asyncio.timeout(wait_s):
        while not peer.frames or peer.frames[-1].pts < pts:
            await asyncio.sleep(0.02)


@pytest.mark.parametrize(
    "settings",
    [loopback_settings(), loopback_settings(opus=OpusSettings(complexity=1))],
    ids=["fullband", "complexity-1-wideband"],
)
async def test_say_is_heard_with_the_duration_the_engine_produced(
    client: TestClient, voice: WhepClient, http: aiohttp.ClientSession, settings: Settings
) -> None:
    """At complexity 1 the stream's encoder takes 16 kHz (the band libopus codes
    there anyway); what the listener hears must not change."""
    voice.say(SENTENCE, "s1")
    started = await voice.next_event()
    assert started["type"] == "speech.started" and started["id"] == "s1"
    done = await voice.next_event()
    assert done["type"] == "speech.done" and done["id"] == "s1"
    start_ts, end_ts = started["stream_ts"], done["end_ts"]
    assert done["stream_ts"] == start_ts
    await wait_frames_until(voice, end_ts + 10 * FRAME_SAMPLES)

    # What the engine produced (at 22.05 kHz), less the near-silent lead-in the
    # server trims, is what was sent, to the frame.
    assert done["source_duration_ms"] > 2000
    assert 0 <= done["trimmed_ms"] < done["source_duration_ms"] / 2
    heard_ms = done["source_duration_ms"] - done["trimmed_ms"]
    assert abs(done["duration_ms"] - heard_ms) <= FRAME_MS + 1

    before = voice.frames_between(0, start_ts)
    during = voice.frames_between(start_ts, end_ts)
    after = voice.frames_between(end_ts, end_ts + 10 * FRAME_SAMPLES)
    # Every frame of the utterance arrived, none missing, none extra: its span is
    # its duration, plus any silent ticks the server counted as underruns.
    stats = await server_stats(voice, http)
    speech_frames = done["duration_ms"] // FRAME_MS
    assert speech_frames <= len(during) <= speech_frames + stats["underruns"]
    if stats["skipped_frames"] == 0:
        assert [f.pts for f in during] == list(range(start_ts, end_ts, FRAME_SAMPLES))
    # silence before speech.started's position, speech during, silence after
    assert before and max(f.rms for f in before) < SILENT_RMS
    assert np.mean([f.rms for f in during]) > SPEECH_RMS
    loud = [f for f in during if f.rms > SPEECH_RMS]
    assert len(loud) > 0.5 * len(during)
    assert max(f.rms for f in after) < SILENT_RMS
    assert voice.location is not None
    session = client.app[MEDIA_KEY].sessions.get(voice.location.rsplit("/", 1)[-1])
    assert session is not None and session.speech.encoder.current is not None
    wideband = settings.opus.complexity <= WIDEBAND_MAX_COMPLEXITY
    assert session.speech.encoder.current.input_rate_hz == (16_000 if wideband else 48_000)


async def test_cancel_silences_within_a_frame_and_reports_played_time(
    voice: WhepClient, http: aiohttp.ClientSession
) -> None:
    voice.say(LONG_TEXT, "long")
    voice.say("This queued sentence is dropped by the cancel.", "queued")
    started = await voice.next_event("speech.started")
    await wait_frames_until(voice, started["stream_ts"] + 40 * FRAME_SAMPLES)
    voice.cancel()
    cancelled = await voice.next_event()
    assert cancelled["type"] == "speech.cancelled" and cancelled["id"] == "long"
    dropped = await voice.next_event()
    assert dropped == {
        "type": "speech.cancelled",
        "id": "queued",
        "played_ms": 0,
        "stream_ts": None,
        "end_ts": None,
    }
    played_ms = cancelled["played_ms"]
    assert 800 <= played_ms < 5000
    assert cancelled["stream_ts"] == started["stream_ts"]
    stop_ts = cancelled["end_ts"]
    await wait_frames_until(voice, stop_ts + 25 * FRAME_SAMPLES)
    played = voice.frames_between(started["stream_ts"], stop_ts)
    # played_ms is the speech sent; its span also holds any underrun ticks
    underruns = (await server_stats(voice, http))["underruns"]
    assert played_ms // FRAME_MS <= len(played) <= played_ms // FRAME_MS + underruns
    assert np.mean([f.rms for f in played]) > SPEECH_RMS
    # Silent within one frame: the frame at the reported position may still hold
    # Opus's 6.5 ms algorithmic-delay tail of the last speech frame; from the next
    # frame on the stream is silence, and it stays silent.
    after = voice.frames_between(stop_ts + FRAME_SAMPLES, stop_ts + 25 * FRAME_SAMPLES)
    assert len(after) == 24
    assert max(f.rms for f in after) < SILENT_RMS
    # nothing else was queued: no more speech events arrive
    with pytest.raises(TimeoutError):
        await voice.next_event(wait_s=0.5)


async def test_says_queue_in_order(voice: WhepClient) -> None:
    # each is long enough to cover the synthesis of the next on a busy runner
    texts = [
        "First, a sentence that is long enough to cover the next one.",
        "Second, another one of about the same length, as you hear.",
        "Third and last.",
    ]
    for i, text in enumerate(texts):
        voice.say(text, f"q{i}")
    events = [await voice.next_event() for _ in range(6)]
    assert [(e["type"], e["id"]) for e in events] == [
        ("speech.started", "q0"),
        ("speech.done", "q0"),
        ("speech.started", "q1"),
        ("speech.done", "q1"),
        ("speech.started", "q2"),
        ("speech.done", "q2"),
    ]
    # back to back: each starts where the previous ended
    for done, nxt in [(events[1], events[2]), (events[3], events[4])]:
        assert nxt["stream_ts"] == done["end_ts"]


async def test_bad_messages_get_error_events_and_the_session_stays_up(
    voice: WhepClient,
) -> None:
    voice.send_raw("this is not json")
    assert (await voice.next_event())["error"] == "invalid_json"
    voice.send_raw('{"type": "shout", "text": "hi"}')
    assert (await voice.next_event())["error"] == "unknown_type"
    voice.say("x" * 2001, "too-long")
    error = await voice.next_event()
    assert error == {
        "type": "error",
        "error": "text_too_long",
        "message": "'text': has 2001 characters; the limit is 2000",
        "solution": "split the text into several requests",
        "id": "too-long",
    }
    voice.send_raw("{" * 20000)
    assert (await voice.next_event())["error"] == "message_too_large"
    voice.say("Still here.", "ok")
    assert (await voice.next_event())["type"] == "speech.started"
    assert (await voice.next_event())["type"] == "speech.done"


@pytest.mark.parametrize("settings", [loopback_settings(say_burst=3, say_rate_per_s=0.5)])
async def test_say_rate_limit(voice: WhepClient, settings: Settings) -> None:
    for i in range(4):
        voice.say("Hi.", f"r{i}")
    events = [await voice.next_event() for _ in range(7)]
    errors = [e for e in events if e["type"] == "error"]
    assert [(e["error"], e["id"]) for e in errors] == [("rate_limited", "r3")]


async def test_delete_frees_the_session(
    client: TestClient, voice: WhepClient, http: aiohttp.ClientSession
) -> None:
    registry = client.app[MEDIA_KEY].sessions
    assert len(registry) == 1
    voice.say(LONG_TEXT)
    await voice.next_event("speech.started")
    async with http.delete(f"{voice.base_url}{voice.location}") as resp:
        assert resp.status == 200
    assert len(registry) == 0


@pytest.mark.parametrize("settings", [loopback_settings(idle_timeout_s=2.0)])
async def test_closed_session_is_not_kept_alive(
    client: TestClient, voice: WhepClient, http: aiohttp.ClientSession, settings: Settings
) -> None:
    """Nothing the server keeps (the idle sweeper's loop included) holds a closed session."""
    registry = client.app[MEDIA_KEY].sessions
    (session,) = registry.sessions()
    closed = weakref.ref(session)
    del session
    await asyncio.sleep(0.6)  # the sweeper (every 0.5 s here) has looked at the session
    async with http.delete(f"{voice.base_url}{voice.location}") as resp:
        assert resp.status == 200
    await asyncio.sleep(0.6)  # and has looked again, with no session left to see
    gc.collect()
    assert closed() is None


@pytest.mark.parametrize("settings", [loopback_settings(idle_timeout_s=0.6)])
async def test_idle_session_is_closed(
    client: TestClient, voice: WhepClient, settings: Settings
) -> None:
    registry = client.app[MEDIA_KEY].sessions
    assert len(registry) == 1
    async with asyncio.timeout(5):
        while len(registry):
            await asyncio.sleep(0.05)


async def test_peer_that_goes_away_is_cleaned_up(client: TestClient, voice: WhepClient) -> None:
    registry = client.app[MEDIA_KEY].sessions
    assert len(registry) == 1
    await voice.pc.close()  # no DELETE: the server notices the peer is gone
    async with asyncio.timeout(10):
        while len(registry):
            await asyncio.sleep(0.05)


@pytest.mark.parametrize("settings", [loopback_settings(debug_timings=True)])
async def test_debug_timings_and_a_stats_window_over_real_http(
    client: TestClient, voice: WhepClient, http: aiohttp.ClientSession, settings: Settings
) -> None:
    """What the benchmarks read: the server's stamps, on this process's monotonic clock,
    and pacing figures that start again from ``POST /stats/window``."""
    said_ms = time.monotonic() * 1000
    voice.say("Hello there.", "t1")
    started = await voice.next_event()
    assert started["type"] == "speech.started"
    stamps = list(started["timings"].values())
    assert len(stamps) == 5 and stamps == sorted(stamps)
    assert said_ms <= stamps[0] and stamps[-1] <= time.monotonic() * 1000
    async with http.post(f"{voice.base_url}/stats/window") as resp:
        assert resp.status == 200 and (await resp.json())["sessions"] == 1
    async with http.get(f"{voice.base_url}/stats") as resp:
        stats = await resp.json()
    assert "per_session" not in stats  # no operator token: no session ids
    window = await server_stats(voice, http)
    assert window["frames_sent"] < 10


@pytest.mark.parametrize("settings", [loopback_settings(synthesis_workers=1)])
async def test_a_say_that_finds_the_engine_busy_waits_and_is_spoken(
    client: TestClient, voice: WhepClient, http: aiohttp.ClientSession, settings: Settings
) -> None:
    """One synthesis slot, two sessions saying at once: the second is queued (with its
    place), not refused, and both are heard; server_ms splits each one's wait."""
    other = WhepClient(voice.base_url)
    await other.connect(http)
    try:
        # far longer than the 5 s buffered ahead: its synthesis holds the slot until cancelled
        voice.say(" ".join(["A sentence of some length, so that it plays a while."] * 8), "first")
        assert (await voice.next_event())["type"] == "speech.started"
        other.say("And then the second one.", "second")
        queued = await other.next_event()
        assert queued == {"type": "speech.queued", "id": "second", "position": 1}
        voice.cancel()  # frees the slot: the second is spoken at once
        assert (await voice.next_event())["type"] == "speech.cancelled"
        started = await other.next_event()
        assert started["type"] == "speech.started" and started["id"] == "second"
        stages = started["server_ms"]
        assert stages["synthesis"] <= stages["first_chunk"] <= stages["sent"]
        assert (await other.next_event())["type"] == "speech.done"
        async with http.get(f"{voice.base_url}/stats") as resp:
            synthesis = (await resp.json())["synthesis"]
        assert synthesis["queued_total"] == 1 and synthesis["refused_total"] == 0
    finally:
        await other.close(http)
