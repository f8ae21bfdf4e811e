"""EngineObserver: each report and each live refusal land in ServerMetrics with their labels."""

from __future__ import annotations

import pytest

from media_server.telemetry import EngineObserver, ServerMetrics
from synthesis import (
    EngineBusy,
    Mode,
    SynthesisOutcome,
    SynthesisReport,
    SynthesisRequest,
    SynthesisService,
)
from synthesis.testing import ScriptedEngine

PIPER_SFT = {"engine": "piper", "mode": "sft"}


def test_reports_become_first_chunk_and_rtf_but_a_failure_has_no_rtf() -> None:
    metrics = ServerMetrics()
    observer = EngineObserver(metrics)
    observer.synthesised(SynthesisReport("piper", Mode.SFT, 0.2, 0.5, 2.0, SynthesisOutcome.DONE))
    observer.synthesised(SynthesisReport("piper", Mode.SFT, 0.3, 1.0, 1.0, SynthesisOutcome.FAILED))
    observer.synthesised(
        SynthesisReport("piper", Mode.SFT, None, 0.1, 0.0, SynthesisOutcome.CANCELLED)
    )
    value = metrics.registry.get_sample_value
    assert value("vms_engine_first_chunk_seconds_count", PIPER_SFT) == 2
    assert value("vms_engine_first_chunk_seconds_sum", PIPER_SFT) == pytest.approx(0.5)
    assert value("vms_engine_real_time_factor_count", PIPER_SFT) == 1
    assert value("vms_engine_real_time_factor_sum", PIPER_SFT) == pytest.approx(0.25)


async def test_a_live_request_refused_by_the_service_is_one_refusal() -> None:
    metrics = ServerMetrics()
    engine = ScriptedEngine(chunks=100, delay_s=0.01)
    service = SynthesisService(engine, 1, observer=EngineObserver(metrics), queue_timeout_s=0.05)
    request = SynthesisRequest(text="text")
    try:
        holder = await service.open(request, owner="a")
        await holder.__anext__()
        with pytest.raises(EngineBusy):
            await service.open(request, owner="b")
        await holder.aclose()
    finally:
        service.close()
    assert metrics.registry.get_sample_value("vms_refusals_total", {"reason": "engine_busy"}) == 1
