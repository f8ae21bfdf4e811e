"""SynthesisStream: off-loop synthesis, errors delivered, cancellation frees the worker."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading

import pytest

from synthesis import SynthesisError, SynthesisRequest, SynthesisStream
from synthesis.testing import ScriptedEngine

REQUEST = SynthesisRequest(text="text")


async def test_chunks_arrive_in_order_from_a_worker_thread() -> None:
    engine = ScriptedEngine(chunks=3)
    loop_thread = threading.get_ident()
    threads: list[int] = []
    original = engine.synthesize

    def recording(*args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        threads.append(threading.get_ident())
        yield from original(*args, **kwargs)  # type: ignore[arg-type]

    engine.synthesize = recording  # type: ignore[method-assign]
    stream = SynthesisStream(engine, REQUEST)
    chunks = [chunk async for chunk in stream]
    await stream.aclose()
    assert len(chunks) == 3
    assert threads and threads[0] != loop_thread


async def test_engine_exception_becomes_synthesis_error() -> None:
    stream = SynthesisStream(ScriptedEngine(chunks=3, fail_after=1), REQUEST)
    got = []
    with pytest.raises(SynthesisError, match="injected engine failure"):
        async for chunk in stream:
            got.append(chunk)
    assert len(got) == 1
    await stream.aclose()


async def test_reader_that_stops_reading_backpressures_and_close_frees_the_worker() -> None:
    engine = ScriptedEngine(chunks=1000)
    executor = concurrent.futures.ThreadPoolExecutor(1)
    stream = SynthesisStream(engine, REQUEST, executor=executor, max_chunks_ahead=2)
    await stream.__anext__()
    await asyncio.sleep(0.2)
    # the worker waits for room instead of synthesising all 1000 chunks
    assert engine.produced_chunks <= 4
    await asyncio.wait_for(stream.aclose(), 2)
    # the single worker thread is free again
    assert await asyncio.get_running_loop().run_in_executor(executor, lambda: 42) == 42
    executor.shutdown()


async def test_cancel_reaches_the_engine_between_chunks() -> None:
    engine = ScriptedEngine(chunks=50, delay_s=0.01)
    stream = SynthesisStream(engine, REQUEST, max_chunks_ahead=100)
    await stream.__anext__()
    await stream.aclose()
    produced = engine.produced_chunks
    await asyncio.sleep(0.1)
    assert engine.produced_chunks == produced < 50


async def test_a_cancel_is_never_lost_when_a_chunk_arrives_at_the_same_moment() -> None:
    # Python 3.11's asyncio.wait_for returns the result and swallows the cancellation
    # when the awaited future is done by the time the cancel is handled: a speaker
    # producer cancelled at that moment kept running, and closing its session hung
    # forever (tests/signaling/test_hardening_guard.py, 1 run in 25).
    engine = ScriptedEngine(chunks=1)
    chunk = next(iter(engine.synthesize(REQUEST, threading.Event())))
    lost = 0
    for spins in [0, 1, 2, 3, 4] * 20:
        stream = SynthesisStream(engine, REQUEST)
        stream._worker = asyncio.get_running_loop().create_future()  # no engine thread
        stream._worker.set_result(None)
        reader = asyncio.create_task(stream.__anext__())
        await asyncio.sleep(0)  # the reader waits for a chunk
        stream._queue.put_nowait(chunk)
        for _ in range(spins):
            await asyncio.sleep(0)
        if not reader.cancel():
            continue  # it had already returned the chunk: nothing to lose
        try:
            await reader
            lost += 1  # cancelled, yet it returned normally
        except asyncio.CancelledError:
            pass
        await stream.aclose()
    assert lost == 0
