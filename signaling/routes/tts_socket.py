"""``GET /tts/ws``: a long-lived WebSocket taking requests and text deltas, returning audio."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Final

from aiohttp import WSMsgType, web

from media_server.audio.containers import AudioFormatter, create_formatter
from media_server.clock import MonotonicClock
from media_server.config import Settings
from media_server.speech.protocol import (
    CancelMessage,
    ProtocolError,
    SayMessage,
    TextDeltaMessage,
    TextDoneMessage,
    binary_refused,
    checked_request,
    error_event,
    parse_client_message,
    queue_full,
    rate_limited,
    streamed_text_too_long,
)
from media_server.speech.rate import TokenBucket
from media_server.speech.unpaced import speech_pcm
from media_server.tasks import cancel_and_wait
from signaling.access import client_address, ws_protocols
from signaling.body import message_refused
from signaling.keys import MEDIA_KEY, QUOTAS_KEY, SETTINGS_KEY
from signaling.quotas import ClientQuotas, Quota, QuotaExceeded
from signaling.routes.tts import ClientGone, abort_connection, http_opus, within_write_timeout
from synthesis import (
    ClientError,
    InvalidRequest,
    RequestLimits,
    SynthesisRequest,
    SynthesisService,
)
from synthesis.capabilities import reference_check
from synthesis.text import TextAccumulator

logger = logging.getLogger(__name__)

WS_FORMATS: Final = ("pcm", "ogg")
MAX_WS_MESSAGE_BYTES: Final = 8 * 1024 * 1024
HEARTBEAT_S: Final = 30.0

routes = web.RouteTableDef()


@dataclass(eq=False)
class _Utterance:
    utterance_id: str
    request: SynthesisRequest
    pieces: asyncio.Queue[str | None] = field(default_factory=asyncio.Queue)
    accumulator: TextAccumulator | None = None
    streamed_chars: int = 0
    closed: bool = False
    sent_samples: int = 0

    async def texts(self) -> AsyncIterator[str]:
        while (piece := await self.pieces.get()) is not None:
            yield piece


class TtsSocket:
    """One WebSocket client: a queue of utterances and the task that speaks them.

    Audio goes out as binary messages, one utterance after another, as fast as
    it is synthesised (a TTS stream, not a paced RTP stream); JSON events say
    where each utterance starts and ends.
    """

    def __init__(
        self,
        ws: web.WebSocketResponse,
        service: SynthesisService,
        settings: Settings,
        fmt: str,
        *,
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
        self._limits = RequestLimits(max_text_chars=settings.max_text_chars)
        self._rate = TokenBucket(settings.say_rate_per_s, settings.say_burst, MonotonicClock())
        self._queue: deque[_Utterance] = deque()
        self._wakeup = asyncio.Event()
        self._current: asyncio.Task[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._next_id = 0
        self._pending_events: deque[dict[str, Any]] = deque()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="tts-ws")

    async def aclose(self) -> None:
        await cancel_and_wait(self._current, self._task)

    async def send_event(self, event: dict[str, Any]) -> None:
        if not self._ws.closed:
            with contextlib.suppress(ClientGone):
                await self._send(event)

    async def _send(self, message: bytes | dict[str, Any]) -> None:
        """Send within the write timeout; a client that takes nothing for that long is
        cut off (its synthesis stops), and :class:`ClientGone` is raised from then on."""
        if self._gone is not None:
            raise ClientGone(self._gone)
        if isinstance(message, bytes):
            sending = self._ws.send_bytes(message)
        else:
            sending = self._ws.send_json(message)
        try:
            await within_write_timeout(sending, self._settings.http_write_timeout_s)
        except ClientGone as exc:
            self._gone = str(exc)
            logger.info("TTS socket client went away (%s): synthesis stopped", exc)
            if self._abort is not None:
                self._abort()
            raise

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
                    limits=self._limits,
                    max_message_bytes=MAX_WS_MESSAGE_BYTES,
                    allow_reference_audio=True,
                    check_reference=reference_check(engine.name, engine.capabilities),
                ),
            )
            self._dispatch(message)
        except ClientError as exc:
            await self.send_event(error_event(exc))

    def _checked(self, request: SynthesisRequest) -> SynthesisRequest:
        return checked_request(self._service.engine, request)

    def _enqueue(self, request: SynthesisRequest, utterance_id: str | None) -> _Utterance:
        if len(self._queue) >= self._settings.max_queued_utterances:
            raise queue_full(len(self._queue), self._settings.max_queued_utterances)
        if not self._rate.take():
            raise rate_limited(self._settings.say_burst, self._settings.say_rate_per_s)
        if utterance_id is None:
            self._next_id += 1
            utterance_id = f"u{self._next_id}"
        utterance = _Utterance(utterance_id, request)
        self._queue.append(utterance)
        self._wakeup.set()
        return utterance

    def _open(self, utterance_id: str | None) -> _Utterance | None:
        for utterance in reversed(self._queue):
            if not utterance.closed and utterance_id in (None, utterance.utterance_id):
                return utterance
        return None

    def _dispatch(self, message: object) -> None:
        if isinstance(message, CancelMessage):
            self._cancel()
        elif isinstance(message, SayMessage):
            utterance = self._enqueue(self._checked(message.request), message.utterance_id)
            utterance.pieces.put_nowait(message.request.text)
            utterance.pieces.put_nowait(None)
            utterance.closed = True
        elif isinstance(message, TextDeltaMessage):
            open_utterance = self._open(message.utterance_id)
            if open_utterance is None:
                base = self._checked(SynthesisRequest(text=message.text or " "))
                open_utterance = self._enqueue(base, message.utterance_id)
                open_utterance.accumulator = TextAccumulator()
            assert open_utterance.accumulator is not None
            total = open_utterance.streamed_chars + len(message.text)
            if total > self._limits.max_streamed_text_chars:
                raise streamed_text_too_long(self._limits.max_streamed_text_chars)
            open_utterance.streamed_chars = total
            for piece in open_utterance.accumulator.push(message.text):
                open_utterance.pieces.put_nowait(piece)
        elif isinstance(message, TextDoneMessage):
            open_utterance = self._open(message.utterance_id)
            if open_utterance is None or open_utterance.accumulator is None:
                raise ProtocolError(
                    "no_open_text",
                    "there is no streamed text to finish",
                    "send 'text.done' after 'text.delta' messages, with the same 'id'",
                )
            for piece in open_utterance.accumulator.flush():
                open_utterance.pieces.put_nowait(piece)
            open_utterance.pieces.put_nowait(None)
            open_utterance.closed = True

    def _cancel(self) -> None:
        cancelled = list(self._queue)
        self._queue.clear()
        if self._current is not None:
            self._current.cancel()
        rate = self._service.engine.sample_rate_hz
        for utterance in cancelled:
            self._queue_event(
                {
                    "type": "speech.cancelled",
                    "id": utterance.utterance_id,
                    "sent_ms": round(1000 * utterance.sent_samples / rate),
                }
            )

    def _queue_event(self, event: dict[str, Any]) -> None:
        # Events from sync code go out in order through the socket's own writer.
        self._pending_events.append(event)
        self._wakeup.set()

    # -- production -------------------------------------------------------------

    async def _run(self) -> None:
        # once the client is cut off, queued utterances would only take slots in vain
        while self._gone is None:
            while self._pending_events:
                await self.send_event(self._pending_events.popleft())
            if not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            utterance = self._queue[0]
            self._current = asyncio.get_running_loop().create_task(self._speak(utterance))
            try:
                await self._current
            except asyncio.CancelledError:
                if self._task is not None and self._task.cancelling():
                    raise
            finally:
                self._current = None
            if self._queue and self._queue[0] is utterance:
                self._queue.popleft()

    async def _speak(self, utterance: _Utterance) -> None:
        """Speak ``utterance`` holding one of the client's synthesis units (an ``error``
        event with the HTTP answer's code when it holds them all; the socket stays up)."""
        held: contextlib.AbstractContextManager[None] = contextlib.nullcontext()
        if self._quotas is not None:
            held = self._quotas.hold(Quota.SYNTHESIS, self._address)
        try:
            with held:
                await self._synthesise(utterance)
        except QuotaExceeded as exc:
            await self.send_event(error_event(exc, utterance.utterance_id))

    async def _synthesise(self, utterance: _Utterance) -> None:
        service = self._service
        formatter: AudioFormatter = create_formatter(
            self._fmt, service.engine.sample_rate_hz, http_opus(self._settings.opus)
        )
        loop = asyncio.get_running_loop()
        audio = speech_pcm(service, utterance.request, utterance.texts())
        started = False
        try:
            async for pcm in audio:
                data = await loop.run_in_executor(None, formatter.feed, pcm)
                if not started:
                    started = True
                    await self.send_event({"type": "speech.started", "id": utterance.utterance_id})
                    data = formatter.header() + data
                utterance.sent_samples += int(pcm.size)
                if data:
                    await self._send(data)
            if started:
                tail = await loop.run_in_executor(None, formatter.finish)
                if tail:
                    await self._send(tail)
            rate = service.engine.sample_rate_hz
            await self.send_event(
                {
                    "type": "speech.done",
                    "id": utterance.utterance_id,
                    "duration_ms": round(1000 * utterance.sent_samples / rate),
                }
            )
        except ClientError as exc:
            await self.send_event(error_event(exc, utterance.utterance_id))
        except (ClientGone, ConnectionError):
            return
        finally:
            await audio.aclose()


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
        quotas=request.app[QUOTAS_KEY],
        address=client_address(request),
        abort=functools.partial(abort_connection, request),
    )
    rate = 48_000 if fmt == "ogg" else service.engine.sample_rate_hz
    await ws.send_json(
        {"type": "ready", "engine": service.engine.name, "format": fmt, "sample_rate_hz": rate}
    )
    socket.start()
    try:
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                refused = message_refused(request, len(msg.data))
                if refused is not None:
                    await socket.send_event(error_event(refused))
                else:
                    await socket.handle(msg.data)
            elif msg.type == WSMsgType.BINARY:
                await socket.send_event(error_event(binary_refused()))
    finally:
        await socket.aclose()
    return ws
