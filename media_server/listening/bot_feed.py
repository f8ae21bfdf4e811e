"""A bot's outgoing queue: the room's events, never dropped, and callers' audio, bounded.

A bot that reads slowly must never make the room wait: audio beyond
:data:`MAX_QUEUED_AUDIO_MS` drops its oldest frames (a recogniser wants the newest
audio; stale audio only adds delay) and the bot is told how much it lost. Events are
few and each one matters (a missed ``speech.done`` or ``input.speech_stopped`` breaks a
bot's turn-taking), so they are never dropped. Both leave in the order they happened,
so a participant's ``input.participant`` always precedes its first frame.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import struct
from collections import deque
from collections.abc import Callable
from typing import Any, Final

from media_server.clock import Clock
from media_server.listening.caller_audio import (
    INPUT_FRAME_MS,
    CallerFrame,
    VoiceActivity,
)
from media_server.listening.events import (
    InputAudioDropped,
    InputParticipant,
    InputSpeechStarted,
    InputSpeechStopped,
)
from media_server.telemetry.metrics import ServerMetrics
from synthesis.errors import InvalidRequest

logger = logging.getLogger(__name__)

FRAME_HEADER: Final = struct.Struct("<BHQ")
"""Before each binary frame's PCM: version, participant index, 16 kHz sample position."""
FRAME_VERSION: Final = 1
MAX_PARTICIPANT_INDEX: Final = 0xFFFF
MAX_QUEUED_AUDIO_MS: Final = 2_000
"""Caller audio waiting for one bot, all participants together, before the oldest goes."""
DROP_REPORT_INTERVAL_S: Final = 1.0
LISTEN_TYPE: Final = "input.listen"

Outgoing = str | bytes
"""A JSON event (a text message) or a caller's audio frame (a binary message)."""


def listen_request(data: dict[str, Any]) -> bool:
    """Whether an ``input.listen`` message turns caller audio on; raises
    :class:`~synthesis.errors.InvalidRequest` for any other shape."""
    extra = sorted(set(data) - {"type", "audio"})
    if extra:
        raise InvalidRequest(
            "invalid_request",
            f"{extra[0]!r}: unknown field of 'input.listen'",
            'send {"type": "input.listen", "audio": true} (or false)',
        )
    audio = data.get("audio")
    if not isinstance(audio, bool):
        raise InvalidRequest(
            "invalid_request",
            "'audio': must be true or false",
            'send {"type": "input.listen", "audio": true} (or false)',
        )
    return audio


class BotFeed:
    """What one bot's WebSocket writer sends next; the bot's :class:`CallerAudioSink`
    (:mod:`media_server.listening.caller_audio`) while it listens.

    Every call but :meth:`next` is synchronous and constant-time, so the room fanning
    out a caller's frame to many bots never waits on any of them.
    """

    def __init__(
        self,
        clock: Clock,
        identity_of: Callable[[str], str],
        *,
        max_audio_ms: int = MAX_QUEUED_AUDIO_MS,
        drop_report_interval_s: float = DROP_REPORT_INTERVAL_S,
        metrics: ServerMetrics | None = None,
    ) -> None:
        self._metrics = metrics
        self._clock = clock
        self._identity_of = identity_of
        self._max_frames = max(1, max_audio_ms // INPUT_FRAME_MS)
        self._report_interval_s = drop_report_interval_s
        self._seq = itertools.count()
        self._events: deque[tuple[int, str]] = deque()
        self._audio: deque[tuple[int, str, bytes]] = deque()
        self._ready = asyncio.Event()
        self._indices: dict[str, int] = {}
        self._next_index = 0
        self._unreported: dict[str, int] = {}
        self._last_report = -math.inf
        self.listening = False
        self.dropped_frames = 0
        """Audio frames dropped over this bot's whole connection."""

    @property
    def queued_frames(self) -> int:
        return len(self._audio)

    # -- in -------------------------------------------------------------------------

    def send_text(self, text: str) -> None:
        """An event, already serialised; never dropped."""
        self._events.append((next(self._seq), text))
        self._ready.set()

    def set_listening(self, listening: bool) -> None:
        """Caller audio on or off; off drops what is queued (the bot asked for that)."""
        self.listening = listening
        if not listening:
            self._audio.clear()

    def caller_frame(self, frame: CallerFrame) -> None:
        if not self.listening:
            return
        index = self._index(frame.participant)
        if len(self._audio) >= self._max_frames:
            _, dropped, _ = self._audio.popleft()
            self._dropped(dropped)
        header = FRAME_HEADER.pack(FRAME_VERSION, index, frame.position)
        self._audio.append((next(self._seq), frame.participant, header + frame.pcm))
        self._ready.set()

    def voice_activity(self, activity: VoiceActivity) -> None:
        if not self.listening:
            return
        self._index(activity.participant)
        kind = InputSpeechStarted if activity.speaking else InputSpeechStopped
        server_ms = round(activity.server_ms, 1)
        self.send_text(kind(activity.participant, activity.position, server_ms).to_json())

    def _index(self, participant: str) -> int:
        """The participant's index in this bot's frames, announced the first time.

        Indices are never reused while the connection lasts, so a bot may keep state by
        index; past 65 536 participants they wrap, re-announced first."""
        index = self._indices.get(participant)
        if index is None:
            index = self._indices[participant] = self._next_index
            self._next_index = (self._next_index + 1) & MAX_PARTICIPANT_INDEX
            identity = self._identity_of(participant)
            self.send_text(InputParticipant(participant, identity, index).to_json())
        return index

    def _dropped(self, participant: str) -> None:
        self.dropped_frames += 1
        if self._metrics is not None:
            self._metrics.caller_audio_dropped.inc()
        self._unreported[participant] = self._unreported.get(participant, 0) + 1
        self._report_drops()

    def _report_drops(self, *, now: bool = False) -> None:
        """``input.audio_dropped`` per participant, at most once per interval unless
        ``now``."""
        if not self._unreported:
            return
        at = self._clock.now()
        if not now and at - self._last_report < self._report_interval_s:
            return
        self._last_report = at
        for participant, frames in self._unreported.items():
            event = InputAudioDropped(participant, frames, frames * INPUT_FRAME_MS)
            self.send_text(event.to_json())
        logger.debug("bot feed dropped %s", self._unreported)
        self._unreported.clear()

    # -- out ------------------------------------------------------------------------

    def pop(self) -> Outgoing | None:
        """The oldest thing queued, or None."""
        self._report_drops()
        if self._events and (not self._audio or self._events[0][0] < self._audio[0][0]):
            return self._events.popleft()[1]
        if self._audio:
            return self._audio.popleft()[2]
        return None

    async def next(self) -> Outgoing:
        """Waits for the next thing to send (a drop report falls due even with nothing
        else to send)."""
        while (item := self.pop()) is None:
            self._ready.clear()
            if not self._unreported:
                await self._ready.wait()
                continue
            due_s = self._last_report + self._report_interval_s - self._clock.now()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ready.wait(), max(due_s, 0.0))
        return item

    def pending_events(self) -> list[str]:
        """Every event still queued, a last drop report included; the audio is
        discarded. For the goodbye to a bot that is being cut off."""
        self._report_drops(now=True)
        self._audio.clear()
        events = [text for _, text in self._events]
        self._events.clear()
        return events
