"""The access log, with join tokens cut out of the URLs it records."""

from __future__ import annotations

from typing import Final

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

SECRET_PARAMS: Final = frozenset({"token"})
"""Query parameters that carry a credential (a room join token on a WebSocket)."""
REDACTED: Final = "REDACTED"


def redacted_path(request: web.BaseRequest) -> str:
    """``path_qs`` with every credential in the query replaced."""
    url = request.rel_url
    if not SECRET_PARAMS.intersection(url.query):
        return request.path_qs
    query = [(k, REDACTED if k in SECRET_PARAMS else v) for k, v in url.query.items()]
    return str(url.with_query(query))


class RedactingAccessLogger(AbstractAccessLogger):
    """One line per request, like aiohttp's default, but never with a token in it; its
    parts are fields too (``event=http.access``), for the JSON log format."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        version = request.version
        path = redacted_path(request)
        fields = {
            "event": "http.access",
            "method": request.method,
            "path": path,
            "status": response.status,
            "size": response.body_length,
            "duration_ms": round(time * 1000, 1),
            "remote": request.remote,
        }
        self.logger.info(
            '%s "%s %s HTTP/%d.%d" %d %d %.3fs "%s"',
            request.remote or "-",
            request.method,
            path,
            version.major,
            version.minor,
            response.status,
            response.body_length,
            time,
            request.headers.get("User-Agent", "-"),
            extra=fields,
        )
