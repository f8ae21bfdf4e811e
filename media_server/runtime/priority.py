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
from collections.abc import Callable
from typing import Final

logger = logging.getLogger(__name__)

WORKER_NICE: Final = 10
"""Added niceness of encode workers (CFS weight about 1/10 of the loop's)."""
URGENT_NICE: Final = 5
"""Added niceness of first-chunk synthesis threads when the loop runs below 0: behind
the pacer, ahead of every process at the default 0."""


def thread_nice() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


def raise_loop_priority(nice: int) -> int:
    """Ask for niceness ``nice`` on the calling (event loop) thread, if that is a raise;
    returns the niceness it has. Threads it starts later inherit it."""
    if sys.platform != "linux" or nice >= thread_nice():
        return thread_nice() if sys.platform == "linux" else 0
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
    except OSError as exc:
        logger.info(
            "event loop priority stays at nice %d (%s): run as root or with CAP_SYS_NICE"
            " (docker/podman: --cap-add SYS_NICE) so busy neighbours cannot delay speech",
            thread_nice(),
            exc,
        )
    return thread_nice()


def encode_thread_priority(loop_nice: int) -> Callable[[], object]:
    """A thread initializer for Opus encoding: at the first chunks' level below a raised
    loop (synthesis must not starve the encoding of speech already playing), otherwise
    :data:`WORKER_NICE` below the loop as ever (level with it would cost pacing)."""
    return urgent_thread_priority(loop_nice) if loop_nice < 0 else lower_thread_priority


def urgent_thread_priority(loop_nice: int) -> Callable[[], object]:
    """A thread initializer for first-chunk synthesis: :data:`URGENT_NICE` above a
    raised loop, level with a loop at 0 or above (never below everyone else)."""
    target = loop_nice + URGENT_NICE if loop_nice < 0 else loop_nice

    def initialize() -> bool:
        if sys.platform != "linux":
            return False
        current = thread_nice()
        return current == target or lower_thread_priority(target - current)

    return initialize


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
