"""UtteranceMeter: one stream's utterance metrics, its ``kind`` label bound once."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import Counter, Histogram

from media_server.telemetry.metrics import ServerMetrics, SpeechKind


@dataclass(frozen=True, slots=True)
class UtteranceMeter:
    """The labelled children an :class:`~media_server.speech.queue.UtteranceQueue`
    observes as it emits its events (bound once: no label lookup per utterance)."""

    started: Counter
    done: Counter
    cancelled: Counter
    cancelled_played: Histogram
    first_rtp: Histogram | None
    """None for a sink that sends no RTP (``/tts/ws``)."""

    @classmethod
    def of(cls, metrics: ServerMetrics, kind: SpeechKind) -> UtteranceMeter:
        return cls(
            started=metrics.utterances_started.labels(kind=kind),
            done=metrics.utterances_done.labels(kind=kind),
            cancelled=metrics.utterances_cancelled.labels(kind=kind),
            cancelled_played=metrics.cancelled_played.labels(kind=kind),
            first_rtp=(
                None if kind is SpeechKind.SOCKET else metrics.text_to_first_rtp.labels(kind=kind)
            ),
        )
