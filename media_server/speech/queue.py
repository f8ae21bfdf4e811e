"""The utterance queue: what one stream is asked to say, in order, and what was heard.

Both sinks use it: the paced RTP stream of a session or room
(:class:`~media_server.speech.paced.PacedSpeech`) and the unpaced ``/tts/ws`` socket. It
is the one place that queues ``say`` and streamed text, gives ids, finds the open
streamed utterance, cancels, and reports what was played as typed events.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Final

from media_server.audio.frames import FRAME_MS
from media_server.log_context import current_log_ids
from media_server.speech.events import (
    ErrorEvent,
    Event,
    SpeechCancelled,
    SpeechDone,
    SpeechQueued,
    SpeechStarted,
)
from media_server.speech.meter import UtteranceMeter
from media_server.speech.transcript import Transcript
from synthesis import ClientError, SynthesisRequest
from synthesis.text import TextAccumulator

logger = logging.getLogger(__name__)

START_FRAMES: Final = 3
"""A paced utterance starts playing once this many frames are encoded (or all of it is,
or its producer is waiting for streamed text). The next slice then has 60 ms to arrive
instead of 20, so a busy machine does not open speech with a gap."""

EventSink = Callable[[Event], None]


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
    """Its first piece of text held a synthesis slot (after any wait for one)."""
    first_chunk_ms: float | None = None
    """The engine's first audio chunk reached the event loop."""
    first_packets_ms: float | None = None
    """Its first Opus packets were queued for playout."""
    first_sent_ms: float | None = None
    """The pacer took its first packet (``speech.started`` is sent right then)."""

    def since_received(self) -> dict[str, float] | None:
        """The stages in ms after :attr:`received_ms` (``speech.started``'s ``server_ms``)."""
        if self.received_ms is None:
            return None
        stages = {
            "synthesis": self.synthesis_started_ms,
            "first_chunk": self.first_chunk_ms,
            "first_packet": self.first_packets_ms,
            "sent": self.first_sent_ms,
        }
        return {
            name: round(at - self.received_ms, 1) for name, at in stages.items() if at is not None
        }

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
    """Encoded frames not yet played (paced sink)."""
    produced: bool = False
    """Synthesis and encoding finished (or failed): no more audio will come."""
    cancelled: bool = False
    failed: bool = False
    """Synthesis failed; an ``error`` event was sent. Its played part still ends with done."""
    frames_played: int = 0
    sent_samples: int = 0
    """Engine samples sent (unpaced sink), for ``played_ms`` where no frames are counted."""
    first_pts: int | None = None
    end_pts: int | None = None
    """Stream position just after the last speech frame sent (``end_ts`` in events)."""
    started: bool = False
    waiting_for_text: bool = False
    """The producer has spoken every piece and waits for more streamed text."""
    source_samples: int = 0
    """Samples the engine produced (trimmed lead-in included)."""
    trimmed_samples: int = 0
    """Near-silence cut from the start, so speech starts sooner."""
    source_rate_hz: int = 0
    timings: UtteranceTimings = field(default_factory=UtteranceTimings)
    transcript: Transcript | None = None
    """Its text lined up with its audio (paced sink), for ``heard_text``."""

    @property
    def played_ms(self) -> int:
        if self.frames_played or not self.source_rate_hz:
            return self.frames_played * FRAME_MS
        return round(1000 * self.sent_samples / self.source_rate_hz)

    @property
    def heard_text(self) -> str | None:
        """The words of it played so far (None: not started, or no transcript kept)."""
        if self.transcript is None or not self.started:
            return None
        return self.transcript.heard(self.played_ms)

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

    async def next_piece(self) -> str | None:
        """The next piece of text, waiting for streamed text; None when there is no more
        (the text is closed, or the utterance was cancelled)."""
        while not self.cancelled:
            if self.pieces:
                return self.pieces.popleft()
            if self.text_closed:
                return None
            self.text_arrived.clear()
            self.waiting_for_text = True
            try:
                await self.text_arrived.wait()
            finally:
                self.waiting_for_text = False
        return None


def _drop_event(event: Event) -> None:
    """Where a closed queue's events go."""


