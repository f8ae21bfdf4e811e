"""Outgoing events, typed: one shape per event on every transport (docs/protocol.md).

The data channel of a 1:1 session, a room's listeners and bots, and the ``/tts/ws``
WebSocket all send these. An event is serialised once (:meth:`Event.to_json`), so a room
broadcasting to many members encodes it once, not once per member.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from dataclasses import dataclass, field
from typing import Any, ClassVar

from synthesis.errors import ClientError


@dataclass(frozen=True, slots=True)
class Event:
    """Base: ``kind`` is the ``type`` field; None-valued optional fields are left out
    unless the subclass lists them in ``always``."""

    kind: ClassVar[str] = ""
    always: ClassVar[frozenset[str]] = frozenset()

    def as_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"type": self.kind}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is not None or f.name in self.always:
                body[f.name] = value
        return body

    def to_json(self) -> str:
        return _dumps(self.as_dict())


_dumps = functools.partial(json.dumps, separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class SpeechStarted(Event):
    """The first audio of an utterance left (paced: the first frame was sent)."""

    kind: ClassVar[str] = "speech.started"
    always: ClassVar[frozenset[str]] = frozenset({"stream_ts"})
    id: str
    stream_ts: int | None = None
    """RTP position of its first frame; null where nothing is paced (``/tts/ws``)."""
    owner: str | None = None
    server_ms: dict[str, float] | None = None
    """When each server stage first had output, in ms after the server received the
    message (``synthesis``: a synthesis slot was held; ``first_chunk``: the engine's
    first audio; ``first_packet``: its first Opus packets; ``sent``: this frame left).
    A client subtracts ``sent`` from its own say → speech.started time to see the
    network and its own side."""
    timings: dict[str, float | None] | None = None
    """Server stage times (``VMS_DEBUG_TIMINGS``): see ``UtteranceTimings``."""


@dataclass(frozen=True, slots=True)
class SpeechQueued(Event):
    """Every synthesis slot was busy: the utterance waits for one, ``position`` in line
    (1: next). ``speech.started`` follows, or an ``error`` (``engine_busy``) once it has
    waited ``VMS_SYNTHESIS_QUEUE_TIMEOUT_S``."""

    kind: ClassVar[str] = "speech.queued"
    id: str
    position: int
    owner: str | None = None


@dataclass(frozen=True, slots=True)
class SpeechDone(Event):
    """The last audio of an utterance left."""

    kind: ClassVar[str] = "speech.done"
    always: ClassVar[frozenset[str]] = frozenset({"stream_ts", "end_ts"})
    id: str
    duration_ms: int
    source_duration_ms: float
    trimmed_ms: float
    stream_ts: int | None = None
    end_ts: int | None = None
    owner: str | None = None


@dataclass(frozen=True, slots=True)
class SpeechCancelled(Event):
    """A ``cancel`` stopped it, or dropped it from the queue before it started."""

    kind: ClassVar[str] = "speech.cancelled"
    always: ClassVar[frozenset[str]] = frozenset({"stream_ts", "end_ts"})
    id: str
    played_ms: int
    stream_ts: int | None = None
    end_ts: int | None = None
    owner: str | None = None
    heard_text: str | None = None
    """The words of it that were played (paced speech only; see ``Transcript``)."""


@dataclass(frozen=True, slots=True)
class SpeechPaused(Event):
    """A caller spoke over it (barge-in): silence goes out from the next frame, and it
    resumes where it stopped or is cancelled."""

    kind: ClassVar[str] = "speech.paused"
    always: ClassVar[frozenset[str]] = frozenset({"stream_ts", "end_ts"})
    id: str
    played_ms: int
    heard_text: str
    stream_ts: int | None = None
    end_ts: int | None = None
    owner: str | None = None


@dataclass(frozen=True, slots=True)
class SpeechResumed(Event):
    """The caller's voice was too short to interrupt: it plays on from where it paused."""

    kind: ClassVar[str] = "speech.resumed"
    id: str
    played_ms: int
    owner: str | None = None


@dataclass(frozen=True, slots=True)
class BargeInSet(Event):
    """To a bot that sent ``barge_in``: the room's barge-in from now on."""

    kind: ClassVar[str] = "barge_in"
    mode: str
    min_speech_ms: int


@dataclass(frozen=True, slots=True)
class ErrorEvent(Event):
    """A message, or one utterance's synthesis, failed; the session stays up."""

    kind: ClassVar[str] = "error"
    error: str
    message: str
    solution: str
    id: str | None = None
    owner: str | None = None

    @classmethod
    def of(
        cls, exc: ClientError, utterance_id: str | None = None, owner: str | None = None
    ) -> ErrorEvent:
        return cls(exc.code, exc.message, exc.solution or "retry the request", utterance_id, owner)


@dataclass(frozen=True, slots=True)
class ParticipantJoined(Event):
    kind: ClassVar[str] = "participant.joined"
    identity: str
    role: str
    member: str | None = None
    """A caller's id in the room: what its audio frames and voice activity carry."""


@dataclass(frozen=True, slots=True)
class ParticipantLeft(Event):
    kind: ClassVar[str] = "participant.left"
    identity: str
    role: str
    member: str | None = None
    """A caller's id in the room: what its audio frames and voice activity carry."""


@dataclass(frozen=True, slots=True)
class RoomJoined(Event):
    """To a listener, once its first frame of the room's stream is sent."""

    kind: ClassVar[str] = "room.joined"
    room: str
    identity: str
    role: str
    stream_ts: int
    participants: list[dict[str, str]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class RoomReady(Event):
    """To a bot, first on its WebSocket."""

    kind: ClassVar[str] = "ready"
    room: str
    identity: str
    engine: str
    participants: list[dict[str, str]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class SocketReady(Event):
    """First on a ``/tts/ws`` socket: what its binary messages carry."""

    kind: ClassVar[str] = "ready"
    engine: str
    format: str
    sample_rate_hz: int
