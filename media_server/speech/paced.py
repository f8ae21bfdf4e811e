"""The paced sink: queued text becomes encoded speech frames, one per pacer tick.

The :class:`~media_server.speech.queue.UtteranceQueue` says what to speak; the producer
task here synthesises, time-stretches, trims the lead-in and Opus-encodes it ahead of
playout, and :meth:`PacedSpeech.next_payload` is the playout cursor the pacer pulls from.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import functools
import logging
from collections import deque
from collections.abc import Callable
from typing import Any, Final, TypeVar

from media_server.audio.budget import EncodeBudget
from media_server.audio.encoder import StreamEncoder, UtteranceEncoder, leading_silence
from media_server.audio.executor import DeadlineExecutor
from media_server.audio.frames import FRAME_MS, FRAME_SAMPLES
from media_server.speech.events import SpeechPaused, SpeechResumed
from media_server.speech.meter import UtteranceMeter
from media_server.speech.queue import EventSink, Utterance, UtteranceQueue, monotonic_ms
from media_server.speech.transcript import Transcript
from media_server.tasks import cancel_and_wait
from media_server.telemetry.metrics import ServerMetrics, SpeechKind
from synthesis import Engine, SynthesisService
from synthesis.errors import ClientError

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
MAX_REWIND_FRAMES: Final = 150
"""Played frames kept for :meth:`PacedSpeech.hold` to send again (3 s)."""
T = TypeVar("T")


class PacedSpeech:
    """One paced stream's speech: its utterance queue, the task that produces frames,
    and the playout cursor the pacer pulls from.

    The producer task synthesises (through the engine's :class:`SynthesisService`,
    off-loop), time-stretches when the engine cannot apply ``speed`` itself, resamples
    and Opus-encodes (in ``encode_executor``) one utterance after another, staying at
    most :data:`MAX_FRAMES_AHEAD` frames ahead of playout. The pacer pulls one packet
    per tick through :meth:`next_payload`; that is where ``speech.started`` and
    ``speech.done`` are emitted, so they describe what was actually sent.
    :meth:`cancel` takes effect on the next tick. With ``metrics``, its utterances are
    counted under ``kind`` and its underruns on the server's counter.
    """

    def __init__(
        self,
        synthesis: SynthesisService,
        encoder: StreamEncoder,
        on_event: EventSink,
        *,
        encode_executor: concurrent.futures.Executor | None = None,
        encode_budget: EncodeBudget | None = None,
        max_queued: int = 16,
        debug_timings: bool = False,
        metrics: ServerMetrics | None = None,
        kind: SpeechKind = SpeechKind.SESSION,
    ) -> None:
        self._synthesis = synthesis
        self._engine = synthesis.engine
        self._encoder = encoder
        self._encode_executor = encode_executor
        self._encode_budget = encode_budget
        self.queue = UtteranceQueue(
            on_event,
            max_queued=max_queued,
            debug_timings=debug_timings,
            on_cancelled=self._dropped,
            on_speaking=self._count_speaking,
            meter=None if metrics is None else UtteranceMeter.of(metrics, kind),
        )
        self._metrics = metrics
        self._space = asyncio.Event()
        self._space.set()
        self._buffered = 0
        """Encoded frames queued in every utterance, not yet played."""
        self._task: asyncio.Task[None] | None = None
        self.underruns = 0
        self._held = False
        self._paused: Utterance | None = None
        """The utterance :meth:`pause` stopped (barge-in), until :meth:`resume`."""
        self._pausing = False
        self._played: deque[bytes] = deque(maxlen=MAX_REWIND_FRAMES)
        """The head utterance's last frames sent, for :meth:`hold` to send again."""
        self._played_of: Utterance | None = None
        self.rewound_frames = 0

    # -- control (event loop) -------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._produce_forever(), name="speech-producer"
            )

    @property
    def engine(self) -> Engine:
        return self._engine

    @property
    def encoder(self) -> StreamEncoder:
        return self._encoder

    @property
    def pending(self) -> int:
        return self.queue.pending

    @property
    def speaking(self) -> bool:
        return self.queue.speaking

    @property
    def max_queued(self) -> int:
        return self.queue.max_queued

    def _count_speaking(self, speaking: bool) -> None:
        """Tell the encode budget when this stream starts or stops speaking: it sizes
        the Opus level for what all of them will need."""
        if self._encode_budget is None:
            return
        if speaking:
            self._encode_budget.stream_started()
        else:
            self._encode_budget.stream_stopped()

    def _dropped(self, cancelled: list[Utterance]) -> None:
        """Cancelled utterances' frames are never played; the producer stops after the
        slice it is encoding (the stream's Opus state must not be shared by two)."""
        for utterance in cancelled:
            self._buffered -= len(utterance.packets)
            utterance.packets.clear()
        self._space.set()

    def hold(self, rewind_frames: int) -> None:
        """Stop playing (silence goes out) until :meth:`release`, and put the last
        ``rewind_frames`` frames of the utterance playing back in front of it.

        For a listener whose path died (an ICE restart): what was sent since it moved
        never arrived, and what is played meanwhile would not either. Only the
        utterance playing now is rewound (an earlier one's ``speech.done`` is out).
        """
        self._held = True
        utterance = self.queue.head
        if utterance is None or utterance is not self._played_of or utterance.cancelled:
            return
        count = min(rewind_frames, len(self._played), utterance.frames_played)
        for _ in range(count):
            utterance.packets.appendleft(self._played.pop())
        utterance.frames_played -= count
        self._buffered += count
        self.rewound_frames += count

    def release(self) -> None:
        """Play again after :meth:`hold`."""
        self._held = False

    @property
    def held(self) -> bool:
        return self._held

    def pause(self) -> Utterance | None:
        """Stop playing where it is, without rewinding (a caller barging in): silence goes
        out, so the RTP stream stays continuous, until :meth:`resume`. The utterance at the
        head of the queue gets ``speech.paused`` and is returned (None: nothing queued)."""
        if self._pausing:
            return self._paused
        self._pausing = True
        paused = self._paused = self.queue.head
        if paused is not None:
            self._log(paused, "paused")
            self.queue.emit(
                SpeechPaused(
                    paused.utterance_id,
                    paused.played_ms,
                    paused.heard_text or "",
                    paused.first_pts,
                    paused.end_pts,
                    paused.owner,
                )
            )
        return paused

    def resume(self) -> None:
        """Play on after :meth:`pause`, from the frame after the last one sent; the paused
        utterance gets ``speech.resumed`` unless it has been cancelled meanwhile."""
        if not self._pausing:
            return
        paused, self._paused, self._pausing = self._paused, None, False
        if paused is not None and not paused.cancelled and paused is self.queue.head:
            self._log(paused, "resumed")
            self.queue.emit(SpeechResumed(paused.utterance_id, paused.played_ms, paused.owner))

    def _log(self, utterance: Utterance, what: str) -> None:
        logger.debug(
            "utterance %s %s (%d ms played)",
            utterance.utterance_id,
            what,
            utterance.played_ms,
            extra={"event": f"utterance.{what}", "utterance": utterance.utterance_id},
        )

    @property
    def paused(self) -> bool:
        return self._pausing

    async def aclose(self) -> None:
        self.queue.close()
        self._buffered = 0
        task, self._task = self._task, None
        await cancel_and_wait(task)
        self._synthesis.forget(self)

    # -- playout (called by the pacer once per tick) --------------------------

    def next_payload(self, pts: int) -> bytes | None:
        if self._held or self._pausing:
            return None
        while (utterance := self.queue.head) is not None:
            if not utterance.started and not utterance.ready_to_start:
                return None
            if utterance.packets:
                payload = utterance.packets.popleft()
                self._buffered -= 1
                if not utterance.started:
                    self.queue.started(utterance, pts)
                utterance.frames_played += 1
                utterance.end_pts = pts + FRAME_SAMPLES
                if utterance is not self._played_of:
                    self._played.clear()
                    self._played_of = utterance
                self._played.append(payload)
                if self._buffered <= MAX_FRAMES_AHEAD - REFILL_FRAMES and not self._space.is_set():
                    self._space.set()
                return payload
            if not utterance.produced:
                if utterance.started and not utterance.awaiting_text:
                    self.underruns += 1
                    if self._metrics is not None:
                        self._metrics.underruns.inc()
                    if self._encode_budget is not None:
                        self._encode_budget.record_underrun()
                return None
            self.queue.finished(utterance)
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
            utterance = await self.queue.next_to_produce()
            try:
                await self._produce(utterance)
            except ClientError as exc:
                logger.warning(
                    "synthesis of %s failed: %s",
                    utterance.utterance_id,
                    exc,
                    extra={"event": "utterance.failed", "utterance": utterance.utterance_id},
                )
                self.queue.failed(utterance, exc)
            finally:
                utterance.produced = True

    async def _produce(self, utterance: Utterance) -> None:
        rate = self._engine.sample_rate_hz
        utterance.source_rate_hz = rate
        transcript = utterance.transcript = Transcript()
        transcript.rate_hz = rate
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
            transcript.add_audio(int(pcm.size))
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

        continuation = False
        while (piece := await utterance.next_piece()) is not None:
            transcript.begin_piece(piece)
            request = dataclasses.replace(utterance.request, text=piece)
            stream = await self._synthesis.open(
                request,
                self,
                continuation=continuation,
                on_queued=functools.partial(self.queue.queued, utterance),
            )
            continuation = True
            if utterance.timings.synthesis_started_ms is None:
                utterance.timings.synthesis_started_ms = monotonic_ms()
            try:
                async for chunk in stream:
                    if utterance.timings.first_chunk_ms is None:
                        utterance.timings.first_chunk_ms = monotonic_ms()
                    utterance.source_samples += int(chunk.pcm.size)
                    transcript.begin_chunk(chunk.text)
                    pcm = chunk.pcm if stretcher is None else stretcher.process(chunk.pcm)
                    if utterance.cancelled or not await encode(pcm):
                        return
            finally:
                await stream.aclose()
            transcript.end_piece()
        if utterance.cancelled:
            return
        if stretcher is not None and not await encode(stretcher.flush()):
            return
        self._add_packets(utterance, await self._in_encoder(encoder.finish))
