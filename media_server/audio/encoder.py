"""From engine PCM to Opus packets: resample, cut into 20 ms frames, encode."""

from __future__ import annotations

import time
from typing import Final

import numpy as np
import numpy.typing as npt

from media_server.audio.budget import EncodeBudget
from media_server.audio.frames import FRAME_SAMPLES, SAMPLE_RATE_HZ
from media_server.audio.opus import (
    WIDEBAND_MAX_COMPLEXITY,
    WIDEBAND_RATE_HZ,
    CodingTarget,
    OpusEncoder,
    OpusSettings,
)
from media_server.audio.resampler import StreamResampler

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
    """Accumulates samples and hands out whole 20 ms frames (960 samples at 48 kHz)."""

    def __init__(self, frame_samples: int = FRAME_SAMPLES) -> None:
        self.frame_samples = frame_samples
        self._pending: Pcm = np.zeros(0, dtype=np.int16)

    @property
    def pending_samples(self) -> int:
        return int(self._pending.size)

    def push(self, pcm: Pcm) -> list[Pcm]:
        data = np.concatenate([self._pending, pcm]) if self._pending.size else pcm
        size = self.frame_samples
        whole = data.size // size
        frames = [data[i * size : (i + 1) * size] for i in range(whole)]
        self._pending = data[whole * size :].copy()
        return frames

    def flush(self) -> list[Pcm]:
        """The last partial frame, zero-padded to 20 ms (nothing if none is pending)."""
        if not self._pending.size:
            return []
        frame = np.zeros(self.frame_samples, dtype=np.int16)
        frame[: self._pending.size] = self._pending
        self._pending = np.zeros(0, dtype=np.int16)
        return [frame]


class StreamEncoder:
    """The Opus encoder of one outgoing stream, fed 48 or 16 kHz by complexity.

    Above :data:`~media_server.audio.opus.WIDEBAND_MAX_COMPLEXITY` the encoder takes
    48 kHz (hybrid coding, up to fullband). At or below it libopus codes SILK
    wideband whatever its input, so the encoder takes 16 kHz: the same audio band
    for less CPU, which is what a server that has stepped complexity down under
    load needs. The rate is chosen when an utterance starts, never inside one, and
    only the encoder in use is kept (a switch starts a fresh one, as the silence
    between utterances already does for the listener's decoder).
    Not thread-safe: one utterance at a time uses it.
    """

    def __init__(self, settings: OpusSettings) -> None:
        self.settings = settings
        self.current: OpusEncoder | None = None
        self.switches = 0
        self.target: CodingTarget | None = None
        """Set from the event loop when the listener's link changes (one reference, so
        the encoding thread sees the old target or the new one); applied per batch."""

    def for_complexity(self, complexity: int) -> OpusEncoder:
        """The encoder for an utterance starting at ``complexity`` (made if needed)."""
        rate = WIDEBAND_RATE_HZ if complexity <= WIDEBAND_MAX_COMPLEXITY else SAMPLE_RATE_HZ
        if self.current is None or self.current.input_rate_hz != rate:
            if self.current is not None:
                self.switches += 1
            self.current = OpusEncoder(self.settings, rate)
        self.current.set_complexity(complexity)
        self.follow_target(self.current)
        return self.current

    def follow_target(self, encoder: OpusEncoder) -> None:
        target = self.target
        if target is not None:
            encoder.apply(target)


class UtteranceEncoder:
    """Turns one utterance's PCM chunks into Opus packets.

    Blocking (libswresample, libopus): the caller runs it in a worker thread.
    The Opus encoder is owned by the stream and reused across utterances, so its
    state stays continuous; the first slice picks it (:meth:`StreamEncoder.for_complexity`
    at the budget's complexity), and resampler and framer follow its input rate.
    """

    def __init__(
        self, stream: StreamEncoder, input_rate_hz: int, budget: EncodeBudget | None = None
    ) -> None:
        self._stream = stream
        self._input_rate_hz = input_rate_hz
        self._budget = budget
        self._started: tuple[OpusEncoder, StreamResampler, Framer] | None = None
        self.input_samples = 0

    @property
    def encoder(self) -> OpusEncoder | None:
        """The encoder this utterance uses (None before its first slice)."""
        return None if self._started is None else self._started[0]

    def _start(self) -> tuple[OpusEncoder, StreamResampler, Framer]:
        if self._started is None:
            complexity = (
                self._stream.settings.complexity
                if self._budget is None
                else self._budget.complexity
            )
            encoder = self._stream.for_complexity(complexity)
            resampler = StreamResampler(self._input_rate_hz, encoder.input_rate_hz)
            self._started = (encoder, resampler, Framer(encoder.frame_samples))
        return self._started

    def feed(self, pcm: Pcm) -> list[bytes]:
        self.input_samples += int(pcm.size)
        encoder, resampler, framer = self._start()
        return self._encode(encoder, framer.push(resampler.resample(pcm)))

    def finish(self) -> list[bytes]:
        encoder, resampler, framer = self._start()
        return self._encode(encoder, framer.push(resampler.flush()) + framer.flush())

    def _encode(self, encoder: OpusEncoder, frames: list[Pcm]) -> list[bytes]:
        self._stream.follow_target(encoder)
        if self._budget is None:
            return [encoder.encode(f) for f in frames]
        complexity = self._budget.complexity
        encoder.set_complexity(complexity)
        started = time.thread_time()  # this thread's CPU, not wall time it was preempted
        packets = [encoder.encode(f) for f in frames]
        self._budget.record(time.thread_time() - started, len(frames), complexity)
        return packets
