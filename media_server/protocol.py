"""The data-channel protocol: JSON messages from the client, events back (docs/protocol.md)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final

MAX_MESSAGE_BYTES: Final = 16 * 1024
MAX_ID_CHARS: Final = 64


@dataclass(frozen=True, slots=True)
class SayMessage:
    text: str
    utterance_id: str | None = None


@dataclass(frozen=True, slots=True)
class CancelMessage:
    pass


ClientMessage = SayMessage | CancelMessage


class ProtocolError(Exception):
    """A client message that cannot be acted on; becomes an ``error`` event."""

    def __init__(self, error: str, message: str, solution: str) -> None:
        super().__init__(message)
        self.error = error
        self.message = message
        self.solution = solution

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


def parse_client_message(
    raw: str | bytes, *, max_text_chars: int, max_message_bytes: int = MAX_MESSAGE_BYTES
) -> ClientMessage:
    """Validate one data-channel message; raises :class:`ProtocolError`."""
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
    kind = data.get("type")
    if kind == "cancel":
        return CancelMessage()
    if kind != "say":
        raise ProtocolError(
            "unknown_type",
            f"unknown message type {kind!r}",
            "use one of the types 'say' or 'cancel'",
        )
    text = data.get("text")
    if not isinstance(text, str) or not text.strip():
        raise ProtocolError(
            "invalid_text", "'text' must be a non-empty string", "put the words to speak in 'text'"
        )
    if len(text) > max_text_chars:
        raise ProtocolError(
            "text_too_long",
            f"'text' has {len(text)} characters; the limit is {max_text_chars}",
            "split the text into several 'say' messages",
        )
    utterance_id = data.get("id")
    if utterance_id is not None and (
        not isinstance(utterance_id, str) or not 0 < len(utterance_id) <= MAX_ID_CHARS
    ):
        raise ProtocolError(
            "invalid_id",
            f"'id' must be a string of 1 to {MAX_ID_CHARS} characters",
            "omit 'id' to let the server number utterances",
        )
    return SayMessage(text=text, utterance_id=utterance_id)
