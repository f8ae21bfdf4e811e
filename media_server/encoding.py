"""From engine PCM to Opus packets: resample, cut into 20 ms frames, encode."""

from __future__ import annotations

import time
from typing import Final

import numpy as np
import numpy.typing as npt

from media_server.audio import FRAME_SAMPLES
from media_server.encode_budget import EncodeBudget
from media_server.opus import OpusEncoder
from media_server.resampler import StreamResampler

Pcm = npt.NDArray[np.int16]


ONSET_THRESHOLD: Final = 328
"""|sample| above 1% of full scale counts as sound (-40 dBFS)."""
ONSET_KEEP_MS: Final = 10
"""Silence kept before the onset, so the attack is not clipped."""


def leading_silence(pcm: Pcm, rate_hz: int) -> int | None:
    """Samples of near-silence to drop before the first sound (None: all of it is silence)."""
    loud = np.flatnonzero(np.abs(pcm.astype(np.int32)) > ONSET_THRESHOLD)
    if loud.size == 0:
        return None
    return max(0, int(loud[0]) - rate_hz * ONSET_KEEP_MS // 1000)


class Framer:
    """Accumulates 48 kHz samples and hands out whole 960-sample frames."""

    def __init__(self) -> None:
        self._pending: Pcm = np.zeros(0, dtype=np.int16)

    @property
    def pending_samples(self) -> int:
        return int(self._pending.size)

    def push(self, pcm: Pcm) -> list[Pcm]:
        data = np.concatenate([self._pending, pcm]) if self._pending.size else pcm
        whole = data.size // FRAME_SAMPLES
        frames = [data[i * FRAME_SAMPLES : (i + 1) * FRAME_SAMPLES] for i in range(whole)]
        self._pending = data[whole * FRAME_SAMPLES :].copy()
        return frames

    def flush(self) -> list[Pcm]:
        """The last partial frame, zero-padded to 20 ms (nothing if none is pending)."""
        if not self._pending.size:
            return []
        frame = np.zeros(FRAME_SAMPLES, dtype=np.int16)
        frame[: self._pending.size] = self._pending
        self._pending = np.zeros(0, dtype=np.int16)
        return [frame]


class UtteranceEncoder:
    """Turns one utterance's PCM chunks into Opus packets.

    Blocking (libswresample, libopus): the caller runs it in a worker thread.
    The Opus encoder is owned by the stream and reused across utterances, so
    its state stays continuous; resampler and framer are per utterance.
    """

    def __init__(
        self, encoder: OpusEncoder, input_rate_hz: int, budget: EncodeBudget | None = None
    ) -> None:
        self._encoder = encoder
        self._resampler = StreamResampler(input_rate_hz)
        self._framer = Framer()
        self._budget = budget
        self.input_samples = 0

    def feed(self, pcm: Pcm) -> list[bytes]:
        self.input_samples += int(pcm.size)
        return self._encode(self._framer.push(self._resampler.resample(pcm)))

    def finish(self) -> list[bytes]:
        return self._encode(self._framer.push(self._resampler.flush()) + self._framer.flush())

    def _encode(self, frames: list[Pcm]) -> list[bytes]:
        if self._budget is None:
            return [self._encoder.encode(f) for f in frames]
        self._encoder.set_complexity(self._budget.complexity)
        started = time.thread_time()  # this thread's CPU, not wall time it was preempted
        packets = [self._encoder.encode(f) for f in frames]
        self._budget.record(time.thread_time() - started)
        return packets
