"""Encode workers run nicer than the event loop's thread."""

from __future__ import annotations

import concurrent.futures
import os
import sys
import threading
from collections.abc import Callable

import pytest

from media_server.runtime.priority import (
    URGENT_NICE,
    WORKER_NICE,
    lower_thread_priority,
    raise_loop_priority,
    thread_nice,
    urgent_thread_priority,
)


@pytest.mark.skipif(sys.platform != "linux", reason="per-thread priority is Linux only")
def test_a_worker_thread_is_nicer_and_the_process_is_not() -> None:
    before = os.getpriority(os.PRIO_PROCESS, 0)

    def niceness() -> int:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    with concurrent.futures.ThreadPoolExecutor(1, initializer=lower_thread_priority) as pool:
        worker = pool.submit(niceness).result()
    assert worker == min(19, before + WORKER_NICE)
    assert os.getpriority(os.PRIO_PROCESS, 0) == before  # the loop's thread is untouched


def _in_a_new_thread(fn: Callable[[], object]) -> object:
    """Run ``fn`` in a thread of its own: what it does to its priority stays there."""
    result: list[object] = []
    thread = threading.Thread(target=lambda: result.append(fn()))
    thread.start()
    thread.join()
    return result[0]


@pytest.mark.skipif(sys.platform != "linux", reason="per-thread priority is Linux only")
def test_the_loop_asks_for_a_raise_and_first_chunks_run_just_below_it() -> None:
    """With the privilege to raise it (root here, CAP_SYS_NICE in a container), the loop
    gets ``nice`` and a first-chunk thread it starts sits 5 above; without it both stay
    level, never below a busy neighbour at the default 0."""
    start = thread_nice()

    def loop_then_urgent() -> tuple[int, int]:
        loop = raise_loop_priority(start - 3)
        with concurrent.futures.ThreadPoolExecutor(
            1, initializer=urgent_thread_priority(loop)
        ) as pool:
            return loop, pool.submit(thread_nice).result()

    loop, urgent = _in_a_new_thread(loop_then_urgent)  # type: ignore[misc]
    if loop == start - 3:  # privileged
        assert urgent == (loop + URGENT_NICE if loop < 0 else loop)
    else:
        assert loop == start and urgent == start
    assert thread_nice() == start  # this thread was never touched
    assert raise_loop_priority(start + 1) == start  # a "raise" to a nicer level does nothing
