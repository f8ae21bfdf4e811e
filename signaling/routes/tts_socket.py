"""``GET /tts/ws``: a long-lived WebSocket taking requests and text deltas, returning audio."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from typing import Final

from aiohttp import WSMsgType, web

from media_server.speech.events import SocketReady
from media_server.speech.protocol import ClientMessage, binary_refused, parse_client_message
from media_server.speech.queue import monotonic_ms
from media_server.speech.talker import Talker
from signaling.access import client_address, ws_protocols
from signaling.body import message_refused
from signaling.keys import MEDIA_KEY, QUOTAS_KEY, SETTINGS_KEY
from signaling.quotas import Quota
from signaling.routes.tts import ClientGone, abort_connection, within_write_timeout
from synthesis import ClientError, Engine, InvalidRequest
from synthesis.capabilities import reference_check

logger = logging.getLogger(__name__)

WS_FORMATS: Final = ("pcm", "ogg")
MAX_WS_MESSAGE_BYTES: Final = 8 * 1024 * 1024
HEARTBEAT_S: Final = 30.0

routes = web.RouteTableDef()


class SocketTransport:
    """A ``/tts/ws`` client as an unpaced speaker's transport: each send within the
    write timeout; a client that takes nothing for that long is cut off (its synthesis
    stops) and :class:`ClientGone` is raised from then on."""

    def __init__(
        self, ws: web.WebSocketResponse, timeout_s: float, abort: Callable[[], None]
    ) -> None:
        self._ws = ws
        self._timeout_s = timeout_s
        self._abort = abort
        self._gone: str | None = None

    async def send(self, message: bytes | str) -> None:
        if self._gone is not None:
            raise ClientGone(self._gone)
        if self._ws.closed:
            raise ClientGone("disconnected")
        sending = (
            self._ws.send_bytes(message)
            if isinstance(message, bytes)
            else self._ws.send_str(message)
        )
        try:
            await within_write_timeout(sending, self._timeout_s)
        except ClientGone as exc:
            self._gone = str(exc)
            logger.info("TTS socket client went away (%s): synthesis stopped", exc)
            self._abort()
            raise


@routes.get("/tts/ws")
async def tts_ws(request: web.Request) -> web.WebSocketResponse:
    request.app[MEDIA_KEY].admit()
    fmt = request.query.get("format", "pcm")
    service = request.app[MEDIA_KEY].synthesis
    if fmt not in WS_FORMATS:
        raise InvalidRequest(
            None,
            f"'format': {fmt!r} is not a WebSocket format",
            f"use one of: {', '.join(WS_FORMATS)}",
        )
    ws = web.WebSocketResponse(
        max_msg_size=MAX_WS_MESSAGE_BYTES, heartbeat=HEARTBEAT_S, protocols=ws_protocols(request)
    )
    await ws.prepare(request)
    transport = SocketTransport(
        ws,
        request.app[SETTINGS_KEY].http_write_timeout_s,
        functools.partial(abort_connection, request),
    )
    # each utterance holds one of this client's synthesis units while it is spoken
    hold = functools.partial(request.app[QUOTAS_KEY].hold, Quota.SYNTHESIS, client_address(request))
    speaker = request.app[MEDIA_KEY].unpaced_speech(fmt, transport, hold=hold)
    rate = 48_000 if fmt == "ogg" else service.engine.sample_rate_hz
    await ws.send_str(SocketReady(service.engine.name, fmt, rate).to_json())
    speaker.start()
    try:
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                received_ms = monotonic_ms()  # before parsing: first-byte time counts it
                refused = message_refused(request, len(msg.data))
                if refused is not None:
                    await speaker.report(refused)
                    continue
                try:
                    message = await parse_message(msg.data, service.engine, speaker.talker)
                except ClientError as exc:
                    await speaker.report(exc)
                else:
                    await speaker.handle(message, received_ms)
            elif msg.type == WSMsgType.BINARY:
                await speaker.report(binary_refused())
    finally:
        await speaker.aclose()
    return ws


async def parse_message(raw: str, engine: Engine, talker: Talker) -> ClientMessage:
    """A client message; off the loop, since a ``say`` may carry a reference clip."""
    return await asyncio.get_running_loop().run_in_executor(
        None,
        functools.partial(
            parse_client_message,
            raw,
            limits=talker.limits,
            max_message_bytes=MAX_WS_MESSAGE_BYTES,
            allow_reference_audio=True,
            check_reference=reference_check(engine.name, engine.capabilities),
        ),
    )
