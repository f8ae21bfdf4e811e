"""SynthesisService: one engine, its worker threads and its concurrency limit."""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from synthesis.base import Engine
from synthesis.errors import ServerBusy
from synthesis.observer import SynthesisObserver
from synthesis.request import SynthesisRequest
from synthesis.stream import CHUNK_TIMEOUT_S, SynthesisStream
from synthesis.waiters import WaitQueue

logger = logging.getLogger(__name__)

RETRY_AFTER_S: Final = 2
QUEUE_TIMEOUT_S: Final = 10.0
"""How long a live request waits for a synthesis slot before it is refused."""


class EngineBusy(ServerBusy):
    """The engine is running as many requests as it may; retry after ``retry_after_s``."""

    default_code = "engine_busy"

    def __init__(
        self,
        engine_name: str,
        limit: int,
        retry_after_s: int = RETRY_AFTER_S,
        *,
        waited_s: float | None = None,
    ) -> None:
        waited = "" if waited_s is None else f" and the queue did not move for {waited_s:g} s"
        super().__init__(
            None,
            f"the {engine_name} engine is busy ({limit} requests running{waited})",
            f"retry in {retry_after_s} s",
            retry_after_s=retry_after_s,
        )


class Caller(StrEnum):
    """Who a stream is for; decides which slots it may take."""

    LIVE = "live"
    """1:1 sessions and rooms: their listeners hear a gap if synthesis is refused."""
    HTTP = "http"
    """``POST /tts`` and ``/tts/ws``: anyone who can reach the port, so never all slots."""


def default_http_slots(max_concurrent: int) -> int:
    """One slot fewer than the engine runs, so HTTP clients always leave one to live
    sessions; all of it when there is only one."""
    return max(1, max_concurrent - 1)


@dataclass(frozen=True, slots=True)
class ServiceStats:
    engine: str
    max_concurrent: int
    running: int
    started_total: int
    refused_total: int
    http_max_concurrent: int
    """Slots HTTP streams may hold; the rest are kept for live sessions and rooms."""
    http_running: int
    http_refused_total: int
    """HTTP requests refused because HTTP held all its slots (also in ``refused_total``)."""
    waiting: int = 0
    """Live requests waiting for a slot now."""
    queued_total: int = 0
    """Live requests that had to wait for a slot (served or not)."""
    wait_max_ms: float = 0.0
    """The longest wait for a slot so far."""


