"""``GET /tts/ws``: a long-lived WebSocket taking requests and text deltas, returning audio."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Final

from aiohttp import WSMsgType, web

from media_server.audio.containers import AudioFormatter, create_formatter
from media_server.clock import Clock
from media_server.config import Settings
from media_server.speech.events import ErrorEvent, Event, SocketReady
from media_server.speech.protocol import binary_refused, parse_client_message
from media_server.speech.queue import Utterance, UtteranceQueue
from media_server.speech.talker import Talker
from media_server.speech.unpaced import speech_pcm
from media_server.tasks import cancel_and_wait
from signaling.access import client_address, ws_protocols
from signaling.body import message_refused
from signaling.keys import MEDIA_KEY, QUOTAS_KEY, SETTINGS_KEY
from signaling.quotas import ClientQuotas, Quota
from signaling.routes.tts import ClientGone, abort_connection, http_opus, within_write_timeout
from synthesis import ClientError, InvalidRequest, SynthesisService
from synthesis.capabilities import reference_check

logger = logging.getLogger(__name__)

WS_FORMATS: Final = ("pcm", "ogg")
MAX_WS_MESSAGE_BYTES: Final = 8 * 1024 * 1024
HEARTBEAT_S: Final = 30.0

routes = web.RouteTableDef()


class TtsSocket:
    """One WebSocket client: an utterance queue (the same as a paced stream's) and the
    task that speaks it.

    Audio goes out as binary messages, one utterance after another, as fast as it is
    synthesised (a TTS stream, not a paced RTP stream); typed events say where each
    utterance starts and ends. ``cancel`` goes through the queue like everywhere else;
    this sink stops by cancelling the send of the utterance being spoken.
    """

    def __init__(
        self,
        ws: web.WebSocketResponse,
        service: SynthesisService,
        settings: Settings,
        fmt: str,
        *,
        clock: Clock,
        quotas: ClientQuotas | None = None,
        address: str | None = None,
        abort: Callable[[], None] | None = None,
    ) -> None:
        """Each utterance holds one of ``address``'s synthesis units in ``quotas``;
        ``abort`` drops the connection of a client that stopped reading."""
        self._ws = ws
        self._quotas = quotas
        self._address = address
        self._abort = abort
        self._gone: str | None = None
        self._service = service
        self._settings = settings
        self._fmt = fmt
        self._talker = Talker(None, None, settings, clock)
        self.queue = UtteranceQueue(
            self._queue_event,
            max_queued=settings.max_queued_utterances,
            on_cancelled=self._stop_speaking,
        )
        self._pending_events: deque[Event] = deque()
        self._speaking: tuple[Utterance, asyncio.Task[None]] | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="tts-ws")

    async def aclose(self) -> None:
        self.queue.close()
        speaking = self._speaking[1] if self._speaking is not None else None
        await cancel_and_wait(speaking, self._task)

    async def send_event(self, event: Event) -> None:
        if not self._ws.closed:
            with contextlib.suppress(ClientGone):
                await self._send(event.to_json())

    async def _send(self, message: bytes | str) -> None:
        """Send within the write timeout; a client that takes nothing for that long is
        cut off (its synthesis stops), and :class:`ClientGone` is raised from then on."""
        if self._gone is not None:
            raise ClientGone(self._gone)
        if isinstance(message, bytes):
            sending = self._ws.send_bytes(message)
        else:
            sending = self._ws.send_str(message)
        try:
            await within_write_timeout(sending, self._settings.http_write_timeout_s)
        except ClientGone as exc:
            self._gone = str(exc)
            logger.info("TTS socket client went away (%s): synthesis stopped", exc)
            if self._abort is not None:
                self._abort()
            raise

    def _queue_event(self, event: Event) -> None:
        # Events from sync code (the queue) go out in order with the next flush.
        self._pending_events.append(event)

    async def _flush(self) -> None:
        while self._pending_events:
            await self.send_event(self._pending_events.popleft())

    # -- messages -------------------------------------------------------------

    async def handle(self, raw: str) -> None:
        loop = asyncio.get_running_loop()
        engine = self._service.engine
        try:
            message = await loop.run_in_executor(
                None,
                functools.partial(
                    parse_client_message,
                    raw,
                    limits=self._talker.limits,
                    max_message_bytes=MAX_WS_MESSAGE_BYTES,
                    allow_reference_audio=True,
                    check_reference=reference_check(engine.name, engine.capabilities),
                ),
            )
            self._talker.apply(message, self.queue, engine, cancel_everyone=True)
        except ClientError as exc:
            self._queue_event(ErrorEvent.of(exc))
        await self._flush()

    def _stop_speaking(self, cancelled: list[Utterance]) -> None:
        if self._speaking is not None and self._speaking[0] in cancelled:
            self._speaking[1].cancel()

    # -- production -------------------------------------------------------------

    async def _run(self) -> None:
        # once the client is cut off, queued utterances would only take slots in vain
        loop = asyncio.get_running_loop()
        while self._gone is None:
            utterance = await self.queue.next_to_produce()
            speaking = loop.create_task(self._speak(utterance), name="tts-ws-utterance")
            self._speaking = (utterance, speaking)
            try:
                await speaking
            except asyncio.CancelledError:
                if self._task is not None and self._task.cancelling():
                    raise
            finally:
                self._speaking = None
            utterance.produced = True
            if not utterance.cancelled:
                self.queue.finished(utterance)
            await self._flush()

    async def _speak(self, utterance: Utterance) -> None:
        """Speak ``utterance`` holding one of the client's synthesis units (an ``error``
        event with the HTTP answer's code when it holds them all; the socket stays up)."""
        held: contextlib.AbstractContextManager[None] = contextlib.nullcontext()
        if self._quotas is not None:
            held = self._quotas.hold(Quota.SYNTHESIS, self._address)
        try:
            with held:
                await self._synthesise(utterance)
        except ClientError as exc:
            self.queue.failed(utterance, exc)
        except (ClientGone, ConnectionError):
            return

    async def _synthesise(self, utterance: Utterance) -> None:
        service = self._service
        rate = service.engine.sample_rate_hz
        utterance.source_rate_hz = rate
        formatter: AudioFormatter = create_formatter(
            self._fmt, rate, http_opus(self._settings.opus)
        )
        loop = asyncio.get_running_loop()
        audio = speech_pcm(service, utterance.request, _pieces(utterance))
        try:
            async for pcm in audio:
                data = await loop.run_in_executor(None, formatter.feed, pcm)
                if not utterance.started:
                    self.queue.started(utterance)
                    await self._flush()
                    data = formatter.header() + data
                utterance.sent_samples += int(pcm.size)
                utterance.source_samples += int(pcm.size)
                if data:
                    await self._send(data)
            if utterance.started:
                tail = await loop.run_in_executor(None, formatter.finish)
                if tail:
                    await self._send(tail)
        finally:
            await audio.aclose()


async def _pieces(utterance: Utterance) -> AsyncIterator[str]:
    while (piece := await utterance.next_piece()) is not None:
        yield piece


@routes.get("/tts/ws")
async def tts_ws(request: web.Request) -> web.WebSocketResponse:
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
    socket = TtsSocket(
        ws,
        service,
        request.app[SETTINGS_KEY],
        fmt,
        clock=request.app[MEDIA_KEY].clock,
        quotas=request.app[QUOTAS_KEY],
        address=client_address(request),
        abort=functools.partial(abort_connection, request),
    )
    rate = 48_000 if fmt == "ogg" else service.engine.sample_rate_hz
    await ws.send_str(SocketReady(service.engine.name, fmt, rate).to_json())
    socket.start()
    try:
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                refused = message_refused(request, len(msg.data))
                if refused is not None:
                    await socket.send_event(ErrorEvent.of(refused))
                else:
                    await socket.handle(msg.data)
            elif msg.type == WSMsgType.BINARY:
                await socket.send_event(ErrorEvent.of(binary_refused()))
    finally:
        await socket.aclose()
    return ws
