"""CosyVoice 2 (``CosyVoice2-0.5B``): sft, zero-shot cloning, cross-lingual and instruct.

The model runs through :mod:`synthesis.cosyvoice_runtime` (torch and the vendored
upstream code, imported only when an engine is built). Install it with
``bash scripts/install-cosyvoice.sh PYTHON``; configure it with ``VMS_COSYVOICE_*``
(:func:`cosyvoice_config_from_env`).

Every request is bounded: ``request_timeout_s`` of engine time (time spent waiting for
the reader to take a chunk does not count) and ``chunk_timeout_s`` between chunks, the
first one included. Past either, the request fails with ``error="timeout"`` and its
LM thread is stopped. Text is split with :func:`synthesis.text.split_text` and each
piece is synthesised in order, with the voice prompt computed once per request.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from synthesis.base import EngineCapabilities, VoiceInfo
from synthesis.errors import Conflict, InvalidRequest, SynthesisError, SynthesisTimeout, Unsupported
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
VOICES_FILE: Final = "vms_cosyvoice_voices.pt"
VOICE_LANGUAGE: Final = "mul"
"""ISO 639-2 "multiple languages": a CosyVoice 2 voice speaks every supported language."""
END_OF_PROMPT: Final = "<|endofprompt|>"
PEAK_INT16: Final = 32767
ENV_PREFIX: Final = "VMS_COSYVOICE_"

LANGUAGES: Final = ("zh", "en", "ja", "ko", "yue")

EMOTION_INSTRUCTIONS: Final[Mapping[str, str]] = MappingProxyType(
    {
        "neutral": "用平静的语气",
        "happy": "用开心的语气",
        "sad": "用伤心的语气",
        "angry": "用生气的语气",
        "surprised": "用惊讶的语气",
        "fearful": "用恐惧的语气",
        "disgusted": "用厌恶的语气",
        "gentle": "用温柔的语气",
        "serious": "用严肃的语气",
    }
)
"""``emotion`` -> instruction phrase; the instruction ends in :data:`INSTRUCTION_SUFFIX`."""

DIALECT_INSTRUCTIONS: Final[Mapping[str, str]] = MappingProxyType(
    {
        "cantonese": "用粤语",
        "sichuanese": "用四川话",
        "shanghainese": "用上海话",
        "tianjinese": "用天津话",
        "northeastern": "用东北话",
        "henanese": "用河南话",
        "shandongese": "用山东话",
        "changsha": "用长沙话",
        "minnan": "用闽南话",
    }
)
"""``dialect`` -> instruction phrase, as in upstream's ``用四川话说这句话`` example."""

INSTRUCTION_SUFFIX: Final = "说这句话"


def instruction_text(request: SynthesisRequest) -> str:
    """The instruct2 prompt: dialect and emotion in the model's style, then ``instruct_text``.

    ``dialect="sichuanese", emotion="happy"`` gives
    ``用四川话，用开心的语气说这句话<|endofprompt|>``. ``instruct_text`` is used as given
    (after that, if both are present), always ending in exactly one ``<|endofprompt|>``.
    """
    phrases = []
    if request.dialect:
        phrases.append(DIALECT_INSTRUCTIONS[request.dialect])
    if request.emotion:
        phrases.append(EMOTION_INSTRUCTIONS[request.emotion])
    parts = ["，".join(phrases) + INSTRUCTION_SUFFIX] if phrases else []
    custom = (request.instruct_text or "").strip()
    while custom.endswith(END_OF_PROMPT):
        custom = custom.removesuffix(END_OF_PROMPT).rstrip()
    if custom:
        parts.append(custom)
    return "。".join(parts) + END_OF_PROMPT


# --------------------------------------------------------------------------- config


