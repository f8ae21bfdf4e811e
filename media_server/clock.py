"""Monotonic time, injectable so pacing can be tested on a fake clock."""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    """Seconds on a clock that never goes backwards, and a way to wait for a moment on it."""

    def now(self) -> float: ...

    async def sleep_until(self, deadline: float) -> None: ...


class MonotonicClock:
    """``time.monotonic`` with ``asyncio.sleep`` for waiting (never the wall clock)."""

    def now(self) -> float:
        return time.monotonic()

    async def sleep_until(self, deadline: float) -> None:
        delay = deadline - time.monotonic()
        # asyncio.sleep(0) still yields, so a late pacer never starves the loop.
        await asyncio.sleep(delay if delay > 0 else 0)
