"""When CPython's full garbage collections run: while nobody listens, or rarely."""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable
from typing import Final

from media_server.clock import Clock

logger = logging.getLogger(__name__)

CHECK_INTERVAL_S: Final = 1.0
NEVER: Final = 1_000_000_000
"""A third threshold no count reaches: CPython never starts a full collection itself."""


class CollectionScheduler:
    """Takes CPython's full (generation 2) collections off the audio's timeline.

    A full collection holds the event loop while it walks every tracked object that
    survived a younger collection: with many sessions speaking while peers join, one
    can hold it for several frames, and every listener hears the gap (measured: see
    docs/performance.md). CPython starts them on its own
    schedule, about every ten younger collections, which joining peers make frequent.

    :meth:`install` keeps the two young generations as they are (they only walk
    recent objects: a few ms) and turns CPython's own full collections off. :meth:`run`
    (owned by the app, ``cleanup_ctx``) then collects fully once nobody listens, and
    while someone always does, at most once per ``max_interval_s``, so cyclic garbage
    the teardown missed stays bounded. Closed peers leave almost none
    (:mod:`media_server.rtc.teardown`), so little waits for the next collection.
    """

    def __init__(
        self,
        busy: Callable[[], bool],
        clock: Clock,
        max_interval_s: float,
        *,
        collect: Callable[[], int] = gc.collect,
        pending: Callable[[], int] = lambda: gc.get_count()[2],
    ) -> None:
        self._busy = busy
        self._clock = clock
        self.max_interval_s = max_interval_s
        self._collect = collect
        self._pending = pending
        self._saved: tuple[int, int, int] | None = None
        self._last_full = clock.now()
        self.collections = 0
        self.longest_s = 0.0
        """The longest full collection it ran (wall time, the event loop held)."""

    @property
    def enabled(self) -> bool:
        return self.max_interval_s > 0

    def install(self) -> None:
        """Turn CPython's own full collections off (nothing when disabled)."""
        if not self.enabled or self._saved is not None:
            return
        self._saved = gc.get_threshold()
        young, middle, _ = self._saved
        gc.set_threshold(young, middle, NEVER)

    def uninstall(self) -> None:
        """Give CPython its own schedule back."""
        if self._saved is not None:
            gc.set_threshold(*self._saved)
            self._saved = None

    async def run(self) -> None:
        """Check every second until cancelled; returns at once when disabled."""
        if not self.enabled:
            return
        while True:
            await self._clock.sleep_until(self._clock.now() + CHECK_INTERVAL_S)
            self.check()

    def check(self) -> None:
        """Collect fully if something was promoted since the last full collection and
        either nobody listens or ``max_interval_s`` has passed."""
        now = self._clock.now()
        if not self._pending():
            self._last_full = now  # nothing to collect: the interval starts over
            return
        if self._busy() and now - self._last_full < self.max_interval_s:
            return
        started = time.perf_counter()
        found = self._collect()
        took = time.perf_counter() - started
        self._last_full = now
        self.collections += 1
        self.longest_s = max(self.longest_s, took)
        logger.debug("gc: full collection, %d unreachable, %.1f ms", found, took * 1000)
