"""A caller's read loop: a sender that goes silent mid-speech (no packets) ends the
speech after the VAD's minimum silence; cancelling the loop frees it."""

from __future__ import annotations

import asyncio

import numpy as np
import numpy.typing as npt
import pytest

from media_server.audio.budget import EncodeBudget
from media_server.config import Settings
from media_server.listening.caller_input import CallerInput
from media_server.rtc.inbound import InboundChunk
from synthesis import Engine
from tests.media_server.listening.speech import spoken
from tests.media_server.listening.test_callers import Sink

RATE_48K = 48_000
CHUNK = 960


class Packets:
    """Stands in for :class:`InboundAudio`: the chunks, then nothing (a sender that
    stopped sending without leaving)."""

    def __init__(self, pcm: npt.NDArray[np.int16]) -> None:
        self._chunks = [
            InboundChunk(offset, RATE_48K, pcm[offset : offset + CHUNK])
            for offset in range(0, pcm.size - CHUNK + 1, CHUNK)
        ]
        self.drained = asyncio.Event()

    async def read(self) -> InboundChunk | None:
        if self._chunks:
            return self._chunks.pop(0)
        self.drained.set()
        await asyncio.Event().wait()
        return None


@pytest.fixture(scope="module")
def sentence(piper_engine: Engine) -> npt.NDArray[np.int16]:
    return spoken(piper_engine, RATE_48K)


async def test_no_packets_mid_speech_end_it_and_cancel_frees_the_loop(
    sentence: npt.NDArray[np.int16],
) -> None:
    settings = Settings(vad_min_silence_ms=300)
    sink = Sink()
    caller = CallerInput("m7", sink, settings)
    assert caller.stats() == {"member": "m7", "receiving": False}
    lead = np.zeros(RATE_48K // 2, np.int16)
    packets = Packets(np.concatenate([lead, sentence[: sentence.size // 2]]))
    task = asyncio.get_running_loop().create_task(caller.run(packets))  # type: ignore[arg-type]
    await asyncio.wait_for(packets.drained.wait(), 5)
    assert [a.speaking for a in sink.activity] == [True]  # cut off mid-sentence
    async with asyncio.timeout(2):
        while len(sink.activity) < 2:
            await asyncio.sleep(0.02)
    stop = sink.activity[1]
    assert not stop.speaking and stop.participant == "m7"
    stats = caller.stats()
    assert stats["receiving"] and not stats["speaking"] and stats["frames"] == len(sink.frames)
    assert stop.position <= stats["position_ms"] * 16
    task.cancel()
    await asyncio.wait([task])
    assert task.cancelled() and len(sink.activity) == 2  # no second stop


async def test_what_a_caller_costs_the_loop_counts_in_the_encode_budget(
    sentence: npt.NDArray[np.int16],
) -> None:
    """Mono, resampling and VAD run on the loop: the budget that sets every stream's Opus
    complexity sees that time as load, as it sees encoding."""
    times = iter([0.0, 2.0])  # the window opens at 0 s; the next report comes 2 s later
    budget = EncodeBudget(0.5, now=lambda: next(times, 2.0))
    sink = Sink()
    caller = CallerInput("m8", sink, Settings(), budget=budget)
    packets = Packets(sentence[: RATE_48K // 2])
    task = asyncio.get_running_loop().create_task(caller.run(packets))  # type: ignore[arg-type]
    await asyncio.wait_for(packets.drained.wait(), 5)
    task.cancel()
    await asyncio.wait([task])
    assert sink.frames  # it did the work it is charged for
    assert budget.load_cores > 0  # that work, per second of the closed 2 s window
