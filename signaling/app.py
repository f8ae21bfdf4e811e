"""The aiohttp application: routes, typed state and owned background work."""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import gc
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from importlib import resources
from pathlib import Path
from typing import Final

from aiohttp import web

from media_server.audio.budget import EncodeBudget
from media_server.audio.executor import DeadlineExecutor
from media_server.clock import Clock, PreciseClock
from media_server.config import Settings
from media_server.rooms.registry import RoomRegistry
from media_server.rooms.tokens import TokenSigner
from media_server.rtc.ice import restrict_host_addresses
from media_server.runtime.collector import CollectionScheduler
from media_server.runtime.heap import HeapTrimmer, glibc_malloc_trim
from media_server.runtime.priority import lower_thread_priority
from media_server.sessions.registry import SessionRegistry
from media_server.tasks import cancel_and_wait
from signaling.access import allowed_origin, is_operator
from signaling.errors import error_middleware
from signaling.guard import access_middleware
from signaling.keys import (
    COLLECTOR_KEY,
    ENCODE_BUDGET_KEY,
    ENGINE_KEY,
    HEAP_TRIMMER_KEY,
    QUOTAS_KEY,
    REGISTRY_KEY,
    ROOMS_KEY,
    SETTINGS_KEY,
    SIGNER_KEY,
    SYNTHESIS_KEY,
)
from signaling.openapi import openapi_handler
from signaling.quotas import ClientQuotas, QuotaLimits
from signaling.routes import rooms as room_routes
from signaling.routes import tts, tts_socket, whep
from synthesis import Engine, SynthesisService, create_engine

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
        response.headers["Access-Control-Allow-Headers"] = "Content-Type, Authorization"
        response.headers["Access-Control-Max-Age"] = "600"
        response.headers["Accept-Post"] = whep.SDP_TYPE
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
    headers["Access-Control-Expose-Headers"] = "Location, Retry-After"
    if "*" not in allowed:
        headers["Vary"] = "Origin"


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(_web_client_dir() / "index.html")


async def health(request: web.Request) -> web.Response:
    registry = request.app[REGISTRY_KEY]
    engine = request.app[ENGINE_KEY]
    return web.json_response({"status": "ok", "engine": engine.name, "sessions": len(registry)})


async def stats(request: web.Request) -> web.Response:
    """Server figures; who is connected (session ids, rooms, identities) only for the
    operator: a session's URL is what lets a client change or end it."""
    registry = request.app[REGISTRY_KEY]
    budget = request.app[ENCODE_BUDGET_KEY]
    trimmer = request.app[HEAP_TRIMMER_KEY]
    collector = request.app[COLLECTOR_KEY]
    body: dict[str, object] = {
        "sessions": len(registry),
        "max_sessions": registry.settings.max_sessions,
        "closed_total": registry.closed_total,
        "rooms_open": room_routes.rooms_open(request),
        "synthesis": dataclasses.asdict(request.app[SYNTHESIS_KEY].stats()),
        "opus": {
            "complexity": budget.complexity,
            "encode_load_cores": round(budget.load_cores, 3),
            "encode_budget_cores": budget.budget_cores,
            "complexity_changes": budget.changes,
            "speaking_streams": budget.active_streams,
            "frame_cost_us": round(budget.frame_cost_s * 1e6, 1),
        },
        "gc": {
            "full_collections": collector.collections,
            "longest_full_ms": round(collector.longest_s * 1000, 1),
        },
        "heap": {
            "idle_trims": trimmer.trims,
            "freed_mb": round(trimmer.freed_bytes / 2**20, 1),
        },
        "client_limits_refused": request.app[QUOTAS_KEY].refused_total,
    }
    if is_operator(request):
        body["rooms"] = room_routes.rooms_stats(request)
        body["per_session"] = [s.stats() for s in registry.sessions()]
    return web.json_response(body)


async def stats_window(request: web.Request) -> web.Response:
    """Start a fresh measuring window in every pacer (1:1 sessions and rooms): a later
    ``GET /stats`` shows lateness, frames and underruns since now (benchmarks, tests)."""
    sessions = request.app[REGISTRY_KEY].start_stats_window()
    rooms = request.app[ROOMS_KEY].start_stats_window()
    return web.json_response({"sessions": sessions, "rooms": rooms})


