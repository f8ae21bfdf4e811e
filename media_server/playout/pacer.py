"""One 20 ms clock per outgoing stream, on absolute monotonic deadlines."""

from __future__ import annotations

import logging
from typing import Final, Protocol

from media_server.audio.frames import FRAME_S, FRAME_SAMPLES, OutgoingFrame
from media_server.clock import Clock
from media_server.playout.stats import PacingStats, UnderrunCounter
from media_server.telemetry.metrics import ServerMetrics

logger = logging.getLogger(__name__)

MAX_CATCH_UP_FRAMES: Final = 3
"""After a stall, at most this many overdue frames go out back to back; older ticks are skipped."""


class FrameSource(Protocol):
    def next_payload(self, pts: int) -> bytes | None:
        """The speech packet for the tick at ``pts``, or None when idle (silence goes out)."""
        ...


class FrameSink(Protocol):
    def send(self, frame: OutgoingFrame) -> None: ...


class Pacer:
    """Emits exactly one frame per 20 ms tick.

    Deadlines are absolute (``start + n * 20 ms``), so sleep error never
    accumulates. When the loop stalls, up to :data:`MAX_CATCH_UP_FRAMES` overdue
    frames are sent at once and older ticks are skipped (their RTP timestamps
    too, so timestamps keep tracking the clock). While the source is idle the
    pacer sends the silence packet, so RTP timestamps stay continuous, and
    speech that arrives while idle goes out on the very next tick. With ``metrics``,
    every frame's lateness, skipped ticks and catch-up frames are observed there too.
    """

    def __init__(
        self,
        source: FrameSource,
        sink: FrameSink,
        clock: Clock,
        silence_payload: bytes,
        *,
        max_catch_up_frames: int = MAX_CATCH_UP_FRAMES,
        stats: PacingStats | None = None,
        metrics: ServerMetrics | None = None,
    ) -> None:
        self._metrics = metrics
        self._source = source
        self._sink = sink
        self._clock = clock
        self._silence = silence_payload
        self._max_catch_up = max_catch_up_frames
        self.stats = stats or PacingStats()
        if isinstance(source, UnderrunCounter):
            self.stats.count_underruns_of(source)
        self._start: float | None = None
        self._tick = 0
        self._pts = 0

    @property
    def pts(self) -> int:
        """RTP position of the next frame to go out."""
        return self._pts

    def tick_deadline(self, tick: int) -> float:
        assert self._start is not None
        return self._start + tick * FRAME_S

    def start_at(self, start: float) -> None:
        """Put the first deadline at ``start`` (a shared ticker aligns pacers to its slots)."""
        self._start = start

    def emit_until(self, now: float) -> None:
        """Send every frame whose deadline has passed by ``now`` (catch-up still capped)."""
        while self._start is not None and self.tick_deadline(self._tick) <= now + 1e-9:
            self.emit_due()

    def emit_due(self) -> None:
        """Send the frame for the current tick; called at or after its deadline."""
        now = self._clock.now()
        if self._start is None:
            self._start = now
        deadline = self.tick_deadline(self._tick)
        overdue = int((now - deadline) / FRAME_S + 1e-9)  # whole ticks behind
        if overdue > self._max_catch_up:
            skip = overdue - self._max_catch_up
            self._tick += skip
            self._pts += skip * FRAME_SAMPLES
            self.stats.skipped_frames += skip
            logger.debug("pacer stalled: skipped %d ticks", skip)
            deadline = self.tick_deadline(self._tick)
            if self._metrics is not None:
                self._metrics.skipped_ticks.inc(skip)
        payload = self._source.next_payload(self._pts)
        speech = payload is not None
        self._sink.send(
            OutgoingFrame(payload if payload is not None else self._silence, self._pts, speech)
        )
        lateness_s = max(0.0, now - deadline)
        self.stats.record(lateness_s, speech)
        if self._metrics is not None:
            self._metrics.frame_lateness.observe(lateness_s)
            if overdue > 0:  # a whole tick late: the next frame follows back to back
                self._metrics.catch_up_frames.inc()
        if self.stats.tracks_send:
            self.stats.record_send(max(0.0, self._clock.now() - deadline))
        self._tick += 1
        self._pts += FRAME_SAMPLES

    async def run(self) -> None:
        """Tick until cancelled."""
        self.emit_due()
        while True:
            await self._clock.sleep_until(self.tick_deadline(self._tick))
            self.emit_due()
