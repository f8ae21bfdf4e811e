"""The CosyVoice 2 engine's settings, read from ``VMS_COSYVOICE_*``, apart from the model."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

ENV_PREFIX: Final = "VMS_COSYVOICE_"
VOICES_FILE: Final = "vms_cosyvoice_voices.pt"


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


__all__ = ["ENV_PREFIX", "VOICES_FILE", "CosyVoiceConfig", "cosyvoice_config_from_env"]
