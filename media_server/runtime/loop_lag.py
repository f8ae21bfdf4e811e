"""LoopLagProbe: how late the event loop wakes a timer, sampled for ``GET /metrics``."""

from __future__ import annotations

import logging
from typing import Final

from prometheus_client import Histogram

from media_server.clock import Clock

logger = logging.getLogger(__name__)

LOOP_LAG_INTERVAL_S: Final = 0.5
"""One sample per half second: cheap, and a stall of a few ticks still shows."""


class LoopLagProbe:
    """Sleeps to a fixed deadline on the server's clock and observes how late it woke.

    A timer woken late means every pacer on this loop was late too: the figure an
    operator compares with frame lateness to tell a busy loop from a slow encoder.
    :meth:`run` is owned (started and cancelled) by the media server.
    """

    def __init__(
        self, clock: Clock, histogram: Histogram, interval_s: float = LOOP_LAG_INTERVAL_S
    ) -> None:
        if interval_s <= 0:
            raise ValueError("interval_s must be positive")
        self._clock = clock
        self._histogram = histogram
        self.interval_s = interval_s
        self.samples = 0

    async def run(self) -> None:
        """Sample until cancelled."""
        while True:
            await self.sample()

    async def sample(self) -> float:
        """Sleep one interval; observe and return how late the wake-up came (s)."""
        deadline = self._clock.now() + self.interval_s
        await self._clock.sleep_until(deadline)
        lag_s = max(0.0, self._clock.now() - deadline)
        self._histogram.observe(lag_s)
        self.samples += 1
        return lag_s
