"""The data-channel protocol: JSON messages from the client, events back (docs/protocol.md)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any, Final

from synthesis import (
    Engine,
    RequestError,
    RequestLimits,
    SynthesisRequest,
    check_supported,
    parse_request,
)

MAX_MESSAGE_BYTES: Final = 16 * 1024
MAX_ID_CHARS: Final = 64


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


class ProtocolError(Exception):
    """A client message that cannot be acted on; becomes an ``error`` event."""

    def __init__(self, error: str, message: str, solution: str) -> None:
        super().__init__(message)
        self.error = error
        self.message = message
        self.solution = solution

    @classmethod
    def from_request_error(cls, exc: RequestError) -> ProtocolError:
        return cls(exc.error, exc.message, exc.solution)

    def event(self, utterance_id: str | None = None) -> dict[str, Any]:
        event: dict[str, Any] = {
            "type": "error",
            "error": self.error,
            "message": self.message,
            "solution": self.solution,
        }
        if utterance_id is not None:
            event["id"] = utterance_id
        return event


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
        data = json.loads(raw)
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
) -> ClientMessage:
    """Validate one data-channel message; raises :class:`ProtocolError`.

    ``say`` takes every field of the request model (``mode``, ``speaker_id``,
    ``speed``...). Reference audio is refused here: register the voice with
    ``POST /voices`` and use its ``speaker_id`` (16 KiB messages are too small
    for audio). With ``allow_reference_audio`` (the WebSocket API) it is decoded
    here, which blocks: call it off the event loop then.
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
    try:
        request = parse_request(data, limits)
    except RequestError as exc:
        raise ProtocolError.from_request_error(exc) from None
    return SayMessage(request, utterance_id)


def checked_request(
    engine: Engine, request: SynthesisRequest, default_voice: str | None = None
) -> SynthesisRequest:
    """``request`` with the session's default voice, checked against the engine."""
    if request.speaker_id is None and default_voice is not None:
        request = dataclasses.replace(request, speaker_id=default_voice)
    try:
        check_supported(engine.name, engine.capabilities, engine.voices, request)
    except RequestError as exc:
        raise ProtocolError.from_request_error(exc) from None
    return request


def rate_limited(burst: int, rate_per_s: float) -> ProtocolError:
    return ProtocolError(
        "rate_limited",
        f"more than {burst} requests in a burst (sustained limit {rate_per_s:g} per second)",
        "send fewer, longer 'say' messages, or wait a moment",
    )


def queue_full(queued: int, limit: int) -> ProtocolError:
    return ProtocolError(
        "queue_full",
        f"{queued} utterances are queued; the limit is {limit}",
        "wait for speech.done events, or send 'cancel' to drop the queue",
    )
