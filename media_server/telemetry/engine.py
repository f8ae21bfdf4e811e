"""EngineObserver: the server's side of the synthesis seam: engine latency, RTF, and the
live requests the engine refused."""

from __future__ import annotations

import logging

from media_server.telemetry.metrics import ServerMetrics
from synthesis.observer import SynthesisOutcome, SynthesisReport

logger = logging.getLogger(__name__)


class EngineObserver:
    """A :class:`~synthesis.observer.SynthesisObserver` that observes each stream's
    report into :class:`ServerMetrics` (``synthesis`` never sees the metrics).

    The real-time factor is observed for streams that produced audio and did not fail:
    a failed engine's time is not the cost of the audio it made.
    """

    def __init__(self, metrics: ServerMetrics) -> None:
        self._metrics = metrics

    def synthesised(self, report: SynthesisReport) -> None:
        engine, mode = report.engine, report.mode.value
        if report.first_chunk_s is not None:
            self._metrics.engine_first_chunk.labels(engine=engine, mode=mode).observe(
                report.first_chunk_s
            )
        rtf = report.real_time_factor
        if rtf is not None and report.outcome is not SynthesisOutcome.FAILED:
            self._metrics.engine_rtf.labels(engine=engine, mode=mode).observe(rtf)

    def refused(self, engine: str, code: str) -> None:
        self._metrics.refusals.labels(reason=code).inc()
