"""Join tokens: HMAC-SHA256 signed, expiring, scoped to one room and one role."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from synthesis.errors import Forbidden, Unauthorized

DEFAULT_TTL_S: Final = 3600
MAX_TOKEN_CHARS: Final = 2048
ROOM_NAME_MAX_CHARS: Final = 64


class Role(StrEnum):
    LISTENER = "listener"
    """Hears the room; receives events."""
    SPEAKER = "speaker"
    """A listener that may also send text and cancel over its data channel."""
    BOT = "bot"
    """Speaks into the room over the bot WebSocket."""
    CALLER = "caller"
    """A speaker whose microphone the server takes: its offer's audio is answered
    ``sendrecv`` and its voice reaches the room's caller-audio sinks (bots, barge-in)."""


@dataclass(frozen=True, slots=True)
class Claims:
    room: str
    role: Role
    identity: str
    expires_at: float
    voice: str | None = None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TokenSigner:
    """Issues and verifies ``<payload>.<signature>`` tokens (base64url JSON + HMAC-SHA256)."""

    def __init__(self, secret: bytes, clock: Callable[[], float] = time.time) -> None:
        if len(secret) < 16:
            raise ValueError("the token secret must be at least 16 bytes")
        self._secret = secret
        self._clock = clock  # wall clock: expiry is an absolute date shared with other hosts

    def _sign(self, payload: str) -> str:
        return _b64(hmac.new(self._secret, payload.encode(), hashlib.sha256).digest())

    def issue(
        self,
        room: str,
        role: Role,
        identity: str,
        ttl_s: float = DEFAULT_TTL_S,
        voice: str | None = None,
    ) -> str:
        body = {
            "room": room,
            "role": role.value,
            "sub": identity,
            "exp": int(self._clock() + ttl_s),
        }
        if voice is not None:
            body["voice"] = voice
        payload = _b64(json.dumps(body, separators=(",", ":")).encode())
        return f"{payload}.{self._sign(payload)}"

    def verify(self, token: str | None, room: str, roles: Collection[Role]) -> Claims:
        """Claims of a valid token for ``room`` and one of ``roles``; else ``Unauthorized``
        (no valid token) or ``Forbidden`` (valid, not for this room or role)."""
        if not token:
            raise Unauthorized(
                "token_required",
                "this endpoint needs a join token",
                "send 'Authorization: Bearer <token>' (or ?token= on a WebSocket)",
            )
        payload, _, signature = token.partition(".")
        if len(token) > MAX_TOKEN_CHARS or not hmac.compare_digest(
            signature.encode(), self._sign(payload).encode()
        ):
            raise Unauthorized(
                "invalid_token",
                "the token's signature does not match",
                "use a token issued with this server's VMS_TOKEN_SECRET",
            )
        try:
            body = json.loads(_unb64(payload))
            claims = Claims(
                room=str(body["room"]),
                role=Role(body["role"]),
                identity=str(body["sub"]),
                expires_at=float(body["exp"]),
                voice=body.get("voice"),
            )
        except (ValueError, KeyError, TypeError):
            raise Unauthorized(
                "invalid_token", "the token is malformed", "issue a new token"
            ) from None
        if claims.expires_at < self._clock():
            raise Unauthorized("token_expired", "the token has expired", "issue a new token")
        if claims.room != room:
            raise Forbidden(
                "wrong_room",
                f"the token is for room {claims.room!r}, not {room!r}",
                "use a token issued for this room",
            )
        if claims.role not in roles:
            raise Forbidden(
                "wrong_role",
                f"a {claims.role.value} token cannot do this; "
                f"it needs one of: {', '.join(sorted(r.value for r in roles))}",
                "use a token issued for the right role",
            )
        return claims