class SynthesisService:
    """Admits synthesis work for one engine, in order; owns its worker threads.

    At most ``max_concurrent`` streams run at once. A live request (a session's or
    room's ``say``) that finds every slot busy waits for one in a fair queue
    (:class:`~synthesis.waiters.WaitQueue`) through :meth:`open`, and is refused with
    :class:`EngineBusy` only past its deadline. HTTP requests (:meth:`stream`) are
    refused at once and may hold at most ``http_slots`` slots, so anonymous HTTP
    clients cannot starve live sessions. A slot is given back only when the worker
    thread has really let go, so an engine that hangs costs capacity, never threads
    beyond the limit, and the server stays up.

    Two thread pools: engines whose generators may be resumed on any thread
    (``EngineCapabilities.any_thread``) make their first chunks
    (:data:`~synthesis.stream.URGENT_CHUNKS`) on an ``urgent`` thread and continue on a
    background thread, which ``thread_initializer`` may lower below everything else;
    other engines run on a background thread throughout.
    """

    def __init__(
        self,
        engine: Engine,
        max_concurrent: int,
        *,
        chunk_timeout_s: float = CHUNK_TIMEOUT_S,
        thread_initializer: Callable[[], object] | None = None,
        urgent_initializer: Callable[[], object] | None = None,
        http_slots: int | None = None,
        queue_timeout_s: float = QUEUE_TIMEOUT_S,
        observer: SynthesisObserver | None = None,
    ) -> None:
        """``thread_initializer`` runs first in every background thread (e.g. to lower
        its priority below the event loop's), ``urgent_initializer`` in every thread
        that synthesises first chunks. ``http_slots`` None: :func:`default_http_slots`.
        ``observer`` is told what the engine did for each stream (the server's metrics)."""
        if max_concurrent < 1:
            raise ValueError("max_concurrent must be at least 1")
        if http_slots is None:
            http_slots = default_http_slots(max_concurrent)
        if not 1 <= http_slots <= max_concurrent:
            raise ValueError("http_slots must be 1..max_concurrent")
        self.engine = engine
        self.max_concurrent = max_concurrent
        self.http_slots = http_slots
        self._chunk_timeout_s = chunk_timeout_s
        self.queue_timeout_s = queue_timeout_s
        self._observer = observer
        self._urgent = concurrent.futures.ThreadPoolExecutor(
            max_concurrent,
            thread_name_prefix=f"synthesis-{engine.name}-first",
            initializer=urgent_initializer,
        )
        self._background = concurrent.futures.ThreadPoolExecutor(
            max_concurrent,
            thread_name_prefix=f"synthesis-{engine.name}",
            initializer=thread_initializer,
        )
        self._waiters = WaitQueue()
        self._queued_total = 0
        self._wait_max_ms = 0.0
        self._running = 0
        self._started_total = 0
        self._refused_total = 0
        self._http_running = 0
        self._http_refused_total = 0

    @property
    def running(self) -> int:
        return self._running

    @property
    def http_running(self) -> int:
        return self._http_running

    def stream(self, request: SynthesisRequest, caller: Caller = Caller.LIVE) -> SynthesisStream:
        """A stream for ``request`` holding one slot; raises :class:`EngineBusy` at once
        when every slot ``caller`` may take is held (or live requests wait for one)."""
        if self._running >= self.max_concurrent or (caller is Caller.LIVE and self._waiters):
            self._refused_total += 1
            raise EngineBusy(self.engine.name, self.max_concurrent)
        if caller is Caller.HTTP:
            if self._http_running >= self.http_slots:
                self._refused_total += 1
                self._http_refused_total += 1
                raise EngineBusy(self.engine.name, self.http_slots)
            self._http_running += 1
        self._running += 1
        return self._new_stream(request, caller)

    async def open(
        self,
        request: SynthesisRequest,
        owner: object,
        *,
        continuation: bool = False,
        on_queued: Callable[[int], None] | None = None,
    ) -> SynthesisStream:
        """A stream for a live ``request``, waiting for a slot in fair order when all
        are busy (``on_queued`` is told the position once); :class:`EngineBusy` only
        after :attr:`queue_timeout_s`. ``continuation``: a later piece of an utterance
        that is already speaking, served after waiting first pieces."""
        await self._acquire(owner, continuation, on_queued)
        return self._new_stream(request, Caller.LIVE, owner)

    async def _acquire(
        self,
        owner: object,
        continuation: bool,
        on_queued: Callable[[int], None] | None = None,
    ) -> None:
        """Take a live slot, waiting in fair order for one."""
        if self._running < self.max_concurrent and not self._waiters:
            self._waiters.served(owner)
            self._running += 1
            return
        waiter, position = self._waiters.add(owner, continuation)
        self._queued_total += 1
        if on_queued is not None:
            on_queued(position)
        started = time.monotonic()
        try:
            async with asyncio.timeout(self.queue_timeout_s):
                await waiter.granted
        except BaseException as exc:
            self._waiters.remove(waiter)
            if waiter.granted.done() and not waiter.granted.cancelled():
                self._release(Caller.LIVE)  # granted just as the wait ended: pass it on
            if isinstance(exc, TimeoutError):
                self._refused_total += 1
                busy = EngineBusy(
                    self.engine.name, self.max_concurrent, waited_s=self.queue_timeout_s
                )
                if self._observer is not None:
                    self._observer.refused(self.engine.name, busy.code)
                raise busy from None
            raise
        finally:
            self._wait_max_ms = max(self._wait_max_ms, (time.monotonic() - started) * 1000)

    def _new_stream(
        self, request: SynthesisRequest, caller: Caller, owner: object = None
    ) -> SynthesisStream:
        self._started_total += 1
        any_thread = self.engine.capabilities.any_thread
        # a live stream far ahead of its listener gives its slot back until it needs it
        parks = any_thread and caller is Caller.LIVE
        return SynthesisStream(
            self.engine,
            request,
            executor=self._urgent if any_thread else self._background,
            rest_executor=self._background if any_thread else None,
            chunk_timeout_s=self._chunk_timeout_s,
            on_finished=functools.partial(self._release, caller),
            reacquire=functools.partial(self._acquire, owner, True) if parks else None,
            observer=self._observer,
        )

    def _release(self, caller: Caller) -> None:
        """A slot is free: the next live waiter takes it over, or it goes back."""
        if caller is Caller.HTTP:
            self._http_running -= 1
        if not self._waiters.grant_next():
            self._running -= 1

    def forget(self, owner: object) -> None:
        """``owner`` closed: drop its place in the fair order."""
        self._waiters.forget(owner)

    def stats(self) -> ServiceStats:
        """Counters for ``/stats``."""
        return ServiceStats(
            engine=self.engine.name,
            max_concurrent=self.max_concurrent,
            running=self._running,
            started_total=self._started_total,
            refused_total=self._refused_total,
            http_max_concurrent=self.http_slots,
            http_running=self._http_running,
            http_refused_total=self._http_refused_total,
            waiting=len(self._waiters),
            queued_total=self._queued_total,
            wait_max_ms=round(self._wait_max_ms, 1),
        )

    def close(self) -> None:
        self._urgent.shutdown(wait=False, cancel_futures=True)
        self._background.shutdown(wait=False, cancel_futures=True)
