"""Check a request against what an engine can do: a clear error, never a silent fallback."""

from __future__ import annotations

from synthesis.base import EngineCapabilities, VoiceInfo
from synthesis.request import Mode, RequestError, SynthesisRequest


def check_supported(
    engine_name: str,
    capabilities: EngineCapabilities,
    voices: tuple[VoiceInfo, ...],
    request: SynthesisRequest,
) -> None:
    """Raise :class:`RequestError` (``unsupported``) if ``engine_name`` cannot serve ``request``."""
    if request.mode not in capabilities.modes:
        raise RequestError(
            "mode",
            f"{request.mode.value} is not supported by the {engine_name} engine",
            f"{request.mode.value} needs the cosyvoice engine; the {engine_name} engine "
            f"supports: {', '.join(sorted(m.value for m in capabilities.modes))}",
            error="unsupported",
        )
    if request.emotion is not None and request.emotion not in capabilities.emotions:
        raise RequestError(
            "emotion",
            f"{request.emotion!r} is not available on the {engine_name} engine",
            (f"use one of: {', '.join(capabilities.emotions)}" if capabilities.emotions
             else "emotion needs the cosyvoice engine (mode 'instruct'); omit it here"),
            error="unsupported",
        )  # fmt: skip
    if request.dialect is not None and request.dialect not in capabilities.dialects:
        raise RequestError(
            "dialect",
            f"{request.dialect!r} is not available on the {engine_name} engine",
            (f"use one of: {', '.join(capabilities.dialects)}" if capabilities.dialects
             else "dialect needs the cosyvoice engine (mode 'instruct'); omit it here"),
            error="unsupported",
        )  # fmt: skip
    if request.mode in (Mode.ZERO_SHOT, Mode.CROSS_LINGUAL) and (
        request.reference_audio is None and request.speaker_id is None
    ):
        raise RequestError(
            "reference_audio",
            f"{request.mode.value} needs a voice sample or a registered speaker",
            "send 'reference_audio' (base64 audio) or the 'speaker_id' of a voice registered "
            "with POST /voices",
        )
    if (
        request.mode is Mode.ZERO_SHOT
        and request.reference_audio is not None
        and not (request.reference_text)
    ):
        raise RequestError(
            "reference_text",
            "zero_shot with reference_audio needs the transcript of the sample",
            "send 'reference_text', or use mode 'cross_lingual' which needs no transcript",
        )
    if request.mode is Mode.INSTRUCT and not (
        request.instruct_text or request.emotion or request.dialect
    ):
        raise RequestError(
            "instruct_text",
            "instruct needs an instruction",
            "send 'instruct_text', 'emotion' or 'dialect'",
        )
    if request.speaker_id is not None and request.reference_audio is None:
        known = {v.voice_id for v in voices}
        if request.speaker_id not in known:
            raise RequestError(
                "speaker_id",
                f"{request.speaker_id!r} is not a voice of the {engine_name} engine",
                f"use one of: {', '.join(sorted(known))} (GET /voices lists them)",
                error="unknown_voice",
            )
