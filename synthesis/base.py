"""The engine seam: a request in, PCM chunks out, cancellable."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from synthesis.request import Mode, ReferenceAudio, SynthesisRequest
from synthesis.types import AudioChunk


@dataclass(frozen=True, slots=True)
class VoiceInfo:
    """A voice an engine can speak with."""

    voice_id: str
    language: str
    sample_rate_hz: int
    cloned: bool = False


@dataclass(frozen=True, slots=True)
class EngineCapabilities:
    """What an engine can do; requests for anything else are refused, never approximated."""

    modes: frozenset[Mode]
    sample_rate_hz: int
    languages: tuple[str, ...]
    emotions: tuple[str, ...] = ()
    """Accepted ``emotion`` values; empty: the engine has no emotion control."""
    dialects: tuple[str, ...] = ()
    """Accepted ``dialect`` values; empty: no dialect control."""
    cloning: bool = False
    """Voices can be registered from a reference clip (``register_voice``)."""
    native_speed: bool = False
    """The engine applies ``speed`` itself while streaming; otherwise the server time-stretches."""
    any_thread: bool = False
    """Its ``synthesize`` generator may be resumed on another thread (it keeps no
    thread-local state across chunks), so the service can move the rest of an utterance
    off the urgent thread that made the first chunk."""

    def as_dict(self) -> dict[str, object]:
        return {
            "modes": sorted(m.value for m in self.modes),
            "sample_rate_hz": self.sample_rate_hz,
            "languages": list(self.languages),
            "emotions": list(self.emotions),
            "dialects": list(self.dialects),
            "cloning": self.cloning,
            "native_speed": self.native_speed,
        }


@runtime_checkable
class Engine(Protocol):
    """A streaming TTS engine.

    ``synthesize`` is *blocking* and is only ever called from a worker thread
    (see :class:`synthesis.stream.SynthesisStream`). It yields chunks of mono
    int16 PCM at ``capabilities.sample_rate_hz`` as soon as they exist and must
    return promptly once ``cancel`` is set: engines check it between chunks, so
    cancellation costs at most one chunk of compute. Requests reach it already
    checked against its capabilities (:func:`synthesis.capabilities.check_supported`).
    """

    @property
    def name(self) -> str: ...

    @property
    def sample_rate_hz(self) -> int: ...

    @property
    def capabilities(self) -> EngineCapabilities: ...

    @property
    def voices(self) -> tuple[VoiceInfo, ...]: ...

    def synthesize(
        self, request: SynthesisRequest, cancel: threading.Event
    ) -> Iterator[AudioChunk]: ...

    def register_voice(
        self, voice_id: str, reference: ReferenceAudio, reference_text: str | None
    ) -> VoiceInfo:
        """Add a cloned voice (blocking). Engines without cloning raise SynthesisError."""
        ...

    def close(self) -> None: ...
