"""SynthesisService: one engine, its worker threads and its concurrency limit."""

from __future__ import annotations

import concurrent.futures
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from synthesis.base import Engine
from synthesis.errors import ServerBusy
from synthesis.request import SynthesisRequest
from synthesis.stream import CHUNK_TIMEOUT_S, SynthesisStream

logger = logging.getLogger(__name__)

RETRY_AFTER_S: Final = 2


class EngineBusy(ServerBusy):
    """The engine is running as many requests as it may; retry after ``retry_after_s``."""

    default_code = "engine_busy"

    def __init__(self, engine_name: str, limit: int, retry_after_s: int = RETRY_AFTER_S) -> None:
        super().__init__(
            None,
            f"the {engine_name} engine is busy ({limit} requests running)",
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


class SynthesisService:
    """Admits or refuses synthesis work for one engine; owns its worker threads.

    At most ``max_concurrent`` streams run at once; :meth:`stream` refuses the
    next with :class:`EngineBusy` (HTTP answers 503 + Retry-After, a session
    gets an ``error`` event). :attr:`Caller.HTTP` streams may hold at most
    ``http_slots`` of them, so anonymous HTTP clients cannot starve live
    sessions. A slot is given back only when the worker thread has really let
    go, so an engine that hangs costs capacity, never threads beyond the limit,
    and the server stays up.
    """

    def __init__(
        self,
        engine: Engine,
        max_concurrent: int,
        *,
        chunk_timeout_s: float = CHUNK_TIMEOUT_S,
        thread_initializer: Callable[[], object] | None = None,
        http_slots: int | None = None,
    ) -> None:
        """``thread_initializer`` runs first in every worker thread (e.g. to lower its
        priority below the event loop's). ``http_slots`` None: :func:`default_http_slots`."""
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
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_concurrent,
            thread_name_prefix=f"synthesis-{engine.name}",
            initializer=thread_initializer,
        )
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
        """A stream for ``request`` holding one slot; raises :class:`EngineBusy` when
        every slot ``caller`` may take is held."""
        if self._running >= self.max_concurrent:
            self._refused_total += 1
            raise EngineBusy(self.engine.name, self.max_concurrent)
        if caller is Caller.HTTP:
            if self._http_running >= self.http_slots:
                self._refused_total += 1
                self._http_refused_total += 1
                raise EngineBusy(self.engine.name, self.http_slots)
            self._http_running += 1
        self._running += 1
        self._started_total += 1
        return SynthesisStream(
            self.engine,
            request,
            executor=self._executor,
            chunk_timeout_s=self._chunk_timeout_s,
            on_finished=functools.partial(self._release, caller),
        )

    def _release(self, caller: Caller) -> None:
        self._running -= 1
        if caller is Caller.HTTP:
            self._http_running -= 1

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
        )

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
