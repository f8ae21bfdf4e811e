"""Check a request against what an engine can do: a clear error, never a silent fallback."""

from __future__ import annotations

import functools
from typing import Final

from synthesis.base import EngineCapabilities, VoiceInfo
from synthesis.request import (
    Mode,
    ReferenceCheck,
    RequestError,
    SynthesisRequest,
    UnsupportedRequest,
)

REFERENCE_MODES: Final = frozenset({Mode.ZERO_SHOT, Mode.CROSS_LINGUAL, Mode.INSTRUCT})
"""Modes that can speak in the voice of a reference clip; sft speaks a stored voice."""


def _check_mode(engine_name: str, capabilities: EngineCapabilities, mode: Mode) -> None:
    if mode not in capabilities.modes:
        raise UnsupportedRequest(
            f"{mode.value} is not supported by the {engine_name} engine",
            f"{mode.value} needs the cosyvoice engine; the {engine_name} engine "
            f"supports: {', '.join(sorted(m.value for m in capabilities.modes))}",
            field="mode",
        )


def check_reference_supported(
    engine_name: str, capabilities: EngineCapabilities, mode: Mode
) -> None:
    """Raise ``unsupported`` unless ``mode`` on this engine can use ``reference_audio``.

    Callers run it before decoding the clip: decoding is the expensive, attackable
    part, and an engine that cannot clone would throw the result away.
    """
    _check_mode(engine_name, capabilities, mode)
    if not capabilities.cloning:
        raise UnsupportedRequest(
            f"the {engine_name} engine cannot clone voices",
            "omit 'reference_audio'; voice cloning needs the cosyvoice engine "
            "(VMS_ENGINE=cosyvoice)",
            field="reference_audio",
        )
    if mode not in REFERENCE_MODES:
        raise UnsupportedRequest(
            f"mode '{mode.value}' speaks a stored voice and takes no reference_audio",
            "use mode 'zero_shot' or 'cross_lingual' to clone from a sample",
            field="reference_audio",
        )


def reference_check(engine_name: str, capabilities: EngineCapabilities) -> ReferenceCheck:
    """:func:`check_reference_supported` for one engine, for ``parse_request``."""
    return functools.partial(check_reference_supported, engine_name, capabilities)


def check_supported(
    engine_name: str,
    capabilities: EngineCapabilities,
    voices: tuple[VoiceInfo, ...],
    request: SynthesisRequest,
) -> None:
    """Raise :class:`RequestError` (``unsupported``) if ``engine_name`` cannot serve ``request``."""
    _check_mode(engine_name, capabilities, request.mode)
    if request.reference_audio is not None:
        check_reference_supported(engine_name, capabilities, request.mode)
    if request.emotion is not None and request.emotion not in capabilities.emotions:
        raise UnsupportedRequest(
            f"{request.emotion!r} is not available on the {engine_name} engine",
            f"use one of: {', '.join(capabilities.emotions)}"
            if capabilities.emotions
            else "emotion needs the cosyvoice engine (mode 'instruct'); omit it here",
            field="emotion",
        )
    if request.dialect is not None and request.dialect not in capabilities.dialects:
        raise UnsupportedRequest(
            f"{request.dialect!r} is not available on the {engine_name} engine",
            f"use one of: {', '.join(capabilities.dialects)}"
            if capabilities.dialects
            else "dialect needs the cosyvoice engine (mode 'instruct'); omit it here",
            field="dialect",
        )
    if request.mode in (Mode.ZERO_SHOT, Mode.CROSS_LINGUAL) and (
        request.reference_audio is None and request.speaker_id is None
    ):
        raise RequestError(
            "invalid_request",
            f"{request.mode.value} needs a voice sample or a registered speaker",
            "send 'reference_audio' (base64 audio) or the 'speaker_id' of a voice registered "
            "with POST /voices",
            field="reference_audio",
        )
    if (
        request.mode is Mode.ZERO_SHOT
        and request.reference_audio is not None
        and not (request.reference_text)
    ):
        raise RequestError(
            "invalid_request",
            "zero_shot with reference_audio needs the transcript of the sample",
            "send 'reference_text', or use mode 'cross_lingual' which needs no transcript",
            field="reference_text",
        )
    if request.mode is Mode.INSTRUCT and not (
        request.instruct_text or request.emotion or request.dialect
    ):
        raise RequestError(
            "invalid_request",
            "instruct needs an instruction",
            "send 'instruct_text', 'emotion' or 'dialect'",
            field="instruct_text",
        )
    if request.speaker_id is not None and request.reference_audio is None:
        known = {v.voice_id for v in voices}
        if request.speaker_id not in known:
            raise RequestError(
                "unknown_voice",
                f"{request.speaker_id!r} is not a voice of the {engine_name} engine",
                f"use one of: {', '.join(sorted(known))} (GET /voices lists them)",
                field="speaker_id",
            )