async def gc_ctx(app: web.Application) -> AsyncIterator[None]:
    """Keep what start-up built out of every later garbage collection.

    A full collection holds the event loop while it walks every tracked object, and
    most of them after start-up (modules, the engine, aiortc's and aiohttp's classes)
    live as long as the server. Frozen, they are never walked again (start-up objects
    outnumber what a few dozen live sessions add; measured: see docs/performance.md).
    Closed peers leave almost no cyclic
    garbage (:mod:`media_server.rtc.teardown`), but the collections that walk the live
    sessions' objects still reach tens of ms with many sessions while peers churn: those
    are scheduled by :class:`~media_server.runtime.collector.CollectionScheduler`.
    """
    gc.collect()
    gc.freeze()
    logger.info("gc: %d start-up objects frozen", gc.get_freeze_count())
    yield
    gc.unfreeze()


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
    # one clock for pacing and the encode budget; its timers are released at cleanup
    owned_clock: PreciseClock | None = None
    if clock is None:
        clock = owned_clock = PreciseClock()
    media_clock: Clock = clock
    if settings.token_secret is not None:
        app[SIGNER_KEY] = TokenSigner(settings.token_secret.encode())
    if settings.ice_host_addresses:
        restrict_host_addresses(settings.ice_host_addresses)

    async def engine_ctx(app: web.Application) -> AsyncIterator[None]:
        owned = engine is None
        loaded = engine
        if loaded is None:
            # Loaded in a thread below the loop's priority: threads the engine starts
            # (ONNX Runtime's pool) inherit it, so synthesis never delays a frame.
            with concurrent.futures.ThreadPoolExecutor(
                1, thread_name_prefix="engine-load", initializer=lower_thread_priority
            ) as loader:
                loaded = await asyncio.get_running_loop().run_in_executor(
                    loader, create_engine, settings.engine
                )
        app[ENGINE_KEY] = loaded
        yield
        if owned:
            loaded.close()

    async def registry_ctx(app: web.Application) -> AsyncIterator[None]:
        synthesis = SynthesisService(
            app[ENGINE_KEY],
            settings.synthesis_workers,
            http_slots=settings.http_synthesis_slots,
            chunk_timeout_s=settings.synthesis_chunk_timeout_s,
            thread_initializer=lower_thread_priority,
        )
        app[SYNTHESIS_KEY] = synthesis
        # Earliest deadline first: the stream whose encoded audio runs out soonest.
        encode_pool = DeadlineExecutor(
            settings.encode_thread_count,
            thread_name_prefix="opus-encode",
            initializer=lower_thread_priority,
        )
        # One Opus complexity for every stream, lowered when encoding outgrows its budget.
        budget = EncodeBudget(
            settings.opus.encode_budget_pct / 100,
            settings.opus.complexity,
            settings.opus.min_complexity,
            now=media_clock.now,
        )
        app[ENCODE_BUDGET_KEY] = budget
        registry = SessionRegistry(
            settings,
            synthesis,
            clock=media_clock,
            encode_executor=encode_pool,
            encode_budget=budget,
        )
        registry.start()
        app[REGISTRY_KEY] = registry
        rooms = RoomRegistry(
            settings,
            synthesis,
            clock=media_clock,
            encode_executor=encode_pool,
            encode_budget=budget,
        )
        rooms.start()
        app[ROOMS_KEY] = rooms

        def busy() -> bool:
            return len(registry) > 0 or bool(rooms.rooms)

        trimmer = HeapTrimmer(
            busy,
            media_clock,
            settings.heap_trim_idle_s,
            trim=glibc_malloc_trim() if settings.heap_trim_idle_s > 0 else None,
        )
        app[HEAP_TRIMMER_KEY] = trimmer
        collector = CollectionScheduler(busy, media_clock, settings.gc_full_interval_s)
        collector.install()
        app[COLLECTOR_KEY] = collector
        loop = asyncio.get_running_loop()
        tasks = [
            loop.create_task(trimmer.run(), name="heap-trimmer"),
            loop.create_task(collector.run(), name="gc-scheduler"),
        ]
        try:
            yield
        finally:
            await cancel_and_wait(*tasks)
            collector.uninstall()
            await rooms.aclose()
            await registry.aclose()
            synthesis.close()
            encode_pool.shutdown(wait=False, cancel_futures=True)
            if owned_clock is not None:
                owned_clock.close()

    app.cleanup_ctx.append(engine_ctx)
    app.cleanup_ctx.append(registry_ctx)
    app.cleanup_ctx.append(gc_ctx)
    app.router.add_get("/", index)
    app.router.add_get("/healthz", health)
    app.router.add_get("/stats", stats)
    app.router.add_post("/stats/window", stats_window)
    app.router.add_routes(whep.routes)
    app.router.add_routes(tts.routes)
    app.router.add_routes(tts_socket.routes)
    app.router.add_routes(room_routes.routes)
    app.router.add_get("/openapi.json", openapi_handler)
    app.router.add_static("/static/", _web_client_dir(), name="static")
    return app
