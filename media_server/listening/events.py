"""What a listening bot is told besides the callers' audio itself (docs/protocol.md, Rooms).

Kept apart from :mod:`media_server.speech.events`: these describe what comes *in* from
callers, not the room's speech, and only bots that asked for caller audio get them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from media_server.speech.events import Event


@dataclass(frozen=True, slots=True)
class InputListening(Event):
    """The answer to ``input.listen``: from now on caller audio comes (or stops)."""

    kind: ClassVar[str] = "input.listening"
    audio: bool


@dataclass(frozen=True, slots=True)
class InputParticipant(Event):
    """Which participant the binary frames tagged ``index`` belong to; sent before the
    first frame or event about that participant."""

    kind: ClassVar[str] = "input.participant"
    participant: str
    identity: str
    index: int


@dataclass(frozen=True, slots=True)
class InputSpeechStarted(Event):
    kind: ClassVar[str] = "input.speech_started"
    participant: str
    position: int
    """In the caller's 16 kHz stream, as the binary frames' positions."""
    server_ms: float
    """When the server decided, ``time.monotonic()`` in ms."""


@dataclass(frozen=True, slots=True)
class InputSpeechStopped(Event):
    kind: ClassVar[str] = "input.speech_stopped"
    participant: str
    position: int
    server_ms: float


@dataclass(frozen=True, slots=True)
class InputAudioDropped(Event):
    """The bot read too slowly: this many of the participant's oldest frames were
    dropped since the last such event (coalesced, at most one a second)."""

    kind: ClassVar[str] = "input.audio_dropped"
    participant: str
    frames: int
    ms: int
