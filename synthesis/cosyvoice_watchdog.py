"""The CosyVoice 2 engine's per-request clock: whole-request and between-chunk timeouts."""

from __future__ import annotations

from collections.abc import Callable

from synthesis.errors import SynthesisTimeout


class Watchdog:
    """Engine time of one request: total and since the last chunk.

    Time while the generator is suspended at ``yield`` (the reader is slow or pacing
    playback) is not counted: call :meth:`resume` when control comes back.
    """

    def __init__(
        self, request_timeout_s: float, chunk_timeout_s: float, clock: Callable[[], float]
    ) -> None:
        self._request_timeout_s = request_timeout_s
        self._chunk_timeout_s = chunk_timeout_s
        self._clock = clock
        self._mark = clock()
        self._busy_s = 0.0
        self._since_chunk_s = 0.0

    def resume(self) -> None:
        self._mark = self._clock()

    def check(self) -> None:
        now = self._clock()
        elapsed, self._mark = now - self._mark, now
        self._busy_s += elapsed
        self._since_chunk_s += elapsed
        if self._busy_s > self._request_timeout_s:
            raise SynthesisTimeout(
                "timeout",
                f"the cosyvoice engine did not finish within {self._request_timeout_s:g} s",
                "shorten the text or retry; raise VMS_COSYVOICE_REQUEST_TIMEOUT_S if the "
                "hardware is slow",
            )
        if self._since_chunk_s > self._chunk_timeout_s:
            raise SynthesisTimeout(
                "timeout",
                f"the cosyvoice engine produced no audio for {self._chunk_timeout_s:g} s",
                "retry; if it keeps happening the engine is overloaded or stuck "
                "(VMS_COSYVOICE_CHUNK_TIMEOUT_S sets the limit)",
            )

    def chunk_delivered(self) -> None:
        self._since_chunk_s = 0.0
