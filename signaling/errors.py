"""Every HTTP error is JSON ``{"error", "message", "solution"}`` with the right status."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping

from aiohttp import web

logger = logging.getLogger(__name__)


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


_GENERIC_SOLUTIONS = {
    404: "check the URL; see the README for the endpoints",
    405: "check the HTTP method; see the README for the endpoints",
}


@web.middleware
async def error_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Turn aiohttp's own plain-text errors (unknown route, wrong method) into JSON ones."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
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
        raise json_error(
            500,
            "internal_error",
            "the server failed to handle the request",
            "retry; if it keeps failing, report it with the server log",
        ) from None
