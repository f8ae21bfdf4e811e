"""Encode threads that serve the stream closest to running dry first.

Every speaking stream hands its next slice of PCM to the same encode threads. A
first-come-first-served queue serves them in turns, so a stream 5 s ahead of
its listener, asking for one more second, is served before a stream that will
run out of audio in 40 ms. Many streams starting at once is where that hurts:
each new stream builds its lead while the others wait, and some run dry.

:class:`DeadlineExecutor` is a ``concurrent.futures.Executor`` whose work items
carry a deadline: the time the submitting stream's encoded audio runs out.
Its workers always take the item with the nearest deadline (earliest deadline
first); equal deadlines keep their order. Building lead for a stream far ahead
waits until no stream is nearer to a gap. :meth:`~DeadlineExecutor.submit`
(and so ``loop.run_in_executor``) means "as soon as possible": deadline now.
"""

from __future__ import annotations

import concurrent.futures
import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ParamSpec, TypeVar

logger = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")


@dataclass(order=True)
class _WorkItem:
    deadline_s: float
    sequence: int
    run: Callable[[], None] = field(compare=False)
    future: concurrent.futures.Future[Any] = field(compare=False)


def _call(
    future: concurrent.futures.Future[T], fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs
) -> None:
    if not future.set_running_or_notify_cancel():
        return  # cancelled while it waited
    try:
        result = fn(*args, **kwargs)
    except BaseException as exc:
        future.set_exception(exc)
    else:
        future.set_result(result)


class DeadlineExecutor(concurrent.futures.Executor):
    """``max_workers`` threads running submitted calls earliest deadline first.

    Threads start with the first submission and run ``initializer`` first (the
    encode threads lower their priority there). ``now`` is the clock deadlines
    are read on (monotonic seconds; injectable for tests).
    """

    def __init__(
        self,
        max_workers: int,
        *,
        thread_name_prefix: str = "deadline-worker",
        initializer: Callable[[], object] | None = None,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_workers < 1:
            raise ValueError("max_workers must be at least 1")
        self.max_workers = max_workers
        self._thread_name_prefix = thread_name_prefix
        self._initializer = initializer
        self._now = now
        self._heap: list[_WorkItem] = []
        self._sequence = itertools.count()
        self._ready = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._shutdown = False

    @property
    def queued(self) -> int:
        """Work items waiting for a thread."""
        with self._ready:
            return len(self._heap)

    def submit(
        self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs
    ) -> concurrent.futures.Future[T]:
        """Run ``fn`` as soon as possible (deadline: now)."""
        return self.submit_within(0.0, fn, *args, **kwargs)

    def submit_within(
        self, slack_s: float, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs
    ) -> concurrent.futures.Future[T]:
        """Run ``fn``, which is needed ``slack_s`` seconds from now."""
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        with self._ready:
            if self._shutdown:
                raise RuntimeError("cannot schedule new work after shutdown")
            item = _WorkItem(
                self._now() + max(0.0, slack_s),
                next(self._sequence),
                lambda: _call(future, fn, *args, **kwargs),
                future,
            )
            heapq.heappush(self._heap, item)
            if not self._threads:
                self._start_threads()
            self._ready.notify()
        return future

    def _start_threads(self) -> None:
        for index in range(self.max_workers):
            thread = threading.Thread(
                target=self._work, name=f"{self._thread_name_prefix}_{index}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def _work(self) -> None:
        if self._initializer is not None:
            try:
                self._initializer()
            except Exception:
                logger.exception("worker initializer failed; the worker runs on")
        while True:
            with self._ready:
                while not self._heap and not self._shutdown:
                    self._ready.wait()
                if not self._heap:
                    return  # shut down and nothing left
                item = heapq.heappop(self._heap)
            item.run()
            del item  # drop the call's arguments before waiting for the next one

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop taking work; queued calls still run unless ``cancel_futures``."""
        with self._ready:
            self._shutdown = True
            if cancel_futures:
                for item in self._heap:
                    item.future.cancel()
                self._heap.clear()
            self._ready.notify_all()
            threads = list(self._threads)
        if wait:
            for thread in threads:
                thread.join()
