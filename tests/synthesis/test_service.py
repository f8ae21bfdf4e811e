"""The concurrency limit, and an engine that raises, hangs or is slow."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest

from synthesis import (
    AudioChunk,
    ClientError,
    EngineBusy,
    SynthesisError,
    SynthesisRequest,
    SynthesisService,
)
from synthesis.testing import ScriptedEngine

REQUEST = SynthesisRequest(text="text")


class HangingEngine(ScriptedEngine):
    """Hangs before its first chunk until released (like a stuck model call)."""

    def __init__(self) -> None:
        super().__init__(chunks=2)
        self.release = threading.Event()
        self.returned = threading.Event()

    def synthesize(
        self, request: SynthesisRequest, cancel: threading.Event
    ) -> Iterator[AudioChunk]:
        try:
            self.release.wait(10)
            yield from super().synthesize(request, cancel)
        finally:
            self.returned.set()


async def drain(service: SynthesisService) -> int:
    stream = service.stream(REQUEST)
    try:
        return len([c async for c in stream])
    finally:
        await stream.aclose()


@pytest.mark.slow
async def test_limit_admits_then_refuses_then_admits_again() -> None:
    service = SynthesisService(ScriptedEngine(chunks=3, delay_s=0.05), 2)
    first, second = service.stream(REQUEST), service.stream(REQUEST)
    with pytest.raises(EngineBusy) as info:
        service.stream(REQUEST)
    assert info.value.code == "engine_busy" and info.value.retry_after_s > 0
    assert service.stats().refused_total == 1
    for stream in (first, second):
        assert len([c async for c in stream]) == 3
        await stream.aclose()
    assert service.running == 0
    assert await drain(service) == 3
    service.close()


async def test_a_stream_closed_before_it_started_gives_its_slot_back() -> None:
    service = SynthesisService(ScriptedEngine(), 1)
    await service.stream(REQUEST).aclose()
    assert service.running == 0
    service.close()


async def test_engine_exception_fails_the_request_and_the_service_goes_on() -> None:
    engine = ScriptedEngine(chunks=2, fail_after=1)
    service = SynthesisService(engine, 1)
    with pytest.raises(SynthesisError, match="injected"):
        await drain(service)
    assert service.running == 0
    engine.fail_after = None
    assert await drain(service) == 2
    service.close()


@pytest.mark.slow
async def test_hung_engine_times_out_and_holds_its_slot_until_it_returns() -> None:
    engine = HangingEngine()
    service = SynthesisService(engine, 1, chunk_timeout_s=0.2)
    with pytest.raises(ClientError) as info:
        await drain(service)
    assert info.value.code == "timeout"
    # the stuck thread still holds the only slot: new work is refused, not queued forever
    assert service.running == 1
    with pytest.raises(EngineBusy):
        service.stream(REQUEST)
    engine.release.set()  # the model call finally returns
    await asyncio.get_running_loop().run_in_executor(None, engine.returned.wait, 5)
    for _ in range(100):
        if service.running == 0:
            break
        await asyncio.sleep(0.01)
    assert service.running == 0
    assert await drain(service) == 2  # recovered
    service.close()


async def test_slow_engine_is_not_a_timeout() -> None:
    service = SynthesisService(ScriptedEngine(chunks=3, delay_s=0.1), 1, chunk_timeout_s=0.5)
    assert await drain(service) == 3
    service.close()
