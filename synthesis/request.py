"""The one request model every entry point (data channel, HTTP, WebSocket) uses."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from synthesis.errors import InvalidRequest, Unsupported

REFERENCE_RATE_HZ: Final = 16_000
SPEED_MIN: Final = 0.5
SPEED_MAX: Final = 2.0
MAX_ID_CHARS: Final = 64
STREAMED_TEXT_FACTOR: Final = 10
"""One streamed utterance (``text.delta`` after ``text.delta``) may grow to this many
times ``max_text_chars``; without a cap a client could queue megabytes of text."""
_FORBIDDEN_CHARS: Final = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff]")
"""C0 controls but tab, newline and carriage return, and surrogates (JSON's ``\\ud800``
escapes arrive unpaired): engines fail on them, so they are a client error, not a 500."""


class Mode(StrEnum):
    SFT = "sft"
    ZERO_SHOT = "zero_shot"
    CROSS_LINGUAL = "cross_lingual"
    INSTRUCT = "instruct"


class RequestError(InvalidRequest):
    """A request field that cannot be used: ``field`` names it, the message starts with it."""

    def __init__(self, code: str | None, message: str, solution: str, *, field: str) -> None:
        super().__init__(code, f"'{field}': {message}" if field else message, solution)
        self.field = field


class UnsupportedRequest(Unsupported):
    """A valid request field this engine cannot honour (a mode, cloning)."""

    def __init__(self, message: str, solution: str, *, field: str) -> None:
        super().__init__(None, f"'{field}': {message}" if field else message, solution)
        self.field = field


@dataclass(frozen=True, slots=True)
class ReferenceAudio:
    """A voice sample for cloning: mono float32 in [-1, 1] at 16 kHz."""

    pcm: npt.NDArray[np.float32]
    sample_rate_hz: int = REFERENCE_RATE_HZ

    @property
    def duration_s(self) -> float:
        return len(self.pcm) / self.sample_rate_hz


@dataclass(frozen=True, slots=True)
class RequestLimits:
    max_text_chars: int = 2000
    max_reference_bytes: int = 5 * 1024 * 1024
    """Decoded size of ``reference_audio`` (the base64 text is a third larger)."""
    min_reference_s: float = 1.0
    max_reference_s: float = 30.0

    @property
    def max_streamed_text_chars(self) -> int:
        """The most characters one streamed utterance may collect over its deltas."""
        return STREAMED_TEXT_FACTOR * self.max_text_chars


@dataclass(frozen=True, slots=True)
class SynthesisRequest:
    text: str
    mode: Mode = Mode.SFT
    speaker_id: str | None = None
    reference_audio: ReferenceAudio | None = None
    reference_text: str | None = None
    speed: float = 1.0
    emotion: str | None = None
    dialect: str | None = None
    instruct_text: str | None = None
    stream: bool = True


ReferenceDecoder = Callable[[bytes, RequestLimits], ReferenceAudio]
ReferenceCheck = Callable[[Mode], None]
"""Raises :class:`RequestError` if the engine cannot use reference audio in this mode."""


def check_text(field: str, value: str) -> None:
    """Refuse control characters (tab, newline, CR aside) and unpaired surrogates."""
    bad = _FORBIDDEN_CHARS.search(value)
    if bad is not None:
        raise RequestError(
            "invalid_request",
            f"contains the character U+{ord(bad.group()):04X} at position {bad.start()} "
            "(a control character or an unpaired surrogate)",
            "send plain text: tabs and line breaks are fine, other control characters "
            "and lone UTF-16 surrogates are not",
            field=field,
        )


def _optional_str(data: Mapping[str, Any], field: str, max_chars: int) -> str | None:
    value = data.get(field)
    if value is None:
        return None
    if not isinstance(value, str):
        raise RequestError(
            "invalid_request", "must be a string", f"send '{field}' as a JSON string", field=field
        )
    value = value.strip()
    if len(value) > max_chars:
        raise RequestError(
            "invalid_request",
            f"is {len(value)} characters; the limit is {max_chars}",
            f"shorten '{field}'",
            field=field,
        )
    check_text(field, value)
    return value or None


def parse_request(
    data: Mapping[str, Any],
    limits: RequestLimits,
    decode_reference: ReferenceDecoder | None = None,
    check_reference: ReferenceCheck | None = None,
) -> SynthesisRequest:
    """Validate a JSON object into a :class:`SynthesisRequest`; raises :class:`RequestError`.

    This checks the request on its own. Whether an engine can serve it is
    :func:`synthesis.capabilities.check_supported`'s job, except for reference audio:
    ``check_reference`` (see :func:`synthesis.capabilities.reference_check`) refuses
    it before it is decoded, so an engine that cannot clone never pays for decoding.
    """
    known = {
        "type",
        "id",
        "mode",
        "text",
        "speaker_id",
        "voice",
        "reference_audio",
        "reference_text",
        "speed",
        "emotion",
        "dialect",
        "instruct_text",
        "stream",
        "format",
    }
    unknown = sorted(set(data) - known)
    if unknown:
        raise RequestError(
            "invalid_request",
            "is not a request field",
            f"remove it; fields are: {', '.join(sorted(known))}",
            field=unknown[0],
        )
    text = data.get("text")
    if not isinstance(text, str) or not text.strip():
        raise RequestError(
            "invalid_request",
            "must be a non-empty string",
            "put the words to speak in 'text'",
            field="text",
        )
    if len(text) > limits.max_text_chars:
        raise RequestError(
            "text_too_long",
            f"has {len(text)} characters; the limit is {limits.max_text_chars}",
            "split the text into several requests",
            field="text",
        )
    check_text("text", text)
    raw_mode = data.get("mode", Mode.SFT.value)
    try:
        mode = Mode(raw_mode)
    except ValueError:
        raise RequestError(
            "invalid_request",
            f"{raw_mode!r} is not a mode",
            f"use one of: {', '.join(m.value for m in Mode)}",
            field="mode",
        ) from None
    speed = data.get("speed", 1.0)
    if isinstance(speed, bool) or not isinstance(speed, int | float):
        raise RequestError(
            "invalid_request",
            "must be a number",
            f"send a number from {SPEED_MIN} to {SPEED_MAX}",
            field="speed",
        )
    if not SPEED_MIN <= float(speed) <= SPEED_MAX:
        raise RequestError(
            "invalid_request",
            f"{speed} is out of range",
            f"send a number from {SPEED_MIN} to {SPEED_MAX}",
            field="speed",
        )
    stream = data.get("stream", True)
    if not isinstance(stream, bool):
        raise RequestError(
            "invalid_request", "must be true or false", "send a JSON boolean", field="stream"
        )
    speaker_id = _optional_str(data, "speaker_id", MAX_ID_CHARS) or _optional_str(
        data, "voice", MAX_ID_CHARS
    )
    reference: ReferenceAudio | None = None
    raw_reference = data.get("reference_audio")
    if raw_reference is not None:
        if check_reference is not None:
            check_reference(mode)
        if not isinstance(raw_reference, str):
            raise RequestError(
                "invalid_request",
                "must be a base64 string",
                "base64-encode a WAV/MP3/OGG/FLAC file",
                field="reference_audio",
            )
        if len(raw_reference) > limits.max_reference_bytes * 4 // 3 + 4:
            raise RequestError(
                "reference_too_large",
                f"is larger than {limits.max_reference_bytes} bytes",
                f"send at most {limits.max_reference_s:g} s of audio",
                field="reference_audio",
            )
        try:
            blob = base64.b64decode(raw_reference, validate=True)
        except (binascii.Error, ValueError):
            raise RequestError(
                "invalid_request",
                "is not valid base64",
                "base64-encode the audio file's bytes",
                field="reference_audio",
            ) from None
        if decode_reference is None:
            from synthesis.reference import decode_reference_audio

            decode_reference = decode_reference_audio
        reference = decode_reference(blob, limits)
    return SynthesisRequest(
        text=text,
        mode=mode,
        speaker_id=speaker_id,
        reference_audio=reference,
        reference_text=_optional_str(data, "reference_text", limits.max_text_chars),
        speed=float(speed),
        emotion=_optional_str(data, "emotion", MAX_ID_CHARS),
        dialect=_optional_str(data, "dialect", MAX_ID_CHARS),
        instruct_text=_optional_str(data, "instruct_text", limits.max_text_chars),
        stream=stream,
    )
