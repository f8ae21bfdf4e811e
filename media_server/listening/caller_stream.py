"""One caller's decoded audio, as the room's sinks take it: 16 kHz mono, 20 ms frames
stamped with their stream position, and voice activity."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import numpy.typing as npt

from media_server.audio.resampler import StreamResampler
from media_server.listening.caller_audio import (
    INPUT_FRAME_SAMPLES,
    INPUT_RATE_HZ,
    CallerAudioSink,
    CallerFrame,
)
from media_server.listening.vad import VoiceActivityDetector

logger = logging.getLogger(__name__)

Pcm = npt.NDArray[np.int16]


class CallerStream:
    """Turns decoded chunks (mono s16 at the codec's rate, with their RTP-clock ``pts``)
    into :class:`CallerFrame` and :class:`VoiceActivity` for ``sink``, on the loop.

    Positions come from the chunks' ``pts``, not from counting: a gap (lost packets, a
    sender that paused) advances the position without frames. Each unbroken run of
    chunks is resampled as one stream; at a gap the run's last part-frame (under
    20 ms) and the resampler's tail are dropped and a new run starts at the new
    position. A chunk that goes back in time overlaps what was heard and is dropped,
    unless it goes back further than a frame (the sender restarted its clock): then
    the new run carries on where the last one ended.
    """

    def __init__(
        self, participant: str, sink: CallerAudioSink, detector: VoiceActivityDetector
    ) -> None:
        self.participant = participant
        self._sink = sink
        self.detector = detector
        self.frames = 0
        """Frames handed to the sink."""
        self.gaps = 0
        """Times the stream's clock jumped (forwards: lost audio; backwards: restarted)."""
        self._resampler: StreamResampler | None = None
        self._rate_hz = 0
        self._offset = 0
        """Added to positions computed from ``pts`` (moves only when the clock restarts)."""
        self._expected_pts: int | None = None
        self._run_at = 0
        """Position of the current run's first sample."""
        self._run_out = 0
        """Samples of the current run cut into frames or pending."""
        self._pending = np.zeros(0, dtype=np.int16)

    @property
    def speaking(self) -> bool:
        return self.detector.speaking

    @property
    def position(self) -> int:
        """Where the next frame would start (16 kHz samples)."""
        return self._run_at + self._run_out

    def feed(self, pts: int | None, rate_hz: int, pcm: Pcm) -> None:
        """One decoded chunk; ``pts`` in samples at ``rate_hz`` (None: it follows on)."""
        if pcm.size == 0 or rate_hz <= 0:
            return
        expected = self._expected_pts
        if pts is None:
            pts = expected if expected is not None else 0
        if expected is None or rate_hz != self._rate_hz or pts > expected:
            if expected is not None:
                self.gaps += 1
            self._new_run(pts, rate_hz)
        elif pts < expected:
            if expected - pts <= pcm.size:
                return  # a repeat of audio already heard
            self.gaps += 1
            heard_until = self.position + self._pending.size
            self._offset = heard_until - pts * INPUT_RATE_HZ // rate_hz
            self._new_run(pts, rate_hz)
        self._expected_pts = pts + pcm.size
        assert self._resampler is not None
        out = self._resampler.resample(pcm)
        self._pending = np.concatenate([self._pending, out]) if self._pending.size else out
        self._cut()

    def finish(self) -> None:
        """The caller went quiet (no packets for a while) or left: a speech in progress
        stops."""
        activity = self.detector.finish()
        if activity is not None:
            self._sink.voice_activity(activity)

    def _new_run(self, pts: int, rate_hz: int) -> None:
        self._rate_hz = rate_hz
        self._resampler = StreamResampler(rate_hz, INPUT_RATE_HZ)
        self._run_at = pts * INPUT_RATE_HZ // rate_hz + self._offset
        self._run_out = 0
        self._pending = np.zeros(0, dtype=np.int16)

    def _cut(self) -> None:
        pending = self._pending
        cut = 0
        while pending.size - cut >= INPUT_FRAME_SAMPLES:
            pcm = pending[cut : cut + INPUT_FRAME_SAMPLES]
            position = self._run_at + self._run_out
            self._run_out += INPUT_FRAME_SAMPLES
            cut += INPUT_FRAME_SAMPLES
            self.frames += 1
            # the detector first, so a stop or start is told before the frame that
            # completed it reaches a sink that acts on frames
            for activity in self.detector.push(position, pcm):
                self._sink.voice_activity(activity)
            self._sink.caller_frame(CallerFrame(self.participant, position, pcm.tobytes()))
        if cut:
            self._pending = pending[cut:]

    def stats(self) -> dict[str, Any]:
        return {
            "speaking": self.speaking,
            "vad_score": round(self.detector.last_score, 3),
            "frames": self.frames,
            "gaps": self.gaps,
            "position_ms": self.position * 1000 // INPUT_RATE_HZ,
        }
