"""One Opus complexity for the whole server, lowered when encoding outgrows its CPU budget.

libopus at complexity 10 with in-band FEC costs several times as much CPU per
20 ms frame of speech as at complexity 1 (fed 16 kHz there:
:class:`~media_server.audio.encoder.StreamEncoder`; measured: see docs/performance.md).
A server that keeps complexity 10 at any load runs out of CPU with far fewer
speaking sessions per core, and then every listener hears gaps. This budget trades a little
quality for capacity instead: every encoder reports how long its frames took, and
when the encode time per second of wall clock passes the budget, the complexity
that every stream uses next steps down (and back up when there is room again).

Down is fast and up is slow: an overloaded window moves straight to the best level
projected to fit the budget, and to the lowest level if streams also ran dry
(underruns: encoding is saturated, so the measured load understates the demand).
Up is one level per window, only when the next level is projected to fit with a
margin and nothing ran dry.

Measuring alone is too late when many streams start at once: each encodes its first
seconds ahead as fast as it can, and an utterance keeps the input rate it started
with (:class:`~media_server.audio.encoder.StreamEncoder`), so many sessions starting
within a second at complexity 10 ran dry for the length of their first utterance
(measured: see docs/performance.md).
The budget therefore also counts the streams that are speaking and caps the level
at the best one whose steady demand (50 frames a second each, at the measured cost
of a frame) fits: the level is the lower of what was measured and what that
demand allows.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Final

from media_server.audio.frames import FRAME_MS

logger = logging.getLogger(__name__)

LEVELS: Final = (10, 7, 5, 3, 1, 0)
"""Complexities the budget steps through, best first."""
RELATIVE_COST: Final = {10: 1.0, 7: 0.87, 5: 0.79, 3: 0.65, 1: 0.24, 0: 0.23}
"""Encode time per frame relative to complexity 10 (libopus 1.6.1, 32 kbps, FEC, the
Piper voice, measured here; 1 and 0 with the 16 kHz input they get)."""
WINDOW_S: Final = 1.0
"""Encode time is summed over windows this long; the level changes at most once per window."""
STEP_UP_MARGIN: Final = 0.8
"""Step up only when the next better level would use at most this share of the budget."""
FRAMES_PER_S: Final = 1000 // FRAME_MS
"""What a speaking stream encodes per second once it has its lead (real time)."""
PRIOR_FRAME_COST_S: Final = 250e-6
"""CPU to encode one frame at complexity 10 until it is measured: a little above what
was measured on one core (see docs/performance.md)."""
MIN_FRAMES_TO_LEARN: Final = 50
"""A window must encode this many frames for its cost per frame to replace the last."""


class EncodeBudget:
    """Chooses the Opus complexity from the measured encode load. Thread-safe.

    ``budget_cores`` is the CPU the encoders may use, in cores (0.5 = half a core).
    The level stays within ``[min_complexity, max_complexity]``; with both equal
    the budget never changes anything.
    """

    def __init__(
        self,
        budget_cores: float,
        max_complexity: int = 10,
        min_complexity: int = 1,
        *,
        now: Callable[[], float],
    ) -> None:
        if budget_cores <= 0:
            raise ValueError("budget_cores must be positive")
        if not 0 <= min_complexity <= max_complexity <= 10:
            raise ValueError("need 0 <= min_complexity <= max_complexity <= 10")
        self.budget_cores = budget_cores
        self._levels = (max_complexity,) + tuple(
            level for level in LEVELS if min_complexity <= level < max_complexity
        )
        self._index = 0
        """The level the measured load allows (the level used may be lower: see complexity)."""
        self._now = now
        self._lock = threading.Lock()
        self._window_start = now()
        self._busy_s = 0.0
        self._window_frames = 0.0
        """Frames encoded in this window, each weighted by its level's relative cost."""
        self._underruns = 0
        self._active = 0
        self.frame_cost_s = PRIOR_FRAME_COST_S
        """Encode CPU per frame at complexity 10: measured, or the prior until then."""
        self.load_cores = 0.0
        """Encode time per wall second in the last full window."""
        self.changes = 0

    @property
    def complexity(self) -> int:
        """The level for the next slice: what the last windows measured allows, capped by
        what the speaking streams will need."""
        return self._levels[max(self._index, self._demand_index())]

    @property
    def active_streams(self) -> int:
        return self._active

    def stream_started(self) -> None:
        """A stream began speaking (the event loop; paired with :meth:`stream_stopped`)."""
        self._active += 1

    def stream_stopped(self) -> None:
        self._active = max(0, self._active - 1)

    def _demand_index(self) -> int:
        """The best level at which every speaking stream, in real time, fits the budget."""
        demand_cores = self._active * FRAMES_PER_S * self.frame_cost_s
        for index, level in enumerate(self._levels):
            if demand_cores * _cost(level) <= self.budget_cores:
                return index
        return len(self._levels) - 1

    def record_underrun(self) -> None:
        """A stream had no encoded frame when one was due (any thread)."""
        with self._lock:
            self._underruns += 1

    def record(self, encode_s: float, frames: int = 0, complexity: int | None = None) -> None:
        """Report encode time spent on ``frames`` frames at ``complexity`` (any thread);
        may move the level at a window's end."""
        with self._lock:
            self._busy_s += encode_s
            if frames:
                level = self.complexity if complexity is None else complexity
                self._window_frames += frames * _cost(level)
            now = self._now()
            elapsed = now - self._window_start
            if elapsed < WINDOW_S:
                return
            self.load_cores = self._busy_s / elapsed
            if self._window_frames >= MIN_FRAMES_TO_LEARN:
                self.frame_cost_s = self._busy_s / self._window_frames
            self._busy_s = 0.0
            self._window_frames = 0.0
            self._window_start = now
            underruns, self._underruns = self._underruns, 0
            self._adjust(underruns)

    def _adjust(self, underruns: int) -> None:
        level = self.complexity
        lowest = len(self._levels) - 1
        if self.load_cores > self.budget_cores and self._index < lowest:
            if underruns:
                self._index = lowest
            else:  # the best lower level projected to fit, at least one step down
                self._index = next(
                    (
                        i
                        for i in range(self._index + 1, lowest)
                        if self._projected(i) <= self.budget_cores
                    ),
                    lowest,
                )
        elif self._index > 0 and not underruns:
            if self._projected(self._index - 1) <= STEP_UP_MARGIN * self.budget_cores:
                self._index -= 1
        if self.complexity != level:
            self.changes += 1
            logger.info(
                "encode load %.2f cores (budget %.2f): Opus complexity %d -> %d",
                self.load_cores,
                self.budget_cores,
                level,
                self.complexity,
            )

    def _projected(self, index: int) -> float:
        """The last window's load had every stream encoded at level ``index`` instead."""
        return self.load_cores * _cost(self._levels[index]) / _cost(self.complexity)


def _cost(level: int) -> float:
    return RELATIVE_COST.get(level, level / 10 * 0.8 + 0.2)