@dataclass(frozen=True, slots=True)
class CosyVoiceConfig:
    model_dir: Path
    """A CosyVoice2 model directory (``cosyvoice2.yaml``, ``llm.pt``, ...); never downloaded."""
    load_jit: bool = False
    load_trt: bool = False
    load_vllm: bool = False
    fp16: bool = False
    """GPU switches passed to upstream ``CosyVoice2``; forced off without CUDA."""
    request_timeout_s: float = 120.0
    """Engine time one request may take (time waiting for the reader not counted)."""
    chunk_timeout_s: float = 20.0
    """Longest wait for the next chunk (the first one included)."""
    first_hop_tokens: int = 25
    """Speech tokens (40 ms each) in the first chunk, before prompt alignment padding.
    25 is upstream's (the flow was trained on 25-token chunks); less is faster, rougher."""
    max_token_text_ratio: float = 20.0
    """Cap on speech tokens per text token (upstream's default); a runaway LM stops there."""
    voices_dir: Path | None = None
    """Where registered voices are kept (:data:`VOICES_FILE`); default: ``model_dir``."""
    default_voice: str | None = None
    """Voice for requests without one; default: the first ``spk2info`` speaker."""

    def __post_init__(self) -> None:
        if self.request_timeout_s <= 0 or self.chunk_timeout_s <= 0:
            raise ValueError("CosyVoice timeouts must be positive")
        if self.first_hop_tokens < 1:
            raise ValueError("first_hop_tokens must be at least 1")
        if self.max_token_text_ratio <= 0:
            raise ValueError("max_token_text_ratio must be positive")

    @property
    def voices_path(self) -> Path:
        return (self.voices_dir or self.model_dir) / VOICES_FILE


_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"0", "false", "no", "off", ""})


def _env_bool(env: Mapping[str, str], name: str) -> bool:
    raw = env.get(ENV_PREFIX + name, "").strip().lower()
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ValueError(f"{ENV_PREFIX}{name}={raw!r}: use 1/0, true/false, yes/no or on/off")


def _env_number(
    env: Mapping[str, str], name: str, parse: Callable[[str], Any], default: Any
) -> Any:
    raw = env.get(ENV_PREFIX + name, "").strip()
    if not raw:
        return default
    try:
        return parse(raw)
    except ValueError:
        raise ValueError(f"{ENV_PREFIX}{name}={raw!r} is not a valid number") from None


def cosyvoice_config_from_env(environ: Mapping[str, str] | None = None) -> CosyVoiceConfig:
    """Read :class:`CosyVoiceConfig` from ``VMS_COSYVOICE_*`` variables.

    ``MODEL_DIR`` (required), ``LOAD_JIT``, ``LOAD_TRT``, ``LOAD_VLLM``, ``FP16``,
    ``REQUEST_TIMEOUT_S``, ``CHUNK_TIMEOUT_S``, ``FIRST_HOP_TOKENS``,
    ``MAX_TOKEN_TEXT_RATIO``, ``VOICES_DIR``, ``DEFAULT_VOICE``.
    """
    env = os.environ if environ is None else environ
    model_dir = env.get(ENV_PREFIX + "MODEL_DIR", "").strip()
    if not model_dir:
        raise ValueError(f"{ENV_PREFIX}MODEL_DIR is not set: point it at a CosyVoice2 model dir")
    defaults = CosyVoiceConfig(Path(model_dir))
    voices_dir = env.get(ENV_PREFIX + "VOICES_DIR", "").strip()
    return CosyVoiceConfig(
        model_dir=Path(model_dir),
        load_jit=_env_bool(env, "LOAD_JIT"),
        load_trt=_env_bool(env, "LOAD_TRT"),
        load_vllm=_env_bool(env, "LOAD_VLLM"),
        fp16=_env_bool(env, "FP16"),
        request_timeout_s=_env_number(env, "REQUEST_TIMEOUT_S", float, defaults.request_timeout_s),
        chunk_timeout_s=_env_number(env, "CHUNK_TIMEOUT_S", float, defaults.chunk_timeout_s),
        first_hop_tokens=_env_number(env, "FIRST_HOP_TOKENS", int, defaults.first_hop_tokens),
        max_token_text_ratio=_env_number(
            env, "MAX_TOKEN_TEXT_RATIO", float, defaults.max_token_text_ratio
        ),
        voices_dir=Path(voices_dir) if voices_dir else None,
        default_voice=env.get(ENV_PREFIX + "DEFAULT_VOICE", "").strip() or None,
    )


# --------------------------------------------------------------------------- helpers


class _Watchdog:
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
        watchdog = _Watchdog(
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
        self, model_input: dict[str, Any], cancel: threading.Event, watchdog: _Watchdog
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
        from synthesis.cosyvoice_runtime import CosyVoiceRuntime, RuntimeUnavailable
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
