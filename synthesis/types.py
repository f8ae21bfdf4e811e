"""Value types shared by every engine."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

PcmArray = npt.NDArray[np.int16]


@dataclass(frozen=True, slots=True)
class AudioChunk:
    """A piece of mono signed 16-bit PCM at the engine's own sample rate."""

    pcm: PcmArray
    """Mono int16 samples."""

    sample_rate_hz: int
    """Sample rate of ``pcm`` in Hertz."""

    text: str | None = None
    """The part of the request's text this chunk speaks, where the engine knows it
    (Piper: the piece of :func:`~synthesis.text.split_text` it renders, on the piece's
    first chunk); None: it goes on with the text of the chunks before it."""

    @property
    def duration_s(self) -> float:
        return len(self.pcm) / self.sample_rate_hz
