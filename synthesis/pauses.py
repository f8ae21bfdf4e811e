"""Pauses around the pieces an engine renders one by one, so the seams are not heard.

An engine that renders a text in pieces (:func:`synthesis.text.split_text`) gives each
its own lead-in and trailing silence: Piper adds about 50 ms before and 120-190 ms after
every piece, so two pieces cut inside one clause would be heard with a pause no speaker
makes. Each piece keeps the pause its ending deserves and no more.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt

from synthesis.text import piece_ending

QUIET: Final = 10 ** (-50 / 20)
"""A sample below this (-50 dBFS of full scale 1.0) is silence for trimming."""
LEAD_KEEP_MS: Final = 10
"""Silence kept before a piece's first sound (the onset's soft start)."""
TRAIL_KEEP_MS: Final = {"word": 20, "clause": 150}
"""Silence kept after a piece's last sound, by how it ends: a cut inside a clause gets a
word gap, a comma a short breath; a sentence end keeps what the engine made."""

Audio = npt.NDArray[np.float32]


def trim_pauses(audio: Audio, rate_hz: int, piece: str) -> Audio:
    """``audio`` (float, full scale 1.0) of ``piece`` with its lead-in cut to
    :data:`LEAD_KEEP_MS` and its tail to what :data:`TRAIL_KEEP_MS` allows."""
    loud = np.flatnonzero(np.abs(audio) > QUIET)
    if loud.size == 0:
        return audio[:0]
    start = max(0, int(loud[0]) - rate_hz * LEAD_KEEP_MS // 1000)
    keep_ms = TRAIL_KEEP_MS.get(piece_ending(piece))
    end = audio.size if keep_ms is None else int(loud[-1]) + 1 + rate_hz * keep_ms // 1000
    return audio[start : min(end, audio.size)]
