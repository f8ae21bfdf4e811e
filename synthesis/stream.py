"""Run a blocking engine in a worker thread and read its chunks asynchronously."""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import logging
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, Final

from synthesis.base import Engine
from synthesis.errors import SynthesisError, SynthesisTimeout
from synthesis.observer import SynthesisObserver, SynthesisOutcome, SynthesisReport
from synthesis.request import SynthesisRequest
from synthesis.types import AudioChunk

logger = logging.getLogger(__name__)

MAX_CHUNKS_AHEAD: Final = 4
"""How many synthesised chunks may wait unread before the worker pauses."""
CHUNK_TIMEOUT_S: Final = 30.0
"""An engine silent this long (first chunk included) has hung: the request fails."""
URGENT_CHUNKS: Final = 2
"""Chunks made on the urgent thread before the rest moves to the background one: the
first decides when speech starts, and the second must arrive before the first (a few
words) has played, or the listener hears a gap."""
CLOSE_WAIT_S: Final = 2.0
"""``aclose`` waits this long for the worker; a hung one is left to finish on its own."""

_PUT_POLL_S: Final = 0.05


class _End:
    pass


_END: Final = _End()


class _Parked:
    pass


_PARKED: Final = _Parked()
"""Queued when the worker let go of its slot because the reader is far behind."""


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class _EngineMeter:
    """What the engine did for one stream, written by whichever worker thread runs it
    (one at a time, handed over through the executor) and read on the loop once none does."""

    __slots__ = ("started", "first_chunk_s", "compute_s", "audio_s", "outcome")

    def __init__(self) -> None:
        self.started: float | None = None
        """``perf_counter`` when the worker thread called the engine."""
        self.first_chunk_s: float | None = None
        self.compute_s = 0.0
        self.audio_s = 0.0
        self.outcome: SynthesisOutcome | None = None
        """Set by the worker when the engine ended or raised; None: it was cancelled."""


class _MeteredChunks:
    """The engine's chunks, timing only the engine's own ``next()``: a worker waiting for
    the reader, or a stream parked without a slot, costs no compute time."""

    __slots__ = ("_chunks", "_meter")

    def __init__(self, chunks: Iterator[AudioChunk], meter: _EngineMeter) -> None:
        self._chunks = chunks
        self._meter = meter

    def __iter__(self) -> Iterator[AudioChunk]:
        return self

    def __next__(self) -> AudioChunk:
        meter = self._meter
        began = time.perf_counter()
        try:
            chunk = next(self._chunks)
        finally:
            ended = time.perf_counter()
            meter.compute_s += ended - began
        if chunk.pcm.size:
            if meter.first_chunk_s is None and meter.started is not None:
                meter.first_chunk_s = ended - meter.started
            meter.audio_s += chunk.pcm.size / chunk.sample_rate_hz
        return chunk


