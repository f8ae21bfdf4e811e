"""Every HTTP error is JSON ``{"error", "message", "solution"}`` with the right status.

Handlers raise :class:`~synthesis.errors.ClientError` subclasses (from any layer) and
:func:`error_middleware` renders them, with the status :data:`STATUS` gives the class.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Final

from aiohttp import web

from media_server import IceRestartRefused, IceRestartUnsupported, StaleIceCredentials
from media_server.telemetry.api import TtsApi, count_refusal, count_tts_request
from signaling.keys import MEDIA_KEY, TTS_FORMAT_KEY
from synthesis.errors import (
    ClientError,
    ClientLimit,
    Conflict,
    Forbidden,
    InvalidRequest,
    NotFound,
    ServerBusy,
    SynthesisError,
    SynthesisTimeout,
    Unauthorized,
    Unsupported,
)

logger = logging.getLogger(__name__)


class BodyTooLarge(ClientError):
    """The request body is over the route's limit (HTTP 413)."""

    default_code = "body_too_large"


class UnsupportedMediaType(ClientError):
    """The body's ``Content-Type`` is not the one the route takes (HTTP 415)."""

    default_code = "unsupported_media_type"


class PreconditionFailed(ClientError):
    """``If-Match`` names an entity tag that is not the current one (HTTP 412)."""

    default_code = "precondition_failed"


class PreconditionRequired(ClientError):
    """The request changes state that others may change too and has no ``If-Match``
    (HTTP 428, RFC 6585)."""

    default_code = "precondition_required"


STATUS: Final[Mapping[type[ClientError], int]] = {
    ClientError: 400,
    InvalidRequest: 400,
    Unauthorized: 401,
    Forbidden: 403,
    NotFound: 404,
    Conflict: 409,
    IceRestartRefused: 409,
    PreconditionFailed: 412,
    StaleIceCredentials: 412,
    BodyTooLarge: 413,
    UnsupportedMediaType: 415,
    Unsupported: 422,
    IceRestartUnsupported: 422,
    PreconditionRequired: 428,
    ClientLimit: 429,
    SynthesisError: 500,
    ServerBusy: 503,
    SynthesisTimeout: 504,
}
"""The HTTP status of each error class; a subclass takes its nearest listed ancestor's."""

REALM: Final = 'Bearer realm="voice-media-server"'


def status_of(exc: ClientError) -> int:
    return next(STATUS[cls] for cls in type(exc).__mro__ if cls in STATUS)


def json_error(
    status: int,
    error: str,
    message: str,
    solution: str,
    headers: Mapping[str, str] | None = None,
) -> web.HTTPException:
    """An exception to raise from a handler; its body is the JSON error."""
    body = json.dumps({"error": error, "message": message, "solution": solution})
    exc = web.HTTPException(text=body, content_type="application/json", headers=headers)
    exc.set_status(status)
    return exc


def http_error(exc: ClientError) -> web.HTTPException:
    """``exc`` as the HTTP answer: its status, ``Retry-After`` when retrying can help, and
    ``WWW-Authenticate`` when a token is missing."""
    status = status_of(exc)
    headers: dict[str, str] = {}
    if exc.retry_after_s is not None:
        headers["Retry-After"] = str(max(1, round(exc.retry_after_s)))
    if status == 401:
        headers["WWW-Authenticate"] = REALM
    solution = exc.solution or "retry the request"
    return json_error(status, exc.code, exc.message, solution, headers or None)


_GENERIC_SOLUTIONS = {
    404: "check the URL; see the README for the endpoints",
    405: "check the HTTP method; see the README for the endpoints",
}


@web.middleware
async def error_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Render client errors, and turn aiohttp's own plain-text errors (unknown route, wrong
    method) into JSON ones. Every answer's status is counted here (:func:`_observe`)."""
    try:
        response = await handler(request)
    except ClientError as exc:
        error = http_error(exc)
        _observe(request, error.status, exc)
        raise error from None
    except web.HTTPException as exc:
        _observe(request, exc.status)
        if exc.status < 400 or exc.content_type == "application/json":
            raise
        raise json_error(
            exc.status,
            exc.reason.lower().replace(" ", "_"),
            exc.text or exc.reason,
            _GENERIC_SOLUTIONS.get(exc.status, "see the README for the API"),
            headers={k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after")},
        ) from None
    except Exception:
        logger.exception("unhandled error in %s %s", request.method, request.path)
        _observe(request, 500)
        raise json_error(
            500,
            "internal_error",
            "the server failed to handle the request",
            "retry; if it keeps failing, report it with the server log",
        ) from None
    _observe(request, response.status)
    return response


_PROBES: Final = frozenset({"/readyz"})
"""Routes whose 503 answers a question (is the server draining?) and refuses no work."""


def _observe(request: web.Request, status: int, exc: ClientError | None = None) -> None:
    """The one place HTTP answers are counted: ``refusals`` (503/429 by code) for every
    route but probes, and ``tts_requests`` for ``POST /tts`` with its final status."""
    media = request.app.get(MEDIA_KEY)
    if media is None:  # not started (or failed to)
        return
    resource = request.match_info.route.resource
    path = None if resource is None else resource.canonical
    if exc is not None and path not in _PROBES:
        count_refusal(media.metrics, exc)
    if request.method == "POST" and path == "/tts":
        count_tts_request(media.metrics, TtsApi.HTTP, request.get(TTS_FORMAT_KEY), str(status))
