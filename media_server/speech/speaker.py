"""Turns queued text into encoded speech frames for one outgoing stream."""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

from media_server.audio.budget import EncodeBudget
from media_server.audio.encoder import StreamEncoder, UtteranceEncoder, leading_silence
from media_server.audio.executor import DeadlineExecutor
from media_server.audio.frames import FRAME_MS, FRAME_SAMPLES
from media_server.tasks import cancel_and_wait
from synthesis import Engine, SynthesisError, SynthesisRequest, SynthesisService
from synthesis.text import TextAccumulator

logger = logging.getLogger(__name__)

MAX_FRAMES_AHEAD: Final = 250
"""Encoded speech buffered ahead of playout (5 s); synthesis pauses beyond it."""
REFILL_FRAMES: Final = 50
"""A full buffer is refilled once this much of it (1 s) has played, not frame by frame."""
ENCODE_SLICE_MS: Final = 200
"""Engine PCM is resampled and encoded this much at a time (one worker hop each)..."""
BULK_SLICE_MS: Final = 1000
"""...or this much, once a second or more is already encoded ahead of playout.

Every slice is a round trip to an encode thread (a queue, a future, a wake-up of
the event loop). With a stream far ahead of its listener, larger slices cost no
latency and fewer round trips: one a second instead of five."""
BULK_AHEAD_FRAMES: Final = 50
FIRST_SLICE_MS: Final = 80
"""The first slice of an utterance is short, so its first packets exist sooner.

80 ms of engine audio is :data:`START_FRAMES` frames once the resampler's delay
is taken off: one short worker hop starts the utterance."""
START_FRAMES: Final = 3
"""An utterance starts playing once this many frames are encoded (or all of it is,
or its producer is waiting for streamed text). The next slice then has 60 ms to
arrive instead of 20, so a busy machine does not open speech with a gap."""

Event = dict[str, Any]
T = TypeVar("T")
EventCallback = Callable[[Event], None]


def monotonic_ms() -> float:
    """This machine's ``time.monotonic()`` in ms: the clock of :class:`UtteranceTimings`
    (not the media clock, so a client process on the same machine can compare)."""
    return time.monotonic() * 1000


@dataclass(slots=True)
class UtteranceTimings:
    """When an utterance reached each stage first, in :func:`monotonic_ms`; None: not yet.

    Stamped always (a clock read per stage); sent in ``speech.started`` only with
    ``Settings.debug_timings``, so a benchmark can split the server's time to first
    speech without patching it."""

    received_ms: float | None = None
    """The data channel (or WebSocket) handed over the message that opened it."""
    synthesis_started_ms: float | None = None
    """Its first piece of text was handed to the synthesis service."""
    first_chunk_ms: float | None = None
    """The engine's first audio chunk reached the event loop."""
    first_packets_ms: float | None = None
    """Its first Opus packets were queued for playout."""
    first_sent_ms: float | None = None
    """The pacer took its first packet (``speech.started`` is sent right then)."""

    def as_dict(self) -> dict[str, float | None]:
        return {
            f.name: None if (value := getattr(self, f.name)) is None else round(value, 3)
            for f in dataclasses.fields(self)
        }


@dataclass(eq=False)
class Utterance:
    """One ``say`` (or one streamed text), from queued to played."""

    utterance_id: str
    request: SynthesisRequest
    """Everything but the text comes from here; the text arrives as ``pieces``."""
    owner: str | None = None
    """Who asked for it (a room's bot or speaker); events name it, cancel can target it."""
    pieces: deque[str] = field(default_factory=deque)
    text_closed: bool = True
    """No more text will come (always true for ``say``; ``text.done`` for streamed text)."""
    accumulator: TextAccumulator | None = None
    streamed_chars: int = 0
    """Characters of streamed text taken so far (the talker caps it per utterance)."""
    text_arrived: asyncio.Event = field(default_factory=asyncio.Event)
    packets: deque[bytes] = field(default_factory=deque)
    produced: bool = False
    """Synthesis and encoding finished (or failed): no more packets will come."""
    cancelled: bool = False
    failed: bool = False
    """Synthesis failed; an ``error`` event was sent. Its played part still ends with done."""
    frames_played: int = 0
    first_pts: int | None = None
    end_pts: int | None = None
    """Stream position just after the last speech frame sent (``end_ts`` in events)."""
    waiting_for_text: bool = False
    """The producer has spoken every piece and waits for more streamed text."""
    source_samples: int = 0
    """Samples the engine produced (trimmed lead-in included)."""
    trimmed_samples: int = 0
    """Near-silence cut from the start, so speech starts sooner."""
    source_rate_hz: int = 0
    timings: UtteranceTimings = field(default_factory=UtteranceTimings)

    @property
    def played_ms(self) -> int:
        return self.frames_played * FRAME_MS

    @property
    def source_ms(self) -> float:
        return 1000 * self.source_samples / self.source_rate_hz if self.source_rate_hz else 0.0

    @property
    def trimmed_ms(self) -> float:
        return 1000 * self.trimmed_samples / self.source_rate_hz if self.source_rate_hz else 0.0

    @property
    def awaiting_text(self) -> bool:
        return not self.pieces and not self.text_closed

    @property
    def ready_to_start(self) -> bool:
        return len(self.packets) >= START_FRAMES or self.produced or self.waiting_for_text

    def add_text(self, pieces: list[str]) -> None:
        self.pieces.extend(pieces)
        self.text_arrived.set()


