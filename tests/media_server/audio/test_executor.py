"""DeadlineExecutor: earliest deadline first, futures, cancel, shutdown, initializer."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading

import pytest

from media_server.audio.executor import DeadlineExecutor
from synthesis.testing import FakeClock


def blocked(pool: DeadlineExecutor) -> threading.Event:
    """Occupy the pool's only worker until the returned event is set."""
    gate = threading.Event()
    started = threading.Event()

    def hold() -> None:
        started.set()
        gate.wait(5)

    pool.submit(hold)
    assert started.wait(5)
    return gate


def test_the_nearest_deadline_runs_first_and_ties_keep_their_order() -> None:
    clock = FakeClock()
    pool = DeadlineExecutor(1, now=clock.now)
    gate = blocked(pool)
    ran: list[str] = []
    futures = [
        pool.submit_within(3.0, ran.append, "far"),
        pool.submit_within(0.5, ran.append, "near"),
        pool.submit_within(1.0, ran.append, "middle"),
        pool.submit_within(0.5, ran.append, "near, second"),
    ]
    clock.advance(1.0)  # submitted later, due at the same time as "middle": after it
    futures.append(pool.submit(ran.append, "now"))
    assert pool.queued == 5
    gate.set()
    concurrent.futures.wait(futures, timeout=5)
    assert ran == ["near", "near, second", "middle", "now", "far"]
    pool.shutdown()


def test_results_and_exceptions_come_back_through_the_future() -> None:
    pool = DeadlineExecutor(2)

    def fail() -> None:
        raise ValueError("bad frame")

    assert pool.submit(sum, [1, 2, 3]).result(5) == 6
    with pytest.raises(ValueError, match="bad frame"):
        pool.submit_within(0.1, fail).result(5)
    pool.shutdown()


def test_a_cancelled_item_never_runs() -> None:
    pool = DeadlineExecutor(1)
    gate = blocked(pool)
    ran: list[int] = []
    cancelled = pool.submit(ran.append, 1)
    kept = pool.submit(ran.append, 2)
    assert cancelled.cancel()
    gate.set()
    kept.result(5)
    assert ran == [2]
    pool.shutdown()


def test_shutdown_runs_or_cancels_what_is_queued_and_refuses_more() -> None:
    pool = DeadlineExecutor(1)
    gate = blocked(pool)
    ran: list[int] = []
    queued = pool.submit(ran.append, 1)
    gate.set()
    pool.shutdown(wait=True)
    assert queued.result(0) is None and ran == [1]
    with pytest.raises(RuntimeError):
        pool.submit(ran.append, 2)

    pool = DeadlineExecutor(1)
    gate = blocked(pool)
    dropped = pool.submit(ran.append, 3)
    pool.shutdown(wait=False, cancel_futures=True)
    gate.set()
    assert dropped.cancelled() and pool.queued == 0
    pool.shutdown(wait=True)  # the held worker finished and exited
    assert ran == [1]


def test_every_worker_runs_the_initializer_once() -> None:
    names: list[str] = []
    lock = threading.Lock()

    def init() -> None:
        with lock:
            names.append(threading.current_thread().name)

    pool = DeadlineExecutor(3, thread_name_prefix="opus-encode", initializer=init)
    for _ in range(10):
        pool.submit(len, "x").result(5)
    pool.shutdown()
    assert sorted(names) == ["opus-encode_0", "opus-encode_1", "opus-encode_2"]
    with pytest.raises(ValueError):
        DeadlineExecutor(0)


async def test_it_serves_the_event_loop_like_any_executor() -> None:
    pool = DeadlineExecutor(1)
    loop = asyncio.get_running_loop()
    assert await loop.run_in_executor(pool, max, 3, 7) == 7
    assert await asyncio.wrap_future(pool.submit_within(0.2, min, 3, 7)) == 3
    pool.shutdown()
