"""What a listening bot hears: callers' audio and voice activity, typed, in arrival order.

The wire format (docs/protocol.md, Rooms): a binary message is ``<BHQ`` (version,
participant index, 16 kHz sample position, little-endian) then 20 ms of s16le mono PCM;
``input.participant`` maps an index to the participant's id and identity. This module
knows the format on its own: a bot does not need the server's packages.
"""

from __future__ import annotations

import asyncio
import struct
from collections import deque
from dataclasses import dataclass
from typing import Any, Final

FRAME_HEADER: Final = struct.Struct("<BHQ")
FRAME_VERSION: Final = 1
FRAME_MS: Final = 20
MAX_QUEUED_AUDIO_MS: Final = 10_000
"""Audio kept for a bot that iterates :meth:`RoomBot.caller_audio` too slowly before its
oldest frames go (reported as ``CallerAudioDropped(..., server=False)``)."""


@dataclass(frozen=True, slots=True)
class CallerAudio:
    participant: str
    """The caller's room member id (``RoomBot.identities`` has its identity)."""
    position: int
    """Samples at 16 kHz since the caller's stream began; a gap means lost audio."""
    pcm: bytes
    """20 ms of 16 kHz s16le mono."""


@dataclass(frozen=True, slots=True)
class CallerSpeechStarted:
    participant: str
    position: int
    server_ms: float
    """The server's ``time.monotonic()`` in ms when it decided."""


@dataclass(frozen=True, slots=True)
class CallerSpeechStopped:
    participant: str
    position: int
    server_ms: float


@dataclass(frozen=True, slots=True)
class CallerAudioDropped:
    """Frames of this participant that were lost because the bot read too slowly."""

    participant: str
    frames: int
    ms: int
    server: bool = True
    """True: the server dropped them (the socket was read too slowly); False: this
    client did (:meth:`RoomBot.caller_audio` was iterated too slowly)."""


Heard = CallerAudio | CallerSpeechStarted | CallerSpeechStopped | CallerAudioDropped


class Hearing:
    """Turns the server's ``input.*`` messages into :data:`Heard` values and queues
    them for one reader, dropping the oldest audio past :data:`MAX_QUEUED_AUDIO_MS`."""

    def __init__(self, max_audio_ms: int = MAX_QUEUED_AUDIO_MS) -> None:
        self._max_frames = max(1, max_audio_ms // FRAME_MS)
        self._items: deque[Heard] = deque()
        self._audio_frames = 0
        self._dropped: dict[str, int] = {}
        self._ready = asyncio.Event()
        self._closed = False
        self.participants: dict[int, str] = {}
        """Index in binary frames → participant id."""
        self.identities: dict[str, str] = {}
        """Participant id → identity (from its join token)."""
        self.listening = asyncio.Event()
        """Set while the server confirms caller audio is on."""
        self.answered = asyncio.Event()
        """Set by each ``input.listening`` answer."""

    def event(self, event: dict[str, Any]) -> None:
        """An ``input.*`` event."""
        kind = event.get("type")
        if kind == "input.listening":
            if event.get("audio"):
                self.listening.set()
            else:
                self.listening.clear()
            self.answered.set()
        elif kind == "input.participant":
            self.participants[int(event["index"])] = event["participant"]
            self.identities[event["participant"]] = event["identity"]
        elif kind in ("input.speech_started", "input.speech_stopped"):
            cls = CallerSpeechStarted if kind == "input.speech_started" else CallerSpeechStopped
            self._put(cls(event["participant"], int(event["position"]), event["server_ms"]))
        elif kind == "input.audio_dropped":
            dropped = CallerAudioDropped(event["participant"], event["frames"], event["ms"])
            self._put(dropped)

    def frame(self, data: bytes) -> None:
        """A binary message; frames of an unknown version or index are ignored."""
        if len(data) < FRAME_HEADER.size:
            return
        version, index, position = FRAME_HEADER.unpack_from(data)
        participant = self.participants.get(index)
        if version != FRAME_VERSION or participant is None:
            return
        if self._audio_frames >= self._max_frames:
            self._drop_oldest_audio()
        self._audio_frames += 1
        self._put(CallerAudio(participant, position, data[FRAME_HEADER.size :]))

    def _drop_oldest_audio(self) -> None:
        for i, item in enumerate(self._items):
            if isinstance(item, CallerAudio):
                del self._items[i]
                self._audio_frames -= 1
                self._dropped[item.participant] = self._dropped.get(item.participant, 0) + 1
                return

    def _put(self, item: Heard) -> None:
        self._items.append(item)
        self._ready.set()

    def close(self) -> None:
        """The connection ended: the reader gets what is queued, then stops."""
        self._closed = True
        self._ready.set()

    async def get(self) -> Heard | None:
        """The next thing heard (a client drop report first), None once closed."""
        while True:
            if self._dropped:
                participant, frames = next(iter(self._dropped.items()))
                del self._dropped[participant]
                return CallerAudioDropped(participant, frames, frames * FRAME_MS, server=False)
            if self._items:
                item = self._items.popleft()
                if isinstance(item, CallerAudio):
                    self._audio_frames -= 1
                return item
            if self._closed:
                return None
            self._ready.clear()
            await self._ready.wait()
