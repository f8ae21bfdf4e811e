"""The outgoing stream's audio constants and its unit: one encoded 20 ms frame."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

SAMPLE_RATE_HZ: Final = 48_000
"""Opus RTP clock and the rate every stream is resampled to."""

FRAME_MS: Final = 20
FRAME_S: Final = FRAME_MS / 1000
FRAME_SAMPLES: Final = SAMPLE_RATE_HZ * FRAME_MS // 1000
"""960 samples of mono audio in one 20 ms frame."""


@dataclass(frozen=True, slots=True)
class OutgoingFrame:
    """One encoded 20 ms frame with its RTP position (in 48 kHz samples)."""

    payload: bytes
    pts: int
    speech: bool
