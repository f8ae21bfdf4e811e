"""Live requests wait for a synthesis slot in fair order instead of being refused."""

from __future__ import annotations

import asyncio

import pytest

from synthesis import EngineBusy, SynthesisRequest, SynthesisService
from synthesis.stream import URGENT_CHUNKS
from synthesis.testing import ScriptedEngine
from synthesis.waiters import WaitQueue

REQUEST = SynthesisRequest(text="text")


async def test_first_pieces_go_before_continuations_and_owners_take_turns() -> None:
    queue = WaitQueue()
    queue.served("a")  # "a" was just served without waiting
    tail, at_tail = queue.add("c", continuation=True)
    a, at_a = queue.add("a", continuation=False)
    b, at_b = queue.add("b", continuation=False)
    # each goes before the continuation; b, never served, goes before a too
    assert (at_tail, at_a, at_b) == (1, 1, 1)
    order = []
    while queue.grant_next():
        order.append(next(w for w in (tail, a, b) if w.granted.done() and w not in order))
    assert order == [b, a, tail]


async def test_a_busy_engine_queues_a_live_request_and_serves_it_when_a_slot_frees() -> None:
    service = SynthesisService(ScriptedEngine(), 1)
    held = await service.open(REQUEST, "a")
    positions: list[int] = []
    waiting = asyncio.ensure_future(service.open(REQUEST, "b", on_queued=positions.append))
    await asyncio.sleep(0.01)
    assert positions == [1] and not waiting.done()
    with pytest.raises(EngineBusy):  # nobody jumps the queue through stream()
        service.stream(REQUEST)
    await held.aclose()
    stream = await asyncio.wait_for(waiting, 1)
    stats = service.stats()
    assert (stats.running, stats.waiting, stats.queued_total) == (1, 0, 1)
    await stream.aclose()
    assert service.running == 0
    service.close()


async def test_a_request_waiting_past_its_deadline_is_refused() -> None:
    service = SynthesisService(ScriptedEngine(), 1, queue_timeout_s=0.05)
    held = await service.open(REQUEST, "a")
    with pytest.raises(EngineBusy) as info:
        await service.open(REQUEST, "b")
    assert info.value.code == "engine_busy" and "0.05 s" in info.value.message
    assert service.stats().refused_total == 1 and service.stats().waiting == 0
    await held.aclose()
    assert service.running == 0
    service.close()


async def test_a_cancelled_waiter_leaves_no_slot_behind() -> None:
    service = SynthesisService(ScriptedEngine(), 1)
    held = await service.open(REQUEST, "a")
    waiting = asyncio.ensure_future(service.open(REQUEST, "b"))
    await asyncio.sleep(0.01)
    await held.aclose()  # the slot is granted to the waiter...
    waiting.cancel()  # ...which is cancelled before it runs: it passes the slot on
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert service.running == 0 and service.stats().waiting == 0
    service.close()


async def test_the_first_chunks_run_on_an_urgent_thread_and_the_rest_in_the_background() -> None:
    engine = ScriptedEngine(chunk_s=0.05, chunks=4, any_thread=True)
    service = SynthesisService(engine, 2)
    stream = await service.open(REQUEST, "a")
    chunks = [chunk async for chunk in stream]
    await stream.aclose()
    assert len(chunks) == 4
    urgent = [name.startswith("synthesis-scripted-first") for name in engine.chunk_threads]
    assert urgent == [True] * URGENT_CHUNKS + [False] * (4 - URGENT_CHUNKS)
    assert service.running == 0
    service.close()


async def until_parked(service: SynthesisService) -> None:
    for _ in range(100):
        if service.running == 0:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the stream never gave its slot back")


async def test_a_stream_far_ahead_of_its_reader_gives_its_slot_back_until_it_needs_it() -> None:
    engine = ScriptedEngine(chunk_s=0.01, chunks=20, any_thread=True)
    service = SynthesisService(engine, 1)
    long = await service.open(REQUEST, "a")
    first = await long.__anext__()
    await until_parked(service)  # the reader stops: the worker parks, lets go of the slot
    assert engine.produced_chunks < 20
    other = await asyncio.wait_for(service.open(REQUEST, "b"), 1)  # no wait for a slot
    assert len([chunk async for chunk in other]) == 20
    await other.aclose()
    rest = [chunk async for chunk in long]  # the reader is back: it takes a slot again
    assert len(rest) == 19 and first is not None
    await long.aclose()
    assert service.running == 0 and service.stats().queued_total == 0
    service.close()


async def test_closing_a_parked_stream_frees_everything() -> None:
    engine = ScriptedEngine(chunk_s=0.01, chunks=20, any_thread=True)
    service = SynthesisService(engine, 1)
    stream = await service.open(REQUEST, "a")
    await stream.__anext__()
    await until_parked(service)
    await asyncio.wait_for(stream.aclose(), 1)
    assert service.running == 0
    service.close()
