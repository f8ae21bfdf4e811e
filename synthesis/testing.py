"""Test doubles for tests of engines and of code that uses them.

:class:`ScriptedEngine` is an :class:`~synthesis.Engine` that yields a scripted tone,
with optional delays, lead-in silence and an injected failure; :class:`FakeClock` is
virtual monotonic time for tests of pacing. They are for tests only: a fake engine
is never a default, and nothing outside tests should import this module.

:class:`FakeClock` satisfies ``media_server.clock.Clock`` structurally (``now`` and
``async sleep_until``): this package never imports ``media_server``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import numpy as np

from synthesis.base import EngineCapabilities, VoiceInfo
from synthesis.errors import Unsupported
from synthesis.request import Mode, ReferenceAudio, SynthesisRequest
from synthesis.types import AudioChunk

__all__ = ["FakeClock", "ScriptedEngine"]


class FakeClock:
    """Virtual monotonic time: ``sleep_until`` jumps the clock to the deadline.

    ``oversleep_s`` makes every wake-up late by that much, like a loaded loop.
    ``sleeps`` records every deadline waited for; :meth:`advance` moves time on.
    """

    def __init__(self, start: float = 1000.0, oversleep_s: float = 0.0) -> None:
        self.t = start
        self.oversleep_s = oversleep_s
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds

    async def sleep_until(self, deadline: float) -> None:
        self.sleeps.append(deadline)
        if deadline > self.t:
            self.t = deadline + self.oversleep_s
        await asyncio.sleep(0)


class ScriptedEngine:
    """Yields scripted chunks (a 440 Hz tone) with optional delays and an injected failure.

    ``chunks`` chunks of ``chunk_s`` seconds each, after ``lead_in_s`` of silence;
    ``delay_s`` blocks (in the synthesis thread) before each chunk; ``fail_after``
    raises after that many chunks. ``requests`` records what was asked,
    ``produced_chunks`` counts what was yielded, and ``cancel_seen`` is set once a
    cancellation stopped synthesis.
    """

    def __init__(
        self,
        chunk_s: float = 0.5,
        chunks: int = 4,
        sample_rate_hz: int = 16_000,
        delay_s: float = 0.0,
        fail_after: int | None = None,
        lead_in_s: float = 0.0,
        any_thread: bool = False,
    ) -> None:
        self.chunk_s = chunk_s
        self.chunks = chunks
        self._rate = sample_rate_hz
        self.delay_s = delay_s
        self.fail_after = fail_after
        self.lead_in_s = lead_in_s
        self.any_thread = any_thread
        self.chunk_threads: list[str] = []
        """The name of the thread that made each chunk."""
        self.produced_chunks = 0
        self.requests: list[SynthesisRequest] = []
        self.cancel_seen = threading.Event()

    @property
    def name(self) -> str:
        return "scripted"

    @property
    def sample_rate_hz(self) -> int:
        return self._rate

    @property
    def voices(self) -> tuple[VoiceInfo, ...]:
        return (VoiceInfo("tone", "xx", self._rate),)

    @property
    def capabilities(self) -> EngineCapabilities:
        return EngineCapabilities(
            frozenset({Mode.SFT}), self._rate, ("xx",), any_thread=self.any_thread
        )

    def register_voice(
        self, voice_id: str, reference: ReferenceAudio, reference_text: str | None
    ) -> VoiceInfo:
        raise Unsupported("unsupported", "no cloning", "none")

    def synthesize(
        self, request: SynthesisRequest, cancel: threading.Event
    ) -> Iterator[AudioChunk]:
        self.requests.append(request)
        n = int(self.chunk_s * self._rate)
        t = np.arange(n) / self._rate
        tone = (np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16)
        if self.lead_in_s:
            yield AudioChunk(np.zeros(int(self.lead_in_s * self._rate), np.int16), self._rate)
        for i in range(self.chunks):
            if cancel.is_set():
                self.cancel_seen.set()
                return
            if self.fail_after is not None and i >= self.fail_after:
                raise RuntimeError("injected engine failure")
            if self.delay_s:
                time.sleep(self.delay_s)
            self.produced_chunks += 1
            self.chunk_threads.append(threading.current_thread().name)
            yield AudioChunk(tone, self._rate)

    def close(self) -> None:
        pass
