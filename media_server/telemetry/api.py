"""The TTS APIs' figures and refusals, as signaling and the ``/tts/ws`` speaker see them.

Label values stay bounded: ``api`` is :class:`TtsApi`, ``format`` one the route
accepted (else :data:`UNKNOWN_FORMAT`), ``status`` an HTTP status or, on the
WebSocket, ``ok``/``cancelled``/an error code (codes are fixed strings in the code).
"""

from __future__ import annotations

import logging
import time
from enum import StrEnum
from typing import Final

from prometheus_client import Histogram

from media_server.telemetry.metrics import ServerMetrics
from synthesis.errors import ClientError, ClientLimit, ServerBusy

logger = logging.getLogger(__name__)

UNKNOWN_FORMAT: Final = "unknown"
"""The ``format`` of a request refused before its format was known to be one."""
WS_OK: Final = "ok"
WS_CANCELLED: Final = "cancelled"


class TtsApi(StrEnum):
    HTTP = "http"
    """``POST /tts``."""
    WS = "ws"
    """``/tts/ws``: one count per utterance (or refused message)."""


def is_refusal(exc: ClientError) -> bool:
    """Refused for capacity, limits or shutdown (503 and 429), not for what was asked."""
    return isinstance(exc, (ServerBusy, ClientLimit))


def count_refusal(metrics: ServerMetrics | None, exc: ClientError) -> None:
    """``refusals{reason=code}`` if ``exc`` is a refusal (None: nothing is counted, for
    objects tests build without metrics)."""
    if metrics is not None and is_refusal(exc):
        metrics.refusals.labels(reason=exc.code).inc()


def count_tts_request(metrics: ServerMetrics, api: TtsApi, fmt: str | None, status: str) -> None:
    metrics.tts_requests.labels(api=api, format=fmt or UNKNOWN_FORMAT, status=status).inc()


class FirstByte:
    """Observes ``tts_request_to_first_byte_seconds`` once, at the first audio sent.

    ``received_s`` is ``time.monotonic()`` when the request (or utterance message)
    arrived; later calls to :meth:`sent` do nothing."""

    __slots__ = ("_histogram", "_received_s")

    def __init__(self, histogram: Histogram, received_s: float | None) -> None:
        self._histogram = histogram
        self._received_s = received_s

    @classmethod
    def of(cls, metrics: ServerMetrics, api: TtsApi, fmt: str, received_s: float) -> FirstByte:
        return cls(metrics.tts_first_byte.labels(api=api, format=fmt), received_s)

    def sent(self) -> None:
        if self._received_s is not None:
            self._histogram.observe(time.monotonic() - self._received_s)
            self._received_s = None


class SocketMeter:
    """One ``/tts/ws`` socket's figures, its format bound once: each utterance's first
    audio, how each ended, and the messages refused."""

    def __init__(self, metrics: ServerMetrics, fmt: str) -> None:
        self._metrics = metrics
        self._fmt = fmt
        self._first_byte = metrics.tts_first_byte.labels(api=TtsApi.WS, format=fmt)

    def first_byte(self, received_ms: float | None) -> FirstByte:
        """For an utterance received at ``received_ms`` (``time.monotonic()`` in ms)."""
        return FirstByte(self._first_byte, None if received_ms is None else received_ms / 1000)

    def refused(self, exc: ClientError) -> None:
        """A message or an utterance's synthesis failed with ``exc``."""
        count_refusal(self._metrics, exc)
        count_tts_request(self._metrics, TtsApi.WS, self._fmt, exc.code)

    def ended(self, *, cancelled: bool) -> None:
        """An utterance was spoken to its end, or cancelled."""
        status = WS_CANCELLED if cancelled else WS_OK
        count_tts_request(self._metrics, TtsApi.WS, self._fmt, status)
