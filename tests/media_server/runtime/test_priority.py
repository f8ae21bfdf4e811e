"""Encode workers run nicer than the event loop's thread."""

from __future__ import annotations

import concurrent.futures
import os
import sys
import threading

import pytest

from media_server.runtime.priority import WORKER_NICE, lower_thread_priority


@pytest.mark.skipif(sys.platform != "linux", reason="per-thread priority is Linux only")
def test_a_worker_thread_is_nicer_and_the_process_is_not() -> None:
    before = os.getpriority(os.PRIO_PROCESS, 0)

    def niceness() -> int:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    with concurrent.futures.ThreadPoolExecutor(1, initializer=lower_thread_priority) as pool:
        worker = pool.submit(niceness).result()
    assert worker == min(19, before + WORKER_NICE)
    assert os.getpriority(os.PRIO_PROCESS, 0) == before  # the loop's thread is untouched
