"""The engine seam: text in, PCM chunks out, cancellable."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from synthesis.types import AudioChunk


class SynthesisError(Exception):
    """An engine could not synthesise a request."""

    def __init__(self, message: str, solution: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.solution = solution


@dataclass(frozen=True, slots=True)
class VoiceInfo:
    """A voice an engine can speak with."""

    voice_id: str
    language: str
    sample_rate_hz: int


@runtime_checkable
class Engine(Protocol):
    """A streaming TTS engine.

    ``synthesize`` is *blocking* and is only ever called from a worker thread
    (see :class:`synthesis.stream.SynthesisStream`). It yields chunks as soon as
    they exist and must return promptly once ``cancel`` is set: engines check it
    between chunks, so cancellation costs at most one chunk of compute.
    """

    @property
    def name(self) -> str: ...

    @property
    def sample_rate_hz(self) -> int: ...

    @property
    def voices(self) -> tuple[VoiceInfo, ...]: ...

    def synthesize(
        self, text: str, voice_id: str | None, cancel: threading.Event
    ) -> Iterator[AudioChunk]: ...

    def close(self) -> None: ...
