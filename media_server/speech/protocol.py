"""The data-channel protocol: JSON messages from the client, events back (docs/protocol.md)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from synthesis import (
    Engine,
    RequestLimits,
    SynthesisRequest,
    check_supported,
    parse_request,
)
from synthesis.errors import ClientLimit, InvalidRequest
from synthesis.request import ReferenceCheck, check_text

MAX_MESSAGE_BYTES: Final = 16 * 1024
MAX_ID_CHARS: Final = 64
MAX_JSON_DEPTH: Final = 32
"""Deepest nesting of arrays and objects accepted. Every message is flat (depth 1 or 2);
a few KiB of ``[`` would otherwise make ``json.loads`` raise RecursionError."""
_BRACKET_STEP: Final = np.zeros(256, dtype=np.int8)
_BRACKET_STEP[[ord("["), ord("{")]] = 1
_BRACKET_STEP[[ord("]"), ord("}")]] = -1
_QUOTE: Final = ord('"')
_DEPTH_CHUNK_BYTES: Final = 64 * 1024


class JsonTooDeep(ValueError):
    """A JSON text nests arrays or objects deeper than allowed."""


def json_depth(raw: str | bytes) -> int:
    """How deep ``raw`` nests arrays and objects (brackets inside strings do not count).

    Linear, recursion-free and all in C (bytes.replace and numpy, in chunks), so it is
    cheap on any input up to the largest body; on invalid JSON the number is a guess.
    """
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else bytes(raw)
    # Drop escaped backslashes, then escaped quotes: every quote left opens or closes a string.
    data = data.replace(b"\\\\", b"").replace(b'\\"', b"")
    codes = np.frombuffer(data, dtype=np.uint8)
    quotes = depth = deepest = 0
    for start in range(0, codes.size, _DEPTH_CHUNK_BYTES):
        chunk = codes[start : start + _DEPTH_CHUNK_BYTES]
        quote_count = np.cumsum(chunk == _QUOTE, dtype=np.int64) + quotes
        steps = np.where(quote_count % 2 == 1, 0, _BRACKET_STEP[chunk])
        levels = np.cumsum(steps, dtype=np.int64) + depth
        deepest = max(deepest, int(levels.max()))
        quotes, depth = int(quote_count[-1]), int(levels[-1])
    return deepest


def loads_json(raw: str | bytes, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """``json.loads`` that refuses nesting deeper than ``max_depth`` before parsing.

    Raises ``ValueError`` (:class:`JsonTooDeep` for the nesting) or ``UnicodeDecodeError``.
    """
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    if data.count(b"[") + data.count(b"{") > max_depth:  # else it cannot nest that deep
        depth = json_depth(data)
        if depth > max_depth:
            raise JsonTooDeep(f"nests {depth} levels deep; the limit is {max_depth}")
    return json.loads(raw)


@dataclass(frozen=True, slots=True)
class SayMessage:
    request: SynthesisRequest
    utterance_id: str | None = None


@dataclass(frozen=True, slots=True)
class TextDeltaMessage:
    """A piece of text still being generated (e.g. by an LLM); spoken clause by clause."""

    text: str
    utterance_id: str | None = None


@dataclass(frozen=True, slots=True)
class TextDoneMessage:
    utterance_id: str | None = None


@dataclass(frozen=True, slots=True)
class CancelMessage:
    pass


ClientMessage = SayMessage | TextDeltaMessage | TextDoneMessage | CancelMessage


class ProtocolError(InvalidRequest):
    """A client message that cannot be acted on; becomes an ``error`` event."""


def _utterance_id(data: dict[str, Any]) -> str | None:
    utterance_id = data.get("id")
    if utterance_id is not None and (
        not isinstance(utterance_id, str) or not 0 < len(utterance_id) <= MAX_ID_CHARS
    ):
        raise ProtocolError(
            "invalid_id",
            f"'id' must be a string of 1 to {MAX_ID_CHARS} characters",
            "omit 'id' to let the server number utterances",
        )
    return utterance_id


def decode_message(raw: str | bytes, max_message_bytes: int = MAX_MESSAGE_BYTES) -> dict[str, Any]:
    size = len(raw) if isinstance(raw, bytes) else len(raw.encode())
    if size > max_message_bytes:
        raise ProtocolError(
            "message_too_large",
            f"message is {size} bytes; the limit is {max_message_bytes}",
            "split long text into several 'say' messages",
        )
    try:
        data = loads_json(raw)
    except JsonTooDeep as exc:
        raise ProtocolError(
            "invalid_json",
            f"message {exc}",
            'send a flat JSON object such as {"type": "say", "text": "Hello"}',
        ) from None
    except (ValueError, UnicodeDecodeError):
        raise ProtocolError(
            "invalid_json",
            "message is not valid JSON",
            'send a JSON object such as {"type": "say", "text": "Hello"}',
        ) from None
    if not isinstance(data, dict):
        raise ProtocolError(
            "invalid_message", "message must be a JSON object", 'send {"type": "say", "text": ...}'
        )
    return data


def parse_client_message(
    raw: str | bytes,
    *,
    limits: RequestLimits,
    max_message_bytes: int = MAX_MESSAGE_BYTES,
    allow_reference_audio: bool = False,
    check_reference: ReferenceCheck | None = None,
) -> ClientMessage:
    """Validate one data-channel message; raises :class:`ProtocolError`.

    ``say`` takes every field of the request model (``mode``, ``speaker_id``,
    ``speed``...). Reference audio is refused here: register the voice with
    ``POST /voices`` and use its ``speaker_id`` (16 KiB messages are too small
    for audio). With ``allow_reference_audio`` (the WebSocket API) it is decoded
    here, which blocks: call it off the event loop then, and pass the engine's
    ``check_reference`` so audio the engine cannot use is refused before decoding.
    """
    data = decode_message(raw, max_message_bytes)
    kind = data.get("type")
    if kind == "cancel":
        return CancelMessage()
    if kind == "text.done":
        return TextDoneMessage(_utterance_id(data))
    if kind == "text.delta":
        text = data.get("text")
        if not isinstance(text, str):
            raise ProtocolError(
                "invalid_request", "'text': must be a string", "send the new text in 'text'"
            )
        if len(text) > limits.max_text_chars:
            raise ProtocolError(
                "text_too_long",
                f"'text': has {len(text)} characters; the limit is {limits.max_text_chars}",
                "send smaller deltas",
            )
        check_text("text", text)
        return TextDeltaMessage(text, _utterance_id(data))
    if kind != "say":
        raise ProtocolError(
            "unknown_type",
            f"unknown message type {kind!r}",
            "use one of the types 'say', 'text.delta', 'text.done' or 'cancel'",
        )
    utterance_id = _utterance_id(data)
    if data.get("reference_audio") is not None and not allow_reference_audio:
        raise ProtocolError(
            "invalid_request",
            "'reference_audio': not accepted on the data channel",
            "register the voice with POST /voices, then send its 'speaker_id'",
        )
    request = parse_request(data, limits, check_reference=check_reference)
    return SayMessage(request, utterance_id)


def checked_request(
    engine: Engine, request: SynthesisRequest, default_voice: str | None = None
) -> SynthesisRequest:
    """``request`` with the session's default voice, checked against the engine."""
    if request.speaker_id is None and default_voice is not None:
        request = dataclasses.replace(request, speaker_id=default_voice)
    check_supported(engine.name, engine.capabilities, engine.voices, request)
    return request


def binary_refused() -> ProtocolError:
    return ProtocolError(
        "invalid_message", "binary messages are not accepted", "send JSON text messages"
    )


def rate_limited(burst: int, rate_per_s: float) -> ClientLimit:
    return ClientLimit(
        "rate_limited",
        f"more than {burst} requests in a burst (sustained limit {rate_per_s:g} per second)",
        "send fewer, longer 'say' messages, or wait a moment",
    )


def streamed_text_too_long(limit: int) -> ProtocolError:
    return ProtocolError(
        "text_too_long",
        f"the streamed text would exceed {limit} characters; this delta was dropped",
        "send 'text.done' to finish this utterance, then stream the rest as a new one",
    )


def queue_full(queued: int, limit: int) -> ClientLimit:
    return ClientLimit(
        "queue_full",
        f"{queued} utterances are queued; the limit is {limit}",
        "wait for speech.done events, or send 'cancel' to drop the queue",
    )
