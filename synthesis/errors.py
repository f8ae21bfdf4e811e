"""What a client is told when something cannot be done: a code, what happened, how to fix it.

Every layer raises these; each transport renders them once, in its own form: an HTTP
status and JSON body (``signaling.errors`` holds the one class-to-status table), or an
``error`` event on a data channel or WebSocket. A subclass fixes the status family; the
``code`` names the case within it.
"""

from __future__ import annotations

from typing import ClassVar


class ClientError(Exception):
    """An error a client can act on. ``code`` is stable and machine-readable."""

    default_code: ClassVar[str] = "invalid_request"

    def __init__(
        self,
        code: str | None,
        message: str,
        solution: str,
        *,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code or self.default_code
        self.message = message
        self.solution = solution
        self.retry_after_s = retry_after_s
        """Set when trying again later can succeed (HTTP ``Retry-After``)."""


class InvalidRequest(ClientError):
    """The request itself is malformed or out of bounds (HTTP 400)."""


class Unsupported(ClientError):
    """Well-formed, but this engine or server cannot do it (HTTP 422)."""

    default_code = "unsupported"


class NotFound(ClientError):
    """The session, listener or voice named does not exist (HTTP 404)."""

    default_code = "not_found"


class Conflict(ClientError):
    """The thing to create exists already (HTTP 409)."""

    default_code = "conflict"


class Unauthorized(ClientError):
    """No valid credential was sent (HTTP 401)."""

    default_code = "token_required"


class Forbidden(ClientError):
    """A valid credential that does not allow this (HTTP 403)."""

    default_code = "forbidden"


class ClientLimit(ClientError):
    """This client holds or sends more than its share (HTTP 429)."""

    default_code = "rate_limited"


class ServerBusy(ClientError):
    """The server is at a capacity limit, or the feature is switched off (HTTP 503)."""

    default_code = "unavailable"


class SynthesisError(ClientError):
    """An engine could not synthesise a request (HTTP 500 unless a subclass says more)."""

    default_code = "synthesis_failed"


class SynthesisTimeout(SynthesisError):
    """The engine took longer than its limit for a chunk (HTTP 504)."""

    default_code = "timeout"
