"""CosyVoice 2 (``CosyVoice2-0.5B``): sft, zero-shot cloning, cross-lingual and instruct.

The model runs through :mod:`synthesis.cosyvoice_runtime` (torch and the vendored
upstream code, imported only when an engine is built). Install it with
``bash scripts/install-cosyvoice.sh PYTHON``; configure it with ``VMS_COSYVOICE_*``
(:func:`synthesis.cosyvoice_config.cosyvoice_config_from_env`, re-exported here).

Every request is bounded: ``request_timeout_s`` of engine time (time spent waiting for
the reader to take a chunk does not count) and ``chunk_timeout_s`` between chunks, the
first one included. Past either, the request fails with ``error="timeout"`` and its
LM thread is stopped. Text is split with :func:`synthesis.text.split_text` and each
piece is synthesised in order, with the voice prompt computed once per request.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from synthesis.base import EngineCapabilities, VoiceInfo
from synthesis.cosyvoice_config import ENV_PREFIX, CosyVoiceConfig, cosyvoice_config_from_env
from synthesis.cosyvoice_instruction import (
    DIALECT_INSTRUCTIONS,
    EMOTION_INSTRUCTIONS,
    instruction_text,
)
from synthesis.cosyvoice_watchdog import Watchdog
from synthesis.errors import Conflict, InvalidRequest, SynthesisError, Unsupported
from synthesis.request import Mode, ReferenceAudio, SynthesisRequest
from synthesis.text import split_text
from synthesis.types import AudioChunk, PcmArray

if TYPE_CHECKING:
    from synthesis.cosyvoice_runtime import CosyVoiceRuntime, SpeakerEntry

logger = logging.getLogger(__name__)

ENGINE_NAME: Final = "cosyvoice"
SAMPLE_RATE_HZ: Final = 24_000
REFERENCE_RATE_HZ: Final = 16_000
MAX_REFERENCE_S: Final = 30.0
"""Upstream's speech tokenizer refuses longer prompts."""
VOICE_LANGUAGE: Final = "mul"
"""ISO 639-2 "multiple languages": a CosyVoice 2 voice speaks every supported language."""
PEAK_INT16: Final = 32767

LANGUAGES: Final = ("zh", "en", "ja", "ko", "yue")


# --------------------------------------------------------------------------- helpers


def to_pcm16(audio: Any) -> PcmArray:
    """Float samples in [-1, 1] to mono int16."""
    samples = np.asarray(audio, dtype=np.float32).reshape(-1)
    return (np.clip(samples, -1.0, 1.0) * PEAK_INT16).astype(np.int16)


def _unsupported(message: str, solution: str) -> Unsupported:
    return Unsupported("unsupported", message, solution)


@dataclass(frozen=True, slots=True)
class _Plan:
    """What one request runs: the mode, the voice prompt, and the instruction."""

    mode: Mode
    prompt: SpeakerEntry
    instruction: str | None


# --------------------------------------------------------------------------- engine


