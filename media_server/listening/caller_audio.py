"""What a caller's stream hands on: 20 ms of 16 kHz mono PCM at a time, and when the
caller starts and stops speaking. The one seam between the inbound media path (rtc,
decode, resample, VAD) and whoever listens (a bot's WebSocket, the room's barge-in)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Protocol

INPUT_RATE_HZ: Final = 16_000
"""What recognisers and VADs take; callers' 48 kHz Opus is resampled to it."""
INPUT_FRAME_MS: Final = 20
INPUT_FRAME_SAMPLES: Final = INPUT_RATE_HZ * INPUT_FRAME_MS // 1000


@dataclass(frozen=True, slots=True)
class CallerFrame:
    participant: str
    """The caller's room member id (its identity is in the room's roster)."""
    position: int
    """Samples at 16 kHz since this caller's stream began (the first sample of ``pcm``);
    a gap (lost or late packets) advances it without frames."""
    pcm: bytes
    """:data:`INPUT_FRAME_SAMPLES` samples, s16le mono."""


@dataclass(frozen=True, slots=True)
class VoiceActivity:
    participant: str
    speaking: bool
    """True: speech started (``input.speech_started``); False: it stopped."""
    position: int
    """Where in the caller's stream (16 kHz samples) the speech started or stopped."""
    server_ms: float
    """When the server decided, on ``time.monotonic()`` in ms (comparable to events'
    ``server_ms`` stages)."""


class CallerAudioSink(Protocol):
    """Told each frame and each voice activity change of every caller in a room, on the
    event loop, in order. Must not block: a slow consumer queues and drops, never stalls."""

    def caller_frame(self, frame: CallerFrame) -> None: ...

    def voice_activity(self, activity: VoiceActivity) -> None: ...
