"""The aiohttp application: middlewares, routes, and the one MediaServer it owns."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from importlib import resources
from pathlib import Path
from typing import Final

from aiohttp import web

from media_server import MediaServer, Settings
from media_server.clock import Clock
from signaling.access import allowed_origin, is_operator
from signaling.errors import error_middleware
from signaling.guard import access_middleware
from signaling.keys import MEDIA_KEY, QUOTAS_KEY, SETTINGS_KEY
from signaling.openapi import openapi_handler
from signaling.quotas import ClientQuotas, QuotaLimits
from signaling.routes import rooms, tts, tts_socket, whep
from synthesis import Engine

logger = logging.getLogger(__name__)

KEEPALIVE_TIMEOUT_S: Final = 75.0
"""An idle HTTP keep-alive connection is closed after this long.

``web.run_app`` uses 75 s; a bare ``web.AppRunner`` would keep one for an hour,
and with it the connection's cancelled timer on the event loop. Every runner of
this app (the server, the benchmarks, the browser check) passes this value."""


def _web_client_dir() -> Path:
    return Path(str(resources.files("web_client")))


@web.middleware
async def cors_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Let WHEP players on the origins in ``VMS_CORS_ORIGINS`` use the API.

    No origin is allowed by default: the bundled page is same-origin, and a page
    elsewhere must not drive a server it happens to reach (a loopback one, say).
    """
    origin = request.headers.get("Origin")
    allowed = origin is not None and allowed_origin(origin, request.app[SETTINGS_KEY].cors_origins)
    if request.method == "OPTIONS" and allowed:
        response: web.StreamResponse = web.Response(status=204)
        response.headers["Access-Control-Allow-Methods"] = "GET, POST, PATCH, DELETE, OPTIONS"
        response.headers["Access-Control-Allow-Headers"] = "Content-Type, Authorization, If-Match"
        response.headers["Access-Control-Max-Age"] = "600"
        response.headers["Accept-Post"] = whep.SDP_TYPE
        response.headers["Accept-Patch"] = whep.TRICKLE_TYPE
    else:
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            if allowed:
                _allow(exc.headers, request)
            raise
    if allowed:
        _allow(response.headers, request)
    return response


def _allow(headers: MutableMapping[str, str], request: web.Request) -> None:
    allowed = request.app[SETTINGS_KEY].cors_origins
    headers["Access-Control-Allow-Origin"] = "*" if "*" in allowed else request.headers["Origin"]
    headers["Access-Control-Expose-Headers"] = "Location, Retry-After, ETag"
    if "*" not in allowed:
        headers["Vary"] = "Origin"


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(_web_client_dir() / "index.html")


async def health(request: web.Request) -> web.Response:
    return web.json_response(request.app[MEDIA_KEY].health())


async def ready(request: web.Request) -> web.Response:
    """Readiness for a load balancer: ``503`` ``draining`` once shutdown has begun, while
    the sessions already here finish (``/healthz`` stays the liveness check)."""
    request.app[MEDIA_KEY].admit()
    return web.json_response({"status": "ready"})


async def stats(request: web.Request) -> web.Response:
    """Server figures; who is connected only for the operator (see MediaServer.stats)."""
    body = request.app[MEDIA_KEY].stats(detail=is_operator(request))
    body["client_limits_refused"] = request.app[QUOTAS_KEY].refused_total
    return web.json_response(body)


async def stats_window(request: web.Request) -> web.Response:
    """Start a fresh measuring window in every pacer (1:1 sessions and rooms): a later
    ``GET /stats`` shows lateness, frames and underruns since now (benchmarks, tests)."""
    return web.json_response(request.app[MEDIA_KEY].start_stats_window())


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text format (the operator token guards it, see signaling/guard.py)."""
    body, content_type = await request.app[MEDIA_KEY].metrics_exposition()
    response = web.Response(body=body)
    response.headers["Content-Type"] = content_type
    return response


def create_app(
    settings: Settings, engine: Engine | None = None, clock: Clock | None = None
) -> web.Application:
    """Build the server. ``engine`` defaults to the one named in ``settings`` (loaded off-loop)."""
    app = web.Application(middlewares=[cors_middleware, error_middleware, access_middleware])
    app[SETTINGS_KEY] = settings
    app[QUOTAS_KEY] = ClientQuotas(
        QuotaLimits(
            synthesis=settings.max_syntheses_per_client,
            sockets=settings.max_sockets_per_client,
            upload_bytes_per_s=settings.client_upload_bytes_per_s,
        )
    )

    async def media_ctx(app: web.Application) -> AsyncIterator[None]:
        media = MediaServer(settings, engine, clock)
        app[MEDIA_KEY] = media
        try:
            await media.start()
            yield
        finally:
            await media.aclose()

    app.cleanup_ctx.append(media_ctx)
    app.router.add_get("/", index)
    app.router.add_get("/healthz", health)
    app.router.add_get("/readyz", ready)
    app.router.add_get("/stats", stats)
    app.router.add_post("/stats/window", stats_window)
    app.router.add_get("/metrics", metrics)
    app.router.add_routes(whep.routes)
    app.router.add_routes(tts.routes)
    app.router.add_routes(tts_socket.routes)
    app.router.add_routes(rooms.routes)
    app.router.add_get("/openapi.json", openapi_handler)
    app.router.add_static("/static/", _web_client_dir(), name="static")
    return app
