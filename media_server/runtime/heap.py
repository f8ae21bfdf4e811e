"""Giving freed heap memory back to the operating system while nobody is listening."""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import sys
from collections.abc import Callable
from typing import Final

from media_server.clock import Clock

logger = logging.getLogger(__name__)

CHECK_INTERVAL_S: Final = 1.0


def glibc_malloc_trim() -> Callable[[], int] | None:
    """glibc's ``malloc_trim(0)``, or None where the C library has none (musl, macOS)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return lambda: int(trim(0))


def rss_bytes() -> int:
    """Resident memory of this process (0 where /proc is not there)."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            resident_pages = int(statm.read().split()[1])
    except (OSError, ValueError, IndexError):
        return 0
    return resident_pages * os.sysconf("SC_PAGE_SIZE")


class HeapTrimmer:
    """Returns the allocator's free memory to the OS once the server has been idle.

    glibc keeps what a busy moment allocated: after many sessions have closed, their
    memory is free inside the process but still resident (measured: see
    docs/performance.md).
    ``malloc_trim`` gives it back, but it holds each arena's lock while it walks the
    heap (tens of ms), so it runs only when no session or room has been open for
    ``idle_s`` (nobody's audio can stall), once per busy period, in a worker thread.
    :meth:`run` is owned by the app (``cleanup_ctx``).
    """

    def __init__(
        self,
        busy: Callable[[], bool],
        clock: Clock,
        idle_s: float,
        *,
        trim: Callable[[], int] | None = None,
        rss: Callable[[], int] = rss_bytes,
    ) -> None:
        self._busy = busy
        self._clock = clock
        self.idle_s = idle_s
        self._trim = trim
        self._rss = rss
        self._dirty = False
        self._idle_since: float | None = None
        self.trims = 0
        self.freed_bytes = 0
        """Resident memory given back by the trims so far (RSS before minus after)."""

    @property
    def available(self) -> bool:
        return self._trim is not None

    async def run(self) -> None:
        """Check every second (or every ``idle_s``, if shorter) until cancelled; returns
        at once where there is nothing to trim with."""
        if self._trim is None:
            return
        interval = min(CHECK_INTERVAL_S, self.idle_s) if self.idle_s > 0 else CHECK_INTERVAL_S
        while True:
            await self._clock.sleep_until(self._clock.now() + interval)
            await self.check()

    async def check(self) -> None:
        now = self._clock.now()
        if self._busy():
            self._dirty = True
            self._idle_since = None
            return
        if self._idle_since is None:
            self._idle_since = now
        if not self._dirty or now - self._idle_since < self.idle_s or self._trim is None:
            return
        self._dirty = False
        before, released, after = await asyncio.get_running_loop().run_in_executor(
            None, self._trim_measured, self._trim
        )
        self.trims += 1
        self.freed_bytes += max(0, before - after)
        logger.info(
            "idle: heap trimmed, RSS %.1f -> %.1f MB (malloc_trim returned %d)",
            before / 2**20,
            after / 2**20,
            released,
        )

    def _trim_measured(self, trim: Callable[[], int]) -> tuple[int, int, int]:
        """RSS before, what ``trim`` returned, RSS after (a worker thread: /proc is I/O)."""
        before = self._rss()
        released = trim()
        return before, released, self._rss()