class SynthesisStream:
    """One utterance being synthesised off the event loop.

    The engine's blocking generator runs in ``executor`` (a thread). Chunks
    reach the loop through a bounded queue, so the worker pauses when the reader
    falls behind. An engine that yields nothing for ``chunk_timeout_s`` fails
    the request with ``error="timeout"``. :meth:`aclose` sets the cancel flag,
    unblocks the worker and awaits it (at most :data:`CLOSE_WAIT_S`; a hung
    engine keeps its thread until it returns). ``on_finished`` runs on the loop
    each time the stream lets go of its slot: when no thread works for it any more.

    With ``reacquire`` (and a ``rest_executor``) a worker that finds the reader
    :data:`MAX_CHUNKS_AHEAD` chunks behind *parks* instead of waiting: it keeps the
    engine's generator and the chunk in hand, gives its slot back, and the reader,
    once it has taken what was queued, awaits ``reacquire`` (a slot, in fair order)
    and resumes it. A long utterance so holds a slot while it synthesises, not while
    its audio plays.

    ``observer`` gets one :class:`~synthesis.observer.SynthesisReport` on the loop once
    no thread works for the stream any more (done, cancelled or failed), if the engine
    was ever called.
    """

    def __init__(
        self,
        engine: Engine,
        request: SynthesisRequest,
        *,
        executor: concurrent.futures.Executor | None = None,
        rest_executor: concurrent.futures.Executor | None = None,
        max_chunks_ahead: int = MAX_CHUNKS_AHEAD,
        chunk_timeout_s: float = CHUNK_TIMEOUT_S,
        on_finished: Callable[[], None] | None = None,
        reacquire: Callable[[], Awaitable[None]] | None = None,
        observer: SynthesisObserver | None = None,
    ) -> None:
        self._engine = engine
        self._request = request
        self._executor = executor
        self._rest_executor = rest_executor
        self._ahead = max_chunks_ahead
        self._reacquire = reacquire if rest_executor is not None else None
        self._parked: tuple[Iterator[AudioChunk], AudioChunk] | None = None
        # a stream that may park keeps one place more: the parked marker always fits
        self._queue: asyncio.Queue[AudioChunk | BaseException | _End | _Parked] = asyncio.Queue(
            max_chunks_ahead + (self._reacquire is not None)
        )
        self._holding = True
        self._cancel = threading.Event()
        self._worker: asyncio.Future[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._done = False
        self._chunk_timeout_s = chunk_timeout_s
        self._on_finished = on_finished
        self._observer = observer
        self._meter = _EngineMeter()
        self._timed_out = False

    def _finished(self, _: object = None) -> None:
        self._let_go()

    def _let_go(self) -> None:
        """Give the slot back (once per time it was taken)."""
        if self._holding and self._on_finished is not None:
            self._holding = False
            self._on_finished()

    def start(self) -> None:
        if self._worker is not None:
            return
        self._loop = loop = asyncio.get_running_loop()
        self._worker = loop.create_future()
        self._worker.add_done_callback(self._finished)
        self._worker.add_done_callback(self._report)
        self._submit(self._executor, self._run)

    def _report(self, _: object = None) -> None:
        """On the loop, once no thread works for the stream: tell the observer."""
        meter = self._meter
        if self._observer is None or meter.started is None:
            return
        if self._timed_out:
            outcome = SynthesisOutcome.FAILED
        else:
            outcome = meter.outcome or SynthesisOutcome.CANCELLED
        report = SynthesisReport(
            self._engine.name,
            self._request.mode,
            meter.first_chunk_s,
            meter.compute_s,
            meter.audio_s,
            outcome,
        )
        try:
            self._observer.synthesised(report)
        except Exception:  # a figure lost, never the stream
            logger.exception("synthesis observer failed")

    def _submit(self, executor: concurrent.futures.Executor | None, *args: Any) -> None:
        """Run ``args`` in ``executor`` (None: the loop's default); a refusal (the
        executor shut down) ends the work at once."""
        assert self._loop is not None
        try:
            if executor is None:
                self._loop.run_in_executor(None, *args)
            else:
                executor.submit(*args)
        except RuntimeError:
            self._worker_done()

    def _worker_done(self) -> None:
        """No thread works for this stream any more (called from that thread)."""
        assert self._loop is not None and self._worker is not None
        try:
            self._loop.call_soon_threadsafe(_resolve, self._worker)
        except RuntimeError:  # loop closed
            pass

    def _put(self, item: AudioChunk | BaseException | _End) -> bool:
        """Hand ``item`` to the loop, waiting for room; False once cancelled."""
        assert self._loop is not None
        try:
            fut = asyncio.run_coroutine_threadsafe(self._queue.put(item), self._loop)
        except RuntimeError:  # loop closed
            return False
        while True:
            try:
                fut.result(timeout=_PUT_POLL_S)
                return True
            except concurrent.futures.TimeoutError:
                if self._cancel.is_set():
                    fut.cancel()
                    return False
            except concurrent.futures.CancelledError:
                return False

    def _run(self) -> None:
        handed_off = False
        meter = self._meter
        try:
            meter.started = began = time.perf_counter()
            try:  # an engine may work before its first chunk is asked for
                raw = iter(self._engine.synthesize(self._request, self._cancel))
            finally:
                meter.compute_s += time.perf_counter() - began
            chunks = _MeteredChunks(raw, meter)
            if self._rest_executor is not None:
                for _ in range(URGENT_CHUNKS):
                    chunk = next(chunks, _END)
                    if isinstance(chunk, _End):
                        self._ended()
                        self._put(_END)
                        return
                    if self._cancel.is_set() or not self._put(chunk):
                        return
                self._submit(self._rest_executor, self._run_rest, chunks)
                handed_off = True
                return
            self._drain(chunks)
        except BaseException as exc:  # delivered to the reader, not lost in the thread
            meter.outcome = SynthesisOutcome.FAILED
            if not self._cancel.is_set():
                self._put(exc)
        finally:
            if not handed_off:
                self._worker_done()

    def _run_rest(self, chunks: Iterator[AudioChunk], pending: AudioChunk | None = None) -> None:
        parked = False
        try:
            parked = self._drain(chunks, pending)
        except BaseException as exc:
            self._meter.outcome = SynthesisOutcome.FAILED
            if not self._cancel.is_set():
                self._put(exc)
        finally:
            if not parked:
                self._worker_done()

    def _drain(self, chunks: Iterator[AudioChunk], pending: AudioChunk | None = None) -> bool:
        """Hand every chunk over; True if it parked instead (the thread lets go)."""
        items = chunks if pending is None else itertools.chain((pending,), chunks)
        for chunk in items:
            if self._cancel.is_set():
                return False
            # qsize from this thread is a racy read of a length: at worst it parks one
            # chunk early or late, and the reader resumes it either way
            if self._reacquire is not None and self._queue.qsize() >= self._ahead:
                assert self._loop is not None
                try:
                    self._loop.call_soon_threadsafe(self._park, chunks, chunk)
                except RuntimeError:  # loop closed
                    return False
                return True
            if not self._put(chunk):
                return False
        self._ended()
        self._put(_END)
        return False

    def _ended(self) -> None:
        """The engine's generator ended: done, unless it stopped because it was cancelled."""
        if not self._cancel.is_set():
            self._meter.outcome = SynthesisOutcome.DONE

    def _park(self, chunks: Iterator[AudioChunk], chunk: AudioChunk) -> None:
        """On the loop: the worker let go; give the slot back until the reader needs more."""
        if self._done:  # closed while it parked: nothing works for it any more
            if self._worker is not None:
                _resolve(self._worker)
            return
        self._parked = (chunks, chunk)
        self._queue.put_nowait(_PARKED)
        self._let_go()

    async def _resume(self) -> None:
        """The reader caught up with a parked worker: take a slot again and go on."""
        assert self._reacquire is not None and self._parked is not None
        await self._reacquire()
        self._holding = True
        chunks, chunk = self._parked
        self._parked = None
        self._submit(self._rest_executor, self._run_rest, chunks, chunk)

    def __aiter__(self) -> AsyncIterator[AudioChunk]:
        return self

    async def __anext__(self) -> AudioChunk:
        self.start()
        if self._done:
            raise StopAsyncIteration
        try:
            # asyncio.timeout, not wait_for: 3.11's wait_for returns a chunk that arrives
            # as the reader is cancelled and swallows the cancel, so a cancelled speaker
            # kept running and closing its session hung
            async with asyncio.timeout(self._chunk_timeout_s):
                item = await self._queue.get()
            while isinstance(item, _Parked):
                await self._resume()  # outside the timeout: waiting for a slot has its own
                async with asyncio.timeout(self._chunk_timeout_s):
                    item = await self._queue.get()
        except TimeoutError:
            self._done = True
            self._timed_out = True
            self._cancel.set()
            logger.error(
                "engine %r produced nothing for %.1f s: request abandoned",
                self._engine.name,
                self._chunk_timeout_s,
            )
            raise SynthesisTimeout(
                "timeout",
                f"the {self._engine.name} engine produced no audio for {self._chunk_timeout_s:g} s",
                "retry; if it keeps happening, the engine is overloaded or stuck",
            ) from None
        if isinstance(item, _End):
            self._done = True
            raise StopAsyncIteration
        if isinstance(item, BaseException):
            self._done = True
            if isinstance(item, SynthesisError):
                raise item
            raise SynthesisError(
                "synthesis_failed",
                f"engine {self._engine.name!r} failed: {item}",
                "retry the request; if it keeps failing, check the server log",
            ) from item
        return item

    async def aclose(self) -> None:
        """Cancel synthesis and wait until the worker thread has let go."""
        self._cancel.set()
        self._done = True
        while not self._queue.empty():
            self._queue.get_nowait()
        if self._parked is not None:  # no thread works for it
            self._parked = None
            if self._worker is not None:
                _resolve(self._worker)
        if self._worker is None:
            self._finished()
            return
        try:
            async with asyncio.timeout(CLOSE_WAIT_S):
                await asyncio.shield(self._worker)
        except TimeoutError:
            logger.warning("engine %r did not stop within %.1f s", self._engine.name, CLOSE_WAIT_S)
        except Exception:  # already reported to the reader, or irrelevant now
            logger.debug("synthesis worker ended with an error during close", exc_info=True)