class CosyVoiceEngine:
    """CosyVoice 2 through the runtime vendored in xinference's wheel.

    Voices are the model's ``spk2info`` speakers plus voices registered with
    :meth:`register_voice`, kept in :attr:`CosyVoiceConfig.voices_path` so they
    survive a restart. One model serves concurrent requests: each has its own LM
    thread, hop and vocoder cache.
    """

    def __init__(
        self,
        config: CosyVoiceConfig,
        *,
        runtime_factory: Callable[[CosyVoiceConfig], CosyVoiceRuntime] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._config = config
        self._clock = clock
        if not (config.model_dir / "cosyvoice2.yaml").is_file():
            raise SynthesisError(
                "engine_unavailable",
                f"{config.model_dir} is not a CosyVoice2 model directory (no cosyvoice2.yaml)",
                f"set {ENV_PREFIX}MODEL_DIR to a local copy of CosyVoice2-0.5B",
            )
        started = time.perf_counter()
        self._runtime = (runtime_factory or _load_runtime)(config)
        self._voices_lock = threading.Lock()
        self._builtin = tuple(self._runtime.speaker_ids())
        self._registered: dict[str, SpeakerEntry] = self._load_registered()
        self._capabilities = EngineCapabilities(
            modes=frozenset(Mode),
            sample_rate_hz=SAMPLE_RATE_HZ,
            languages=LANGUAGES,
            emotions=tuple(EMOTION_INSTRUCTIONS),
            dialects=tuple(DIALECT_INSTRUCTIONS),
            cloning=True,
            native_speed=False,  # upstream ignores speed when streaming; the server stretches
        )
        if self._runtime.sample_rate_hz != SAMPLE_RATE_HZ:
            raise SynthesisError(
                "engine_unavailable",
                f"the model speaks at {self._runtime.sample_rate_hz} Hz, not {SAMPLE_RATE_HZ}",
                "use a CosyVoice2 model",
            )
        logger.info(
            "CosyVoice2 loaded from %s on %s in %.1f s: %d voices (%d registered)",
            config.model_dir,
            self._runtime.device,
            time.perf_counter() - started,
            len(self._builtin) + len(self._registered),
            len(self._registered),
        )

    # ----------------------------------------------------------------- Engine

    @property
    def name(self) -> str:
        return ENGINE_NAME

    @property
    def sample_rate_hz(self) -> int:
        return SAMPLE_RATE_HZ

    @property
    def capabilities(self) -> EngineCapabilities:
        return self._capabilities

    @property
    def config(self) -> CosyVoiceConfig:
        return self._config

    @property
    def voices(self) -> tuple[VoiceInfo, ...]:
        with self._voices_lock:
            registered = tuple(self._registered)
        return tuple(
            VoiceInfo(voice_id, VOICE_LANGUAGE, SAMPLE_RATE_HZ, cloned=voice_id in registered)
            for voice_id in (*self._builtin, *registered)
        )

    def register_voice(
        self, voice_id: str, reference: ReferenceAudio, reference_text: str | None
    ) -> VoiceInfo:
        """Clone a voice from a 16 kHz clip (as ``add_zero_shot_spk``) and persist it.

        Without ``reference_text`` the voice serves sft, cross_lingual and instruct,
        not zero_shot (which continues the transcript's speech).
        """
        if not voice_id or voice_id in {v.voice_id for v in self.voices}:
            if voice_id:
                raise Conflict(
                    "voice_exists",
                    f"a voice {voice_id!r} already exists",
                    "choose another voice_id",
                )
            raise InvalidRequest("invalid_request", "voice_id is empty", "choose a voice_id")
        entry = self._prompt_from_reference(reference, reference_text or "")
        with self._voices_lock:
            if voice_id in self._registered:
                raise Conflict(
                    "voice_exists",
                    f"a voice {voice_id!r} already exists",
                    "choose another voice_id",
                )
            self._registered[voice_id] = entry
            try:
                self._runtime.save_speakers(self._config.voices_path, self._registered)
            except OSError as exc:
                del self._registered[voice_id]
                raise SynthesisError(
                    "voice_not_saved",
                    f"cannot save voice {voice_id!r} to {self._config.voices_path}: {exc}",
                    f"set {ENV_PREFIX}VOICES_DIR to a writable directory",
                ) from exc
        self._runtime.add_speaker(voice_id, entry)
        logger.info("registered CosyVoice voice %r (%.1f s clip)", voice_id, reference.duration_s)
        return VoiceInfo(voice_id, VOICE_LANGUAGE, SAMPLE_RATE_HZ, cloned=True)

    def synthesize(
        self, request: SynthesisRequest, cancel: threading.Event
    ) -> Iterator[AudioChunk]:
        watchdog = Watchdog(
            self._config.request_timeout_s, self._config.chunk_timeout_s, self._clock
        )
        plan = self._plan(request)
        for piece in split_text(request.text):
            if cancel.is_set():
                return
            try:
                model_input = self._runtime.build_input(
                    plan.mode, piece, plan.prompt, plan.instruction
                )
            except Exception as exc:
                raise self._failure(exc) from exc
            yield from self._stream_piece(model_input, cancel, watchdog)
            if cancel.is_set():
                return

    def close(self) -> None:
        self._runtime.close()

    # ----------------------------------------------------------------- internals

    def _stream_piece(
        self, model_input: dict[str, Any], cancel: threading.Event, watchdog: Watchdog
    ) -> Iterator[AudioChunk]:
        stream = self._runtime.stream(
            model_input,
            first_hop_tokens=self._config.first_hop_tokens,
            max_token_text_ratio=self._config.max_token_text_ratio,
        )
        try:
            while True:
                try:
                    audio = next(stream)
                except StopIteration:
                    return
                except Exception as exc:
                    raise self._failure(exc) from exc
                if cancel.is_set():
                    return
                watchdog.check()
                if audio is None:
                    continue
                watchdog.chunk_delivered()
                pcm = to_pcm16(audio)
                if pcm.size:
                    yield AudioChunk(pcm, SAMPLE_RATE_HZ)
                    watchdog.resume()
                if cancel.is_set():
                    return
        finally:
            stream.close()  # stops the LM thread and frees the request's vocoder cache

    def _plan(self, request: SynthesisRequest) -> _Plan:
        mode = request.mode
        if (request.emotion or request.dialect) and mode is not Mode.INSTRUCT:
            raise _unsupported(
                f"emotion and dialect need mode 'instruct', not {mode.value!r}",
                "send mode 'instruct' with the same voice",
            )
        if request.reference_audio is not None:
            if mode is Mode.SFT:
                raise _unsupported(
                    "mode 'sft' speaks a stored voice and takes no reference_audio",
                    "use mode 'zero_shot' or 'cross_lingual' to clone from a sample",
                )
            text = (request.reference_text or "") if mode is Mode.ZERO_SHOT else ""
            prompt = self._prompt_from_reference(request.reference_audio, text)
        else:
            prompt = self._stored_voice(request.speaker_id)
            if mode is Mode.ZERO_SHOT and _has_speech_prompt(prompt) and not _has_text(prompt):
                raise _unsupported(
                    f"voice {request.speaker_id!r} was registered without reference_text, "
                    "which zero_shot needs",
                    "use mode 'cross_lingual' or 'instruct', or register it again with "
                    "'reference_text'",
                )
        instruction = instruction_text(request) if mode is Mode.INSTRUCT else None
        return _Plan(mode, prompt, instruction)

    def _stored_voice(self, speaker_id: str | None) -> SpeakerEntry:
        voice_id = speaker_id or self._config.default_voice or next(iter(self._builtin), None)
        entry = self._runtime.speaker(voice_id) if voice_id else None
        if entry is None:
            known = ", ".join(v.voice_id for v in self.voices) or "none yet"
            raise InvalidRequest(
                "unknown_voice",
                f"unknown voice {voice_id!r} for engine 'cosyvoice'"
                if voice_id
                else "the cosyvoice model has no stored voices and the request names none",
                f"use one of: {known}; or register one with POST /voices, or send "
                "'reference_audio'",
            )
        return entry

    def _prompt_from_reference(self, reference: ReferenceAudio, text: str) -> SpeakerEntry:
        if reference.sample_rate_hz != REFERENCE_RATE_HZ:
            raise InvalidRequest(
                "invalid_request",
                f"reference audio is {reference.sample_rate_hz} Hz; the engine needs 16 kHz",
                "decode the sample with synthesis.reference (it resamples to 16 kHz)",
            )
        if reference.duration_s > MAX_REFERENCE_S or len(reference.pcm) == 0:
            raise InvalidRequest(
                "invalid_request",
                f"reference audio is {reference.duration_s:.1f} s; the engine takes up to "
                f"{MAX_REFERENCE_S:g} s",
                "send a clip of 3-30 s",
            )
        try:
            return self._runtime.prompt_from_audio(reference.pcm, text)
        except Exception as exc:
            raise self._failure(exc) from exc

    def _failure(self, exc: BaseException) -> SynthesisError:
        """Map a runtime exception to the error a client sees."""
        if isinstance(exc, SynthesisError):
            return exc
        from synthesis.cosyvoice_runtime import is_out_of_memory, release_memory

        if is_out_of_memory(exc):
            release_memory()
            logger.error("CosyVoice ran out of GPU memory: %s", exc)
            return SynthesisError(
                "out_of_memory",
                "the cosyvoice engine ran out of GPU memory",
                "retry in a moment; if it persists, lower the engine's concurrency limit, "
                f"enable {ENV_PREFIX}FP16 or use a GPU with more memory",
            )
        logger.error("CosyVoice synthesis failed", exc_info=exc)
        return SynthesisError(
            "synthesis_failed",
            f"the cosyvoice engine failed: {type(exc).__name__}: {exc}",
            "retry the request; if it keeps failing, check the server log",
        )

    def _load_registered(self) -> dict[str, SpeakerEntry]:
        path = self._config.voices_path
        if not path.is_file():
            return {}
        try:
            registered = self._runtime.load_speakers(path)
        except Exception:
            logger.exception("cannot read registered CosyVoice voices from %s; ignoring", path)
            return {}
        for voice_id, entry in registered.items():
            self._runtime.add_speaker(voice_id, entry)
        self._builtin = tuple(v for v in self._builtin if v not in registered)
        return registered


def _has_speech_prompt(entry: Mapping[str, Any]) -> bool:
    tokens = entry.get("llm_prompt_speech_token")
    return tokens is not None and int(tokens.shape[1]) > 0


def _has_text(entry: Mapping[str, Any]) -> bool:
    tokens = entry.get("prompt_text")
    return tokens is not None and int(tokens.shape[1]) > 0


def _load_runtime(config: CosyVoiceConfig) -> CosyVoiceRuntime:
    try:
        from synthesis.cosyvoice_import import RuntimeUnavailable
        from synthesis.cosyvoice_runtime import CosyVoiceRuntime
    except ImportError as exc:
        raise SynthesisError(
            "engine_unavailable",
            f"the CosyVoice runtime is not installed ({exc})",
            "run: bash scripts/install-cosyvoice.sh <python of this environment>",
        ) from exc
    try:
        return CosyVoiceRuntime(
            config.model_dir,
            load_jit=config.load_jit,
            load_trt=config.load_trt,
            load_vllm=config.load_vllm,
            fp16=config.fp16,
        )
    except RuntimeUnavailable as exc:
        raise SynthesisError(
            "engine_unavailable",
            str(exc),
            "run: bash scripts/install-cosyvoice.sh <python of this environment>",
        ) from exc


__all__ = [
    "CosyVoiceConfig",
    "CosyVoiceEngine",
    "DIALECT_INSTRUCTIONS",
    "EMOTION_INSTRUCTIONS",
    "cosyvoice_config_from_env",
    "instruction_text",
]
