"""Pacing statistics: how late each frame went out, catch-ups and underruns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Protocol, runtime_checkable

import numpy as np

LATENESS_WINDOW_FRAMES: Final = 3000
"""Percentiles cover the last minute of frames (3000 x 20 ms)."""


@dataclass(frozen=True, slots=True)
class PacingSnapshot:
    frames_sent: int
    speech_frames_sent: int
    underruns: int
    skipped_frames: int
    lateness_p50_ms: float
    lateness_p99_ms: float
    lateness_max_ms: float
    send_lateness_p99_ms: float | None = None
    """When the last listener's packet was written, after the deadline (rooms only)."""
    send_lateness_max_ms: float | None = None

    def as_dict(self) -> dict[str, float | int]:
        sent = (
            {}
            if self.send_lateness_p99_ms is None or self.send_lateness_max_ms is None
            else {
                "send_lateness_p99_ms": round(self.send_lateness_p99_ms, 3),
                "send_lateness_max_ms": round(self.send_lateness_max_ms, 3),
            }
        )
        return {
            "frames_sent": self.frames_sent,
            "speech_frames_sent": self.speech_frames_sent,
            "underruns": self.underruns,
            "skipped_frames": self.skipped_frames,
            "lateness_p50_ms": round(self.lateness_p50_ms, 3),
            "lateness_p99_ms": round(self.lateness_p99_ms, 3),
            "lateness_max_ms": round(self.lateness_max_ms, 3),
            **sent,
        }


@runtime_checkable
class UnderrunCounter(Protocol):
    """A frame source that counts its own underruns (paced speech): silent ticks inside an
    utterance, which only the source can tell from idle ticks."""

    @property
    def underruns(self) -> int: ...


class PacingStats:
    """Per-stream counters plus a ring of recent lateness samples (seconds).

    ``underruns`` are counted where they happen, by the stream's source; the
    pacer points its stats at that source (:meth:`count_underruns_of`).
    With ``send_window`` it also keeps when each frame had been handed to every
    listener (:meth:`record_send`): a room's fan-out writes them one after another.
    """

    def __init__(self, window: int = LATENESS_WINDOW_FRAMES, send_window: int = 0) -> None:
        self._ring = np.zeros(window, dtype=np.float64)
        self._count = 0
        self._send_ring = np.zeros(send_window, dtype=np.float64)
        self.tracks_send = send_window > 0
        """Whether the pacer records send lateness (read on every frame: a plain flag)."""
        self._send_count = 0
        self._send_max_s = 0.0
        self._underruns_at_start = 0
        self.frames_sent = 0
        self.speech_frames_sent = 0
        self.skipped_frames = 0
        self.max_lateness_s = 0.0
        self._underruns_of: UnderrunCounter | None = None

    def count_underruns_of(self, source: UnderrunCounter) -> None:
        self._underruns_of = source

    @property
    def underruns(self) -> int:
        """The source's underruns; 0 for a source that does not count them."""
        return self._source_underruns() - self._underruns_at_start

    def _source_underruns(self) -> int:
        return self._underruns_of.underruns if self._underruns_of is not None else 0

    def start_window(self) -> None:
        """Forget what was recorded, so later figures cover only the time from now
        (``POST /stats/window``). Keeps the rings: no allocation on the event loop."""
        self._count = self._send_count = 0
        self.frames_sent = self.speech_frames_sent = self.skipped_frames = 0
        self.max_lateness_s = self._send_max_s = 0.0
        self._underruns_at_start = self._source_underruns()

    def record(self, lateness_s: float, speech: bool) -> None:
        self._ring[self._count % self._ring.size] = lateness_s
        self._count += 1
        self.frames_sent += 1
        if speech:
            self.speech_frames_sent += 1
        if lateness_s > self.max_lateness_s:
            self.max_lateness_s = lateness_s

    def record_send(self, lateness_s: float) -> None:
        """The frame has been handed to every listener, ``lateness_s`` after its deadline."""
        self._send_ring[self._send_count % self._send_ring.size] = lateness_s
        self._send_count += 1
        self._send_max_s = max(self._send_max_s, lateness_s)

    def lateness_s(self) -> np.ndarray:
        """Recorded lateness samples, oldest first when the ring has not wrapped."""
        return self._ring[: min(self._count, self._ring.size)].copy()

    def snapshot(self) -> PacingSnapshot:
        samples = self.lateness_s()
        p50, p99 = (np.percentile(samples, [50, 99]) * 1000) if samples.size else (0.0, 0.0)
        return PacingSnapshot(
            frames_sent=self.frames_sent,
            speech_frames_sent=self.speech_frames_sent,
            underruns=self.underruns,
            skipped_frames=self.skipped_frames,
            lateness_p50_ms=float(p50),
            lateness_p99_ms=float(p99),
            lateness_max_ms=self.max_lateness_s * 1000,
            **self._send_figures(),
        )

    def _send_figures(self) -> dict[str, float]:
        if not self.tracks_send:
            return {}
        sent = self._send_ring[: min(self._send_count, self._send_ring.size)]
        return {
            "send_lateness_p99_ms": float(np.percentile(sent, 99) * 1000) if sent.size else 0.0,
            "send_lateness_max_ms": self._send_max_s * 1000,
        }