def _drop_event(event: Event) -> None:
    """Where a closed speaker's events go."""


class Speaker:
    """A queue of utterances for one stream and the task that produces their frames.

    The producer task synthesises (through the engine's :class:`SynthesisService`,
    off-loop),
    time-stretches when the engine cannot apply ``speed`` itself, resamples and
    Opus-encodes (in ``encode_executor``) one utterance after another, staying
    at most :data:`MAX_FRAMES_AHEAD` frames ahead of playout. The pacer pulls
    one packet per tick through :meth:`next_payload`; that is where
    ``speech.started``/``speech.done`` are emitted, so they describe what was
    actually sent. :meth:`cancel` takes effect on the next tick.
    """

    def __init__(
        self,
        synthesis: SynthesisService,
        encoder: StreamEncoder,
        on_event: EventCallback,
        *,
        encode_executor: concurrent.futures.Executor | None = None,
        encode_budget: EncodeBudget | None = None,
        max_queued: int = 16,
        debug_timings: bool = False,
    ) -> None:
        self._synthesis = synthesis
        self._engine = synthesis.engine
        self._encoder = encoder
        self._on_event = on_event
        self._encode_executor = encode_executor
        self._encode_budget = encode_budget
        self.max_queued = max_queued
        self._debug_timings = debug_timings
        """``speech.started`` carries the utterance's :class:`UtteranceTimings`."""
        self._queue: deque[Utterance] = deque()
        self._to_produce: deque[Utterance] = deque()
        self._wakeup = asyncio.Event()
        self._space = asyncio.Event()
        self._space.set()
        self._buffered = 0
        """Encoded frames queued in every utterance, not yet played."""
        self._task: asyncio.Task[None] | None = None
        self._next_id = 0
        self._counted_speaking = False
        """This stream is among the budget's speaking streams."""
        self.underruns = 0

    # -- control (event loop) -------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._produce_forever(), name="speaker-producer"
            )

    @property
    def engine(self) -> Engine:
        return self._engine

    @property
    def encoder(self) -> StreamEncoder:
        return self._encoder

    @property
    def pending(self) -> int:
        return len(self._queue)

    @property
    def speaking(self) -> bool:
        return bool(self._queue)

    def _count_speaking(self) -> None:
        """Tell the encode budget when this stream starts or stops speaking (after any
        change to the queue): it sizes the Opus level for what all of them will need."""
        speaking = bool(self._queue)
        if self._encode_budget is None or speaking == self._counted_speaking:
            return
        self._counted_speaking = speaking
        if speaking:
            self._encode_budget.stream_started()
        else:
            self._encode_budget.stream_stopped()

    def _enqueue(
        self, request: SynthesisRequest, utterance_id: str | None, owner: str | None
    ) -> Utterance:
        if len(self._queue) >= self.max_queued:
            raise OverflowError(f"{len(self._queue)} utterances are already queued")
        if utterance_id is None:
            self._next_id += 1
            utterance_id = f"u{self._next_id}"
        utterance = Utterance(utterance_id, request, owner)
        self._queue.append(utterance)
        self._to_produce.append(utterance)
        self._count_speaking()
        self._wakeup.set()
        return utterance

    def say(
        self,
        request: SynthesisRequest,
        utterance_id: str | None = None,
        owner: str | None = None,
    ) -> Utterance:
        """Queue ``request``; raises ``OverflowError`` when the queue is full."""
        utterance = self._enqueue(request, utterance_id, owner)
        utterance.add_text([request.text])
        return utterance

    def _open_stream(self, utterance_id: str | None, owner: str | None) -> Utterance | None:
        for utterance in reversed(self._queue):
            if (
                not utterance.text_closed
                and utterance.owner == owner
                and utterance_id in (None, utterance.utterance_id)
            ):
                return utterance
        return None

    def text_delta_opens(self, utterance_id: str | None, owner: str | None = None) -> bool:
        """True if a ``text.delta`` with this id would open a new utterance."""
        return self._open_stream(utterance_id, owner) is None

    def text_delta(
        self,
        text: str,
        request: SynthesisRequest,
        utterance_id: str | None = None,
        owner: str | None = None,
    ) -> Utterance:
        """Add streamed text to the open utterance ``utterance_id`` (or open a new one).

        Complete clauses are synthesised as soon as they exist, in order; the
        rest waits for more text or :meth:`text_done`.
        """
        utterance = self._open_stream(utterance_id, owner)
        if utterance is None:
            utterance = self._enqueue(request, utterance_id, owner)
            utterance.text_closed = False
            utterance.accumulator = TextAccumulator()
        assert utterance.accumulator is not None
        utterance.add_text(utterance.accumulator.push(text))
        return utterance

    def text_done(
        self, utterance_id: str | None = None, owner: str | None = None
    ) -> Utterance | None:
        utterance = self._open_stream(utterance_id, owner)
        if utterance is None:
            return None
        assert utterance.accumulator is not None
        utterance.text_closed = True
        utterance.add_text(utterance.accumulator.flush())
        return utterance

    def cancel(self, owner: str | None = None, *, everyone: bool = True) -> list[Utterance]:
        """Stop speaking now and drop what is queued; returns what was cancelled.

        With ``everyone=False`` only ``owner``'s utterances go (a bot's barge-in
        leaves other bots' speech alone); if one of them was playing, the next
        utterance starts on the next tick.
        """
        cancelled = [u for u in self._queue if everyone or u.owner == owner]
        for utterance in cancelled:
            self._queue.remove(utterance)
            if utterance in self._to_produce:
                self._to_produce.remove(utterance)
        self._count_speaking()
        for utterance in cancelled:
            utterance.cancelled = True
            self._buffered -= len(utterance.packets)
            utterance.packets.clear()
            utterance.text_arrived.set()
            self._emit(
                "speech.cancelled",
                utterance,
                played_ms=utterance.played_ms,
                stream_ts=utterance.first_pts,
                end_ts=utterance.end_pts,
            )
        self._space.set()
        self._wakeup.set()
        return cancelled

    async def aclose(self) -> None:
        self._on_event = _drop_event  # a closed speaker tells nobody (and holds no owner)
        for utterance in self._queue:
            utterance.cancelled = True
            utterance.text_arrived.set()
        self._queue.clear()
        self._to_produce.clear()
        self._count_speaking()
        self._buffered = 0
        task, self._task = self._task, None
        await cancel_and_wait(task)

    # -- playout (called by the pacer once per tick) --------------------------

    def next_payload(self, pts: int) -> bytes | None:
        while self._queue:
            utterance = self._queue[0]
            if utterance.first_pts is None and not utterance.ready_to_start:
                return None
            if utterance.packets:
                payload = utterance.packets.popleft()
                self._buffered -= 1
                if utterance.first_pts is None:
                    utterance.first_pts = pts
                    utterance.timings.first_sent_ms = monotonic_ms()
                    if self._debug_timings:
                        timings = utterance.timings.as_dict()
                        self._emit("speech.started", utterance, stream_ts=pts, timings=timings)
                    else:
                        self._emit("speech.started", utterance, stream_ts=pts)
                utterance.frames_played += 1
                utterance.end_pts = pts + FRAME_SAMPLES
                if self._buffered <= MAX_FRAMES_AHEAD - REFILL_FRAMES and not self._space.is_set():
                    self._space.set()
                return payload
            if not utterance.produced:
                if utterance.first_pts is not None and not utterance.awaiting_text:
                    self.underruns += 1
                    if self._encode_budget is not None:
                        self._encode_budget.record_underrun()
                return None
            self._queue.popleft()
            self._count_speaking()
            if utterance.failed and utterance.first_pts is None:
                continue  # the error event already ended it; nothing was heard
            self._emit(
                "speech.done",
                utterance,
                duration_ms=utterance.played_ms,
                source_duration_ms=round(utterance.source_ms, 1),
                trimmed_ms=round(utterance.trimmed_ms, 1),
                stream_ts=utterance.first_pts,
                end_ts=utterance.end_pts,
            )
        return None

    # -- production (producer task) -------------------------------------------

    @property
    def buffered_frames(self) -> int:
        """Encoded frames waiting to be played, across the queue."""
        return self._buffered

    def _add_packets(self, utterance: Utterance, packets: list[bytes]) -> None:
        if not utterance.cancelled:  # a cancelled utterance has left the queue
            if packets and utterance.timings.first_packets_ms is None:
                utterance.timings.first_packets_ms = monotonic_ms()
            utterance.packets.extend(packets)
            self._buffered += len(packets)

    def _emit(self, event_type: str, utterance: Utterance, **fields: Any) -> None:
        event: Event = {"type": event_type, "id": utterance.utterance_id, **fields}
        if utterance.owner is not None:
            event["owner"] = utterance.owner
        self._on_event(event)

    async def _in_encoder(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn`` on an encode thread. A :class:`DeadlineExecutor` is told when
        this stream's encoded audio runs out, so the stream nearest a gap goes first."""
        if isinstance(self._encode_executor, DeadlineExecutor):
            slack_s = self._buffered * FRAME_MS / 1000
            return await asyncio.wrap_future(
                self._encode_executor.submit_within(slack_s, fn, *args)
            )
        return await asyncio.get_running_loop().run_in_executor(self._encode_executor, fn, *args)

    async def _produce_forever(self) -> None:
        while True:
            if not self._to_produce:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            utterance = self._to_produce.popleft()
            try:
                await self._produce(utterance)
            except SynthesisError as exc:
                logger.warning("synthesis of %s failed: %s", utterance.utterance_id, exc)
                utterance.failed = True
                if not utterance.cancelled:
                    self._emit(
                        "error",
                        utterance,
                        error=exc.error,
                        message=exc.message,
                        solution=exc.solution or "retry, or check the server log",
                    )
            finally:
                utterance.produced = True

    async def _produce(self, utterance: Utterance) -> None:
        rate = self._engine.sample_rate_hz
        utterance.source_rate_hz = rate
        encoder = UtteranceEncoder(self._encoder, rate, self._encode_budget)
        speed = utterance.request.speed
        stretcher = None
        if speed != 1.0 and not self._engine.capabilities.native_speed:
            from synthesis.stretch import TimeStretcher

            stretcher = TimeStretcher(rate, speed)
        heard = False

        async def encode(pcm: Any) -> bool:
            """Encode ``pcm`` in slices; False once the utterance is cancelled."""
            nonlocal heard
            if not heard:
                # Engines often open with near-silence; it would only delay speech.
                drop = leading_silence(pcm, rate)
                drop = int(pcm.size) if drop is None else drop
                utterance.trimmed_samples += drop
                pcm = pcm[drop:]
                heard = pcm.size > 0
            start = 0
            while start < pcm.size:
                if encoder.input_samples == 0:
                    slice_ms = FIRST_SLICE_MS
                elif self._buffered >= BULK_AHEAD_FRAMES:
                    slice_ms = BULK_SLICE_MS
                else:
                    slice_ms = ENCODE_SLICE_MS
                end = start + max(1, rate * slice_ms // 1000)
                packets = await self._in_encoder(encoder.feed, pcm[start:end])
                start = end
                if utterance.cancelled:
                    return False
                self._add_packets(utterance, packets)
                while self._buffered >= MAX_FRAMES_AHEAD and not utterance.cancelled:
                    self._space.clear()
                    await self._space.wait()
            return not utterance.cancelled

        while not utterance.cancelled:
            if not utterance.pieces:
                if utterance.text_closed:
                    break
                utterance.text_arrived.clear()
                utterance.waiting_for_text = True
                try:
                    await utterance.text_arrived.wait()
                finally:
                    utterance.waiting_for_text = False
                continue
            piece = utterance.pieces.popleft()
            request = dataclasses.replace(utterance.request, text=piece)
            if utterance.timings.synthesis_started_ms is None:
                utterance.timings.synthesis_started_ms = monotonic_ms()
            stream = self._synthesis.stream(request)
            try:
                async for chunk in stream:
                    if utterance.timings.first_chunk_ms is None:
                        utterance.timings.first_chunk_ms = monotonic_ms()
                    utterance.source_samples += int(chunk.pcm.size)
                    pcm = chunk.pcm if stretcher is None else stretcher.process(chunk.pcm)
                    if utterance.cancelled or not await encode(pcm):
                        return
            finally:
                await stream.aclose()
        if utterance.cancelled:
            return
        if stretcher is not None and not await encode(stretcher.flush()):
            return
        self._add_packets(utterance, await self._in_encoder(encoder.finish))
