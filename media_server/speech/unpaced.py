"""Unpaced speech for the HTTP and WebSocket APIs: audio as fast as it is synthesised.

:func:`speech_pcm` is synthesis plus time-stretch, for ``POST /tts``; an
:class:`UnpacedSpeech` is the ``/tts/ws`` sink of an utterance queue, the unpaced twin
of the paced :class:`~media_server.speech.paced.PacedSpeech`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Protocol

import numpy as np
import numpy.typing as npt

from media_server.audio.containers import AudioFormatter, create_formatter
from media_server.audio.opus import OpusSettings
from media_server.speech.events import ErrorEvent, Event
from media_server.speech.meter import UtteranceMeter
from media_server.speech.protocol import ClientMessage
from media_server.speech.queue import Utterance, UtteranceQueue
from media_server.speech.talker import Talker
from media_server.tasks import cancel_and_wait
from media_server.telemetry.api import SocketMeter
from media_server.telemetry.metrics import ServerMetrics, SpeechKind
from synthesis import ClientError, SynthesisRequest, SynthesisService
from synthesis.service import Caller

logger = logging.getLogger(__name__)

Pcm = npt.NDArray[np.int16]


async def speech_pcm(
    service: SynthesisService, request: SynthesisRequest, pieces: AsyncIterator[str]
) -> AsyncGenerator[Pcm, None]:
    """Synthesise each piece of text in order and yield mono int16 PCM at the engine's rate.

    ``speed`` is applied by time-stretching when the engine cannot apply it
    itself, so every engine honours it. Each piece opens its own stream as an
    :attr:`Caller.HTTP` caller (refused with ``EngineBusy`` once HTTP holds its
    share of slots, so live sessions keep theirs); closing the iterator cancels
    synthesis.
    """
    stretcher = None
    if request.speed != 1.0 and not service.engine.capabilities.native_speed:
        from synthesis.stretch import TimeStretcher

        stretcher = TimeStretcher(service.engine.sample_rate_hz, request.speed)
    async for piece in pieces:
        stream = service.stream(dataclasses.replace(request, text=piece), Caller.HTTP)
        try:
            async for chunk in stream:
                pcm = chunk.pcm if stretcher is None else stretcher.process(chunk.pcm)
                if pcm.size:
                    yield pcm
        finally:
            await stream.aclose()
    if stretcher is not None:
        tail = stretcher.flush()
        if tail.size:
            yield tail


async def one_piece(text: str) -> AsyncIterator[str]:
    """The whole text as one piece (engines split sentences themselves)."""
    yield text


class Transport(Protocol):
    """Where an unpaced stream goes (a WebSocket): audio as bytes, events as JSON text."""

    async def send(self, message: bytes | str) -> None:
        """Raises ``ConnectionError`` once the client is gone or stopped reading."""


class UnpacedSpeech:
    """An utterance queue spoken as fast as synthesis goes, one utterance after another.

    Each utterance's audio (in ``fmt``: raw PCM, or one Ogg/Opus stream per utterance)
    goes out between its ``speech.started`` and ``speech.done``. ``cancel`` goes
    through the queue like on a paced stream; this sink stops by cancelling the send of
    the utterance being spoken. ``hold`` is entered around each utterance's synthesis
    (a per-client quota; refused with a :class:`ClientError`, sent as an error event).
    With ``metrics``, its utterances are counted as ``kind="socket"``, and each one's
    first audio byte, how it ended and every refusal as the ``/tts/ws`` API's.
    """

    def __init__(
        self,
        service: SynthesisService,
        fmt: str,
        opus: OpusSettings,
        transport: Transport,
        talker: Talker,
        *,
        max_queued: int = 16,
        hold: Callable[[], contextlib.AbstractContextManager[None]] | None = None,
        metrics: ServerMetrics | None = None,
    ) -> None:
        self._service = service
        self._meter = None if metrics is None else SocketMeter(metrics, fmt)
        self._fmt = fmt
        self._opus = opus
        self._transport = transport
        self.talker = talker
        self._hold = hold
        self.queue = UtteranceQueue(
            self._queue_event,
            max_queued=max_queued,
            on_cancelled=self._stop_speaking,
            meter=None if metrics is None else UtteranceMeter.of(metrics, SpeechKind.SOCKET),
        )
        self._pending: deque[Event] = deque()
        self._speaking: tuple[Utterance, asyncio.Task[None]] | None = None
        self._task: asyncio.Task[None] | None = None
        self._gone = False

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="unpaced-speaker")

    async def aclose(self) -> None:
        self.queue.close()
        speaking = self._speaking[1] if self._speaking is not None else None
        await cancel_and_wait(speaking, self._task)

    # -- control ----------------------------------------------------------------------

    async def handle(self, message: ClientMessage, received_ms: float | None = None) -> None:
        """Act on a client message (``received_ms``: when it arrived, default now); a
        refused one is an ``error`` event (the stream stays)."""
        try:
            self.talker.apply(
                message,
                self.queue,
                self._service.engine,
                cancel_everyone=True,
                received_ms=received_ms,
            )
        except ClientError as exc:
            self._refused(exc)
        await self._flush()

    async def report(self, exc: ClientError) -> None:
        """An ``error`` event for something refused before it was a message."""
        self._refused(exc)
        await self._flush()

    def _refused(self, exc: ClientError) -> None:
        if self._meter is not None:
            self._meter.refused(exc)
        self._queue_event(ErrorEvent.of(exc))

    def _queue_event(self, event: Event) -> None:
        # Events from sync code (the queue) go out in order with the next flush.
        self._pending.append(event)

    async def _flush(self) -> None:
        while self._pending and not self._gone:
            try:
                await self._transport.send(self._pending.popleft().to_json())
            except ConnectionError:
                self._gone = True

    def _stop_speaking(self, cancelled: list[Utterance]) -> None:
        if self._meter is not None:
            for _ in cancelled:
                self._meter.ended(cancelled=True)
        if self._speaking is not None and self._speaking[0] in cancelled:
            self._speaking[1].cancel()

    # -- production -------------------------------------------------------------------

    async def _run(self) -> None:
        # once the client is cut off, queued utterances would only take slots in vain
        loop = asyncio.get_running_loop()
        while not self._gone:
            utterance = await self.queue.next_to_produce()
            speaking = loop.create_task(self._speak(utterance), name="unpaced-utterance")
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
                if self._meter is not None and not utterance.failed:
                    self._meter.ended(cancelled=False)
                self.queue.finished(utterance)
            await self._flush()

    async def _speak(self, utterance: Utterance) -> None:
        held = self._hold() if self._hold is not None else contextlib.nullcontext()
        try:
            with held:
                await self._synthesise(utterance)
        except ClientError as exc:
            if self._meter is not None and not utterance.cancelled:
                self._meter.refused(exc)
            self.queue.failed(utterance, exc)
        except ConnectionError:
            self._gone = True

    async def _synthesise(self, utterance: Utterance) -> None:
        rate = self._service.engine.sample_rate_hz
        utterance.source_rate_hz = rate
        formatter: AudioFormatter = create_formatter(self._fmt, rate, self._opus)
        loop = asyncio.get_running_loop()
        audio = speech_pcm(self._service, utterance.request, _pieces(utterance))
        first_byte = (
            None if self._meter is None else self._meter.first_byte(utterance.timings.received_ms)
        )
        try:
            async for pcm in audio:
                encoded = data = await loop.run_in_executor(None, formatter.feed, pcm)
                if not utterance.started:
                    self.queue.started(utterance)
                    await self._flush()
                    data = formatter.header() + data
                utterance.sent_samples += int(pcm.size)
                utterance.source_samples += int(pcm.size)
                if data:
                    await self._transport.send(data)
                if encoded and first_byte is not None:
                    first_byte.sent()
            if utterance.started:
                tail = await loop.run_in_executor(None, formatter.finish)
                if tail:
                    await self._transport.send(tail)
                    if first_byte is not None:
                        first_byte.sent()
        finally:
            await audio.aclose()


async def _pieces(utterance: Utterance) -> AsyncIterator[str]:
    while (piece := await utterance.next_piece()) is not None:
        yield piece
