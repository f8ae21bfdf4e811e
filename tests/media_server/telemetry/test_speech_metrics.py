"""PacedSpeech and its queue on the server's metrics: scripted engine, real Opus encoder."""

from __future__ import annotations

import asyncio

from media_server.audio.encoder import StreamEncoder
from media_server.audio.opus import OpusSettings
from media_server.speech.paced import PacedSpeech
from media_server.speech.queue import START_FRAMES, monotonic_ms
from media_server.telemetry.metrics import ServerMetrics, SpeechKind
from synthesis import SynthesisRequest, SynthesisService
from synthesis.testing import ScriptedEngine

ROOM = {"kind": "room"}


def make(engine: ScriptedEngine, metrics: ServerMetrics) -> PacedSpeech:
    speaker = PacedSpeech(
        SynthesisService(engine, 4),
        StreamEncoder(OpusSettings()),
        lambda event: None,
        metrics=metrics,
        kind=SpeechKind.ROOM,
    )
    speaker.start()
    return speaker


def value(metrics: ServerMetrics, name: str, labels: dict[str, str] | None = None) -> float:
    found = metrics.registry.get_sample_value(name, labels or {})
    return 0.0 if found is None else found


async def play(speaker: PacedSpeech, ticks: int) -> None:
    for i in range(ticks):
        speaker.next_payload(i * 960)
        await asyncio.sleep(0.001)


async def wait_buffered(speaker: PacedSpeech, frames: int) -> None:
    async with asyncio.timeout(5):
        while speaker.buffered_frames < frames:
            await asyncio.sleep(0.005)


async def test_underruns_and_an_utterance_played_to_its_end() -> None:
    metrics = ServerMetrics()
    speaker = make(ScriptedEngine(chunk_s=0.02, chunks=20, delay_s=0.05), metrics)
    said = speaker.queue.say(SynthesisRequest(text="slow"))
    said.timings.received_ms = monotonic_ms()
    await wait_buffered(speaker, START_FRAMES)
    await play(speaker, 20)
    assert value(metrics, "vms_pacer_underruns_total") == speaker.underruns > 0
    assert value(metrics, "vms_utterances_started_total", ROOM) == 1
    assert value(metrics, "vms_text_to_first_rtp_seconds_count", ROOM) == 1
    async with asyncio.timeout(10):
        while speaker.speaking:
            await play(speaker, 10)
    assert value(metrics, "vms_utterances_done_total", ROOM) == 1
    assert value(metrics, "vms_utterances_cancelled_total", ROOM) == 0
    await speaker.aclose()


async def test_a_cancelled_utterance_counts_what_it_played() -> None:
    metrics = ServerMetrics()
    speaker = make(ScriptedEngine(chunk_s=0.2, chunks=5), metrics)
    speaker.queue.say(SynthesisRequest(text="long"))  # no received_ms: no first-RTP sample
    speaker.queue.say(SynthesisRequest(text="queued"))
    await wait_buffered(speaker, 20)
    await play(speaker, 10)
    assert len(speaker.queue.cancel()) == 2
    assert value(metrics, "vms_utterances_cancelled_total", ROOM) == 2
    assert value(metrics, "vms_cancelled_played_seconds_count", ROOM) == 2
    assert value(metrics, "vms_cancelled_played_seconds_sum", ROOM) == 0.2  # 10 frames, and 0
    assert value(metrics, "vms_text_to_first_rtp_seconds_count", ROOM) == 0
    assert value(metrics, "vms_utterances_done_total", ROOM) == 0
    # a closed stream drops what it has silently: nothing is counted
    speaker.queue.say(SynthesisRequest(text="dropped"))
    await speaker.aclose()
    assert value(metrics, "vms_utterances_cancelled_total", ROOM) == 2
