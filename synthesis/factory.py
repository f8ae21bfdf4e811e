"""Engine factories keyed by name (aiortc ``get_encoder`` style)."""

from __future__ import annotations

from collections.abc import Callable

from synthesis.base import Engine


def _piper() -> Engine:
    from synthesis.piper import PiperEngine

    return PiperEngine()


def _cosyvoice() -> Engine:
    from synthesis.cosyvoice import CosyVoiceEngine
    from synthesis.cosyvoice_config import cosyvoice_config_from_env

    return CosyVoiceEngine(cosyvoice_config_from_env())


_FACTORIES: dict[str, Callable[[], Engine]] = {"piper": _piper, "cosyvoice": _cosyvoice}


def available_engines() -> tuple[str, ...]:
    return tuple(sorted(_FACTORIES))


def create_engine(name: str) -> Engine:
    """Build the engine called ``name`` (blocking: loads models; call it off-loop)."""
    try:
        factory = _FACTORIES[name]
    except KeyError:
        raise ValueError(
            f"unknown engine {name!r}; available: {', '.join(available_engines())}"
        ) from None
    return factory()
