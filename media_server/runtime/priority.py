"""Worker threads that yield the CPU to the event loop.

The event loop sends every 20 ms frame on time only if it gets the CPU the moment
its timer fires. Encoding runs seconds ahead of playout, so its threads can wait:
on Linux they run at a lower priority (a higher nice value, per thread), and the
scheduler lets the loop thread preempt them at once instead of time-slicing.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from typing import Final

logger = logging.getLogger(__name__)

WORKER_NICE: Final = 10
"""Added niceness of encode workers (CFS weight about 1/10 of the loop's)."""


def lower_thread_priority(increment: int = WORKER_NICE) -> bool:
    """Make the calling thread nicer by ``increment``; True if it took effect.

    Linux only: there ``setpriority(PRIO_PROCESS, tid)`` applies to one thread.
    Elsewhere the same call would change the whole process, so nothing is done.
    """
    if sys.platform != "linux":
        return False
    tid = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + increment)
    except OSError as exc:  # a sandbox may refuse; pacing still works, only less margin
        logger.debug("could not lower worker thread priority: %s", exc)
        return False
    return True
