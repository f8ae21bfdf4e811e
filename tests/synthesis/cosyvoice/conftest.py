"""Fixtures: a tiny random CosyVoice2 model built once per session, and engines on it.

Everything skips when torch or the vendored runtime is missing (the main suite runs
without the ``cosyvoice`` extra); install it with ``scripts/install-cosyvoice.sh``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from synthesis.cosyvoice import CosyVoiceEngine
from synthesis.cosyvoice_config import CosyVoiceConfig
from synthesis.request import ReferenceAudio

MAX_TOKEN_TEXT_RATIO = 5.0
"""A random LM rarely stops by itself: cap speech at 5 tokens (200 ms) per text token."""


def _require_runtime() -> None:
    pytest.importorskip("torch")
    from synthesis.cosyvoice_import import runtime_available

    if not runtime_available():
        pytest.skip("CosyVoice runtime not installed (scripts/install-cosyvoice.sh)")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    _require_runtime()
    from tests.synthesis.cosyvoice.tiny_model import build_model_dir

    return build_model_dir(tmp_path_factory.mktemp("cosyvoice2-tiny"))


@pytest.fixture(scope="session")
def tiny_config(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> CosyVoiceConfig:
    return CosyVoiceConfig(
        model_dir=tiny_model_dir,
        request_timeout_s=60.0,
        chunk_timeout_s=20.0,
        max_token_text_ratio=MAX_TOKEN_TEXT_RATIO,
        voices_dir=tmp_path_factory.mktemp("cosyvoice-voices"),
    )


@pytest.fixture(scope="session")
def tiny_runtime(tiny_config: CosyVoiceConfig) -> Iterator[Any]:
    import torch

    from synthesis.cosyvoice_runtime import CosyVoiceRuntime

    # Each request runs torch in two threads (LM and vocoder); with an OpenMP team of
    # 2 per thread on a shared 2-core machine, spin-waiting slows tiny ops 10-50x.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    runtime = CosyVoiceRuntime(tiny_config.model_dir)
    yield runtime
    runtime.close()
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def engine(tiny_config: CosyVoiceConfig, tiny_runtime: Any) -> CosyVoiceEngine:
    """The engine most tests share (its runtime is loaded once)."""
    return CosyVoiceEngine(tiny_config, runtime_factory=lambda _: tiny_runtime)


@pytest.fixture
def make_engine(tiny_config: CosyVoiceConfig, tiny_runtime: Any) -> Callable[..., CosyVoiceEngine]:
    """Another engine with config overrides, on the same loaded model."""

    def make(**overrides: Any) -> CosyVoiceEngine:
        return CosyVoiceEngine(
            replace(tiny_config, **overrides), runtime_factory=lambda _: tiny_runtime
        )

    return make


@pytest.fixture(scope="session")
def reference() -> ReferenceAudio:
    """2 s of a voiced-ish 16 kHz signal (a 140 Hz buzz with noise)."""
    rng = np.random.default_rng(7)
    t = np.arange(32_000) / 16_000
    pcm = 0.3 * np.sign(np.sin(2 * np.pi * 140 * t)) + 0.05 * rng.standard_normal(t.size)
    return ReferenceAudio(pcm.astype(np.float32))
