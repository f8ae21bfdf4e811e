"""A real spoken sentence for the listening tests: the Piper voice, resampled."""

from __future__ import annotations

import threading

import numpy as np
import numpy.typing as npt

from media_server.audio.resampler import StreamResampler
from synthesis import Engine
from synthesis.request import SynthesisRequest

SENTENCE = "Hello, I would like to book a table for two at seven tonight, please."


def spoken(engine: Engine, rate_hz: int, text: str = SENTENCE) -> npt.NDArray[np.int16]:
    """``text`` in the Piper voice, mono s16 at ``rate_hz``."""
    chunks = list(engine.synthesize(SynthesisRequest(text=text), threading.Event()))
    pcm = np.concatenate([chunk.pcm for chunk in chunks]).astype(np.int16)
    resampler = StreamResampler(chunks[0].sample_rate_hz, rate_hz)
    return np.concatenate([resampler.resample(pcm), resampler.flush()])


def rms(pcm: npt.NDArray[np.int16]) -> float:
    return float(np.sqrt(np.mean(pcm.astype(np.float64) ** 2))) if pcm.size else 0.0
