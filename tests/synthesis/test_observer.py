"""SynthesisStream reports what its engine did, once, on the loop, however it ended."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading

import pytest

from synthesis import (
    EngineBusy,
    Mode,
    SynthesisError,
    SynthesisOutcome,
    SynthesisReport,
    SynthesisRequest,
    SynthesisService,
    SynthesisStream,
)
from synthesis.service import Caller
from synthesis.testing import ScriptedEngine

REQUEST = SynthesisRequest(text="text")


class Recorder:
    """An observer that keeps every report and the thread it was told on."""

    def __init__(self) -> None:
        self.reports: list[SynthesisReport] = []
        self.refusals: list[tuple[str, str]] = []
        self.threads: list[int] = []
        self.told = asyncio.Event()

    def refused(self, engine: str, code: str) -> None:
        self.refusals.append((engine, code))

    def synthesised(self, report: SynthesisReport) -> None:
        self.reports.append(report)
        self.threads.append(threading.get_ident())
        self.told.set()


async def test_a_finished_stream_reports_its_audio_and_compute_on_the_loop() -> None:
    engine = ScriptedEngine(chunks=3, chunk_s=0.5, delay_s=0.02)
    recorder = Recorder()
    stream = SynthesisStream(engine, REQUEST, observer=recorder)
    chunks = [chunk async for chunk in stream]
    await stream.aclose()
    await asyncio.wait_for(recorder.told.wait(), 2)
    assert len(chunks) == 3
    [report] = recorder.reports
    assert recorder.threads == [threading.get_ident()]
    assert report.engine == "scripted" and report.mode is Mode.SFT
    assert report.outcome is SynthesisOutcome.DONE
    assert report.audio_s == pytest.approx(1.5)
    assert report.first_chunk_s is not None and report.first_chunk_s >= 0.02
    assert report.compute_s >= 3 * 0.02
    assert report.real_time_factor == pytest.approx(report.compute_s / 1.5)


async def test_waiting_for_a_slow_reader_is_not_compute() -> None:
    """The worker blocks on a full queue while the reader sleeps; that wait is not the
    engine's time."""
    engine = ScriptedEngine(chunks=4, chunk_s=0.1)
    recorder = Recorder()
    stream = SynthesisStream(engine, REQUEST, max_chunks_ahead=1, observer=recorder)
    async for _ in stream:
        await asyncio.sleep(0.2)
    await stream.aclose()
    await asyncio.wait_for(recorder.told.wait(), 2)
    [report] = recorder.reports
    assert report.outcome is SynthesisOutcome.DONE
    assert report.audio_s == pytest.approx(0.4)
    assert report.compute_s < 0.4  # the reader held the worker for 0.6 s or more


async def test_a_parked_stream_counts_only_the_engines_time() -> None:
    """A live stream far ahead of its reader parks (gives its slot back); resumed on
    another thread, it still reports one report with all its audio."""
    engine = ScriptedEngine(chunks=12, chunk_s=0.1, any_thread=True)
    recorder = Recorder()
    service = SynthesisService(engine, 1, observer=recorder)
    try:
        stream = await service.open(REQUEST, owner="o")
        got = 0
        async for _ in stream:
            got += 1
            await asyncio.sleep(0.05)
        await stream.aclose()
        await asyncio.wait_for(recorder.told.wait(), 2)
    finally:
        service.close()
    assert got == 12
    [report] = recorder.reports
    assert report.outcome is SynthesisOutcome.DONE
    assert report.audio_s == pytest.approx(1.2)
    assert report.compute_s < 0.5  # the reader took 0.6 s; the tone costs far less
    assert len(set(engine.chunk_threads)) >= 2  # it did move off the urgent thread


async def test_a_cancelled_stream_reports_cancelled() -> None:
    engine = ScriptedEngine(chunks=1000, chunk_s=0.02)
    recorder = Recorder()
    executor = concurrent.futures.ThreadPoolExecutor(1)
    stream = SynthesisStream(
        engine, REQUEST, executor=executor, max_chunks_ahead=2, observer=recorder
    )
    await stream.__anext__()
    await stream.aclose()
    await asyncio.wait_for(recorder.told.wait(), 2)
    executor.shutdown()
    [report] = recorder.reports
    assert report.outcome is SynthesisOutcome.CANCELLED
    assert report.first_chunk_s is not None
    assert 0 < report.audio_s < 1000 * 0.02


async def test_a_failed_stream_reports_failed() -> None:
    recorder = Recorder()
    stream = SynthesisStream(ScriptedEngine(chunks=3, fail_after=1), REQUEST, observer=recorder)
    with pytest.raises(SynthesisError):
        async for _ in stream:
            pass
    await stream.aclose()
    await asyncio.wait_for(recorder.told.wait(), 2)
    [report] = recorder.reports
    assert report.outcome is SynthesisOutcome.FAILED
    assert report.audio_s == pytest.approx(0.5)


async def test_an_engine_that_never_answers_fails_with_no_first_chunk() -> None:
    recorder = Recorder()
    engine = ScriptedEngine(chunks=1, delay_s=0.5)
    stream = SynthesisStream(engine, REQUEST, chunk_timeout_s=0.1, observer=recorder)
    with pytest.raises(SynthesisError, match="no audio"):
        await stream.__anext__()
    await stream.aclose()
    await asyncio.wait_for(recorder.told.wait(), 2)
    [report] = recorder.reports
    assert report.outcome is SynthesisOutcome.FAILED
    assert report.first_chunk_s is None or report.first_chunk_s >= 0.5


async def test_a_broken_observer_never_breaks_the_stream() -> None:
    class Broken:
        def synthesised(self, report: SynthesisReport) -> None:
            raise RuntimeError("observer bug")

        def refused(self, engine: str, code: str) -> None:
            raise AssertionError("nothing was refused")

    stream = SynthesisStream(ScriptedEngine(chunks=2), REQUEST, observer=Broken())
    assert len([chunk async for chunk in stream]) == 2
    await stream.aclose()


async def test_only_a_live_request_refused_after_its_wait_is_reported() -> None:
    """HTTP callers are refused at once and counted where they are answered; a live
    request's refusal reaches its client only as an event, so the service reports it."""
    engine = ScriptedEngine(chunks=100, chunk_s=0.1, delay_s=0.01)
    recorder = Recorder()
    service = SynthesisService(engine, 1, observer=recorder, queue_timeout_s=0.1)
    try:
        holder = await service.open(REQUEST, owner="a")
        await holder.__anext__()
        with pytest.raises(EngineBusy):
            service.stream(REQUEST, Caller.HTTP)
        assert recorder.refusals == []
        with pytest.raises(EngineBusy):
            await service.open(REQUEST, owner="b")
        assert recorder.refusals == [("scripted", "engine_busy")]
        await holder.aclose()
    finally:
        service.close()