class UtteranceQueue:
    """Utterances of one stream: control from the event loop, a cursor for the sink.

    ``on_cancelled`` lets the sink stop what it was doing for the utterances a
    ``cancel`` removed (drop encoded frames, stop a send); ``on_speaking`` is told when
    the queue turns non-empty or empty. ``meter`` is observed with each
    ``speech.started``, ``speech.done`` and ``speech.cancelled`` (not for a closed stream's
    silent drop).
    """

    def __init__(
        self,
        on_event: EventSink,
        *,
        max_queued: int = 16,
        debug_timings: bool = False,
        on_cancelled: Callable[[list[Utterance]], None] | None = None,
        on_speaking: Callable[[bool], None] | None = None,
        meter: UtteranceMeter | None = None,
    ) -> None:
        self._on_event = on_event
        self._meter = meter
        self.max_queued = max_queued
        self._debug_timings = debug_timings
        """``speech.started`` carries the utterance's :class:`UtteranceTimings`."""
        self._on_cancelled = on_cancelled
        self._on_speaking = on_speaking
        self._queue: deque[Utterance] = deque()
        self._to_produce: deque[Utterance] = deque()
        self._wakeup = asyncio.Event()
        self._next_id = 0
        self._speaking = False
        self._log_ids = current_log_ids()
        """Ids of the session or room that made it: its cursor runs in the shared ticker."""

    def __iter__(self) -> Iterator[Utterance]:
        return iter(self._queue)

    @property
    def pending(self) -> int:
        return len(self._queue)

    @property
    def speaking(self) -> bool:
        return bool(self._queue)

    @property
    def head(self) -> Utterance | None:
        return self._queue[0] if self._queue else None

    def _changed(self) -> None:
        speaking = bool(self._queue)
        if speaking != self._speaking:
            self._speaking = speaking
            if self._on_speaking is not None:
                self._on_speaking(speaking)

    # -- control --------------------------------------------------------------------

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
        self._changed()
        self._wakeup.set()
        return utterance

    def say(
        self, request: SynthesisRequest, utterance_id: str | None = None, owner: str | None = None
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

        Complete clauses are synthesised as soon as they exist, in order; the rest waits
        for more text or :meth:`text_done`.
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

        With ``everyone=False`` only ``owner``'s utterances go (a bot's barge-in leaves
        other bots' speech alone). Each gets a ``speech.cancelled`` event; the sink is
        told through ``on_cancelled``.
        """
        cancelled = [u for u in self._queue if everyone or u.owner == owner]
        for utterance in cancelled:
            self._queue.remove(utterance)
            if utterance in self._to_produce:
                self._to_produce.remove(utterance)
            utterance.cancelled = True
            utterance.text_arrived.set()
        self._changed()
        meter = self._meter
        for utterance in cancelled:
            if meter is not None:
                meter.cancelled.inc()
                meter.cancelled_played.observe(utterance.played_ms / 1000)
            self._log(utterance, "cancelled")
            self._on_event(
                SpeechCancelled(
                    utterance.utterance_id,
                    utterance.played_ms,
                    utterance.first_pts,
                    utterance.end_pts,
                    utterance.owner,
                    utterance.heard_text,
                )
            )
        if cancelled and self._on_cancelled is not None:
            self._on_cancelled(cancelled)
        self._wakeup.set()
        return cancelled

    def emit(self, event: Event) -> None:
        """Tell the stream's owner (nobody once closed)."""
        self._on_event(event)

    def close(self) -> None:
        """Drop everything silently: a closed stream tells nobody (and holds no owner)."""
        self._on_event = _drop_event
        self._meter = None
        for utterance in self._queue:
            utterance.cancelled = True
            utterance.text_arrived.set()
        self._queue.clear()
        self._to_produce.clear()
        self._changed()
        # the hooks are the sink's bound methods: dropped, so no cycle outlives the close
        self._on_cancelled = self._on_speaking = None

    def _log(self, utterance: Utterance, what: str) -> None:
        """``utterance.started`` / ``done`` / ``cancelled`` at DEBUG: one line each per
        utterance is more than an operator needs at INFO on a busy server (the client
        gets them as events; session and room lines show who was there)."""
        logger.debug(
            "utterance %s %s (%d ms played)",
            utterance.utterance_id,
            what,
            utterance.played_ms,
            extra={
                **self._log_ids,
                "event": f"utterance.{what}",
                "utterance": utterance.utterance_id,
                "played_ms": utterance.played_ms,
                **({} if utterance.owner is None else {"owner": utterance.owner}),
            },
        )

    # -- producer side ----------------------------------------------------------------

    async def next_to_produce(self) -> Utterance:
        """The next utterance to synthesise, in order, waiting for one."""
        while not self._to_produce:
            self._wakeup.clear()
            await self._wakeup.wait()
        return self._to_produce.popleft()

    def queued(self, utterance: Utterance, position: int) -> None:
        """Its synthesis waits for a slot, ``position`` in line: ``speech.queued``."""
        if not utterance.cancelled:
            self._on_event(SpeechQueued(utterance.utterance_id, position, utterance.owner))

    def failed(self, utterance: Utterance, exc: ClientError) -> None:
        """Synthesis of ``utterance`` failed: an ``error`` event unless it was cancelled."""
        utterance.failed = True
        if not utterance.cancelled:
            self._on_event(ErrorEvent.of(exc, utterance.utterance_id, utterance.owner))

    # -- playout cursor ---------------------------------------------------------------

    def started(self, utterance: Utterance, stream_ts: int | None = None) -> None:
        """Its first audio left: ``speech.started``."""
        utterance.started = True
        utterance.first_pts = stream_ts
        sent_ms = utterance.timings.first_sent_ms = monotonic_ms()
        timings = utterance.timings
        meter = self._meter
        if meter is not None:
            meter.started.inc()
            if meter.first_rtp is not None and timings.received_ms is not None:
                meter.first_rtp.observe((sent_ms - timings.received_ms) / 1000)
        self._log(utterance, "started")
        self._on_event(
            SpeechStarted(
                utterance.utterance_id,
                stream_ts,
                utterance.owner,
                timings.since_received(),
                timings.as_dict() if self._debug_timings else None,
            )
        )

    def finished(self, utterance: Utterance) -> None:
        """Its last audio left (or it failed): it leaves the queue, with ``speech.done``
        unless it failed before anything was heard (the error event ended it)."""
        if utterance in self._queue:
            self._queue.remove(utterance)
            self._changed()
        if utterance.failed and not utterance.started:
            return
        if self._meter is not None:
            self._meter.done.inc()
        self._log(utterance, "done")
        self._on_event(
            SpeechDone(
                utterance.utterance_id,
                utterance.played_ms,
                round(utterance.source_ms, 1),
                round(utterance.trimmed_ms, 1),
                utterance.first_pts,
                utterance.end_pts,
                utterance.owner,
            )
        )
