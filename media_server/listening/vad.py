"""Server-side voice activity detection on a caller's 16 kHz stream: a model scores short
windows, and hysteresis turns the scores into ``speaking`` starts and stops."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Final, Protocol

import numpy as np
import numpy.typing as npt

from media_server.listening.caller_audio import INPUT_RATE_HZ, VoiceActivity

logger = logging.getLogger(__name__)

Pcm = npt.NDArray[np.int16]

HOLD_MARGIN: Final = 0.15
"""While a caller speaks, a window still counts as speech down to the threshold minus
this: a score hovering at the threshold does not chop one utterance into several."""
MIN_HOLD_THRESHOLD: Final = 0.01


class SpeechScorer(Protocol):
    """A VAD model: how likely a window of 16 kHz s16 audio holds speech (0..1).

    Stateful (recurrent models carry context from one window to the next), so one
    per caller stream."""

    @property
    def window_samples(self) -> int: ...

    def score(self, window: Pcm) -> float: ...


class EarshotScorer:
    """`earshot <https://pypi.org/project/earshot/>`_: a small model compiled into its
    wheel (no download, no ONNX Runtime), 16 ms windows, tens of microseconds each."""

    window_samples: Final = 256

    def __init__(self) -> None:
        import earshot  # the wheel's native module: loaded only where a caller exists

        self._detector = earshot.Detector()

    def score(self, window: Pcm) -> float:
        return float(self._detector.predict_i16(window))


def _ms_to_samples(ms: float) -> int:
    return int(ms * INPUT_RATE_HZ / 1000)


class VoiceActivityDetector:
    """One caller's speech starts and stops, at sample positions of its 16 kHz stream.

    ``push`` takes the stream's frames (any length) with the position of their first
    sample; windows are scored as they fill. Speech starts once ``min_speech_ms`` of
    windows in a row score at least ``threshold`` (the start is where that run began)
    and stops once ``min_silence_ms`` in a row score below ``threshold -``
    :data:`HOLD_MARGIN` (the stop is where the silence began). A gap in positions
    (lost packets, a muted sender) counts as silence; the part-filled window before it
    is dropped.
    """

    def __init__(
        self,
        participant: str,
        scorer: SpeechScorer,
        *,
        threshold: float = 0.5,
        min_speech_ms: float = 150,
        min_silence_ms: float = 400,
        now_ms: Callable[[], float] = lambda: time.monotonic() * 1000,
    ) -> None:
        self.participant = participant
        self._scorer = scorer
        self._window = scorer.window_samples
        self.threshold = threshold
        self._hold_threshold = max(MIN_HOLD_THRESHOLD, threshold - HOLD_MARGIN)
        self._min_speech = _ms_to_samples(min_speech_ms)
        self._min_silence = _ms_to_samples(min_silence_ms)
        self._now_ms = now_ms
        self.speaking = False
        self.last_score = 0.0
        self._pending = np.zeros(0, dtype=np.int16)
        self._pending_at = 0
        """Position of ``_pending``'s first sample."""
        self._expected: int | None = None
        """Position just after the last sample pushed (None before the first)."""
        self._run_start: int | None = None
        """Where the run that may change the state began: speech while silent,
        silence while speaking."""

    def push(self, position: int, pcm: Pcm) -> list[VoiceActivity]:
        """Score what ``pcm`` completes; returns the changes it caused, in order."""
        changes: list[VoiceActivity] = []
        if self._expected is not None and position != self._expected:
            self._gap(self._expected, position, changes)
        if self._pending.size == 0:
            self._pending_at = position
            self._pending = pcm
        else:
            self._pending = np.concatenate([self._pending, pcm])
        self._expected = position + pcm.size
        window = self._window
        offset = 0
        while self._pending.size - offset >= window:
            at = self._pending_at + offset
            self._judge(at, self._scorer.score(self._pending[offset : offset + window]), changes)
            offset += window
        if offset:
            self._pending = self._pending[offset:]
            self._pending_at += offset
        return changes

    def finish(self) -> VoiceActivity | None:
        """The stream ended or went quiet (no packets): a stop if the caller was speaking,
        where its silence began (or at the last sample heard)."""
        if not self.speaking:
            self._run_start = None
            return None
        end = self._run_start if self._run_start is not None else self._expected or 0
        self.speaking = False
        self._run_start = None
        return self._change(False, end)

    def _gap(self, expected: int, position: int, changes: list[VoiceActivity]) -> None:
        """No audio from ``expected`` to ``position``: silence (a backwards jump: none)."""
        self._pending = np.zeros(0, dtype=np.int16)
        if not self.speaking:
            self._run_start = None
            return
        if self._run_start is None:
            self._run_start = expected
        if position - self._run_start >= self._min_silence:
            changes.append(self._stop())

    def _judge(self, at: int, score: float, changes: list[VoiceActivity]) -> None:
        self.last_score = score
        end = at + self._window
        if not self.speaking:
            if score < self.threshold:
                self._run_start = None
                return
            if self._run_start is None:
                self._run_start = at
            if end - self._run_start >= self._min_speech:
                start = self._run_start
                self.speaking = True
                self._run_start = None
                changes.append(self._change(True, start))
        else:
            if score >= self._hold_threshold:
                self._run_start = None
                return
            if self._run_start is None:
                self._run_start = at
            if end - self._run_start >= self._min_silence:
                changes.append(self._stop())

    def _stop(self) -> VoiceActivity:
        assert self._run_start is not None
        start = self._run_start
        self.speaking = False
        self._run_start = None
        return self._change(False, start)

    def _change(self, speaking: bool, position: int) -> VoiceActivity:
        return VoiceActivity(self.participant, speaking, position, self._now_ms())
