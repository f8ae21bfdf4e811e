"""Streaming resampling of mono int16 PCM to 48 kHz (libswresample through PyAV)."""

from __future__ import annotations

import av
import numpy as np
import numpy.typing as npt

from media_server.audio.frames import SAMPLE_RATE_HZ

Pcm = npt.NDArray[np.int16]


class StreamResampler:
    """Resample a stream chunk by chunk; filter state carries across chunk seams.

    Feeding a signal in pieces gives the same samples as feeding it whole, so no
    click is introduced where one synthesis chunk ends and the next begins.
    Call :meth:`flush` at the end of the stream for the filter's tail.
    """

    def __init__(self, input_rate_hz: int, output_rate_hz: int = SAMPLE_RATE_HZ) -> None:
        self.input_rate_hz = input_rate_hz
        self.output_rate_hz = output_rate_hz
        self._passthrough = input_rate_hz == output_rate_hz
        self._resampler = (
            None
            if self._passthrough
            else av.AudioResampler(format="s16", layout="mono", rate=output_rate_hz)
        )

    def _collect(self, frames: list[av.AudioFrame]) -> Pcm:
        if not frames:
            return np.zeros(0, dtype=np.int16)
        return np.concatenate([f.to_ndarray().reshape(-1) for f in frames]).astype(np.int16)

    def resample(self, pcm: Pcm) -> Pcm:
        if self._passthrough or pcm.size == 0:
            return pcm.astype(np.int16, copy=False)
        assert self._resampler is not None
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(pcm, dtype=np.int16).reshape(1, -1), format="s16", layout="mono"
        )
        frame.sample_rate = self.input_rate_hz
        return self._collect(self._resampler.resample(frame))

    def flush(self) -> Pcm:
        if self._passthrough or self._resampler is None:
            return np.zeros(0, dtype=np.int16)
        return self._collect(self._resampler.resample(None))
