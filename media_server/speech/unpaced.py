"""Speech as PCM for the HTTP and WebSocket APIs: synthesis plus time-stretch, not paced."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncGenerator, AsyncIterator

import numpy as np
import numpy.typing as npt

from synthesis import SynthesisRequest, SynthesisService
from synthesis.service import Caller

Pcm = npt.NDArray[np.int16]


async def speech_pcm(
    service: SynthesisService, request: SynthesisRequest, pieces: AsyncIterator[str]
) -> AsyncGenerator[Pcm, None]:
    """Synthesise each piece of text in order and yield mono int16 PCM at the engine's rate.

    ``speed`` is applied by time-stretching when the engine cannot apply it
    itself, so every engine honours it. Each piece opens its own stream as an
    :attr:`Caller.HTTP` caller (refused with ``EngineBusy`` once HTTP holds its
    share of slots, so live sessions keep theirs); closing the iterator cancels
    synthesis.
    """
    stretcher = None
    if request.speed != 1.0 and not service.engine.capabilities.native_speed:
        from synthesis.stretch import TimeStretcher

        stretcher = TimeStretcher(service.engine.sample_rate_hz, request.speed)
    async for piece in pieces:
        stream = service.stream(dataclasses.replace(request, text=piece), Caller.HTTP)
        try:
            async for chunk in stream:
                pcm = chunk.pcm if stretcher is None else stretcher.process(chunk.pcm)
                if pcm.size:
                    yield pcm
        finally:
            await stream.aclose()
    if stretcher is not None:
        tail = stretcher.flush()
        if tail.size:
            yield tail


async def one_piece(text: str) -> AsyncIterator[str]:
    """The whole text as one piece (engines split sentences themselves)."""
    yield text
