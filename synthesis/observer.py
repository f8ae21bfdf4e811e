"""The seam through which a synthesis stream reports what its engine did, once, when it ends.

This package never imports ``media_server``: the server implements
:class:`SynthesisObserver` (its metrics) and hands it to the
:class:`~synthesis.service.SynthesisService`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from synthesis.request import Mode


class SynthesisOutcome(StrEnum):
    """How a stream's synthesis ended."""

    DONE = "done"
    """The engine produced its last chunk."""
    CANCELLED = "cancelled"
    """The reader closed the stream before the end (a client left, an utterance was cut)."""
    FAILED = "failed"
    """The engine raised, or produced nothing for the chunk timeout."""


@dataclass(frozen=True, slots=True)
class SynthesisReport:
    """What one stream's engine did: the figures behind the engine's latency and RTF."""

    engine: str
    mode: Mode
    first_chunk_s: float | None
    """From the worker thread calling the engine (a slot held) to its first chunk;
    None: it produced none."""
    compute_s: float
    """Seconds spent inside the engine's own calls: waiting for the reader, or for a
    slot while the stream was parked, is not counted."""
    audio_s: float
    """Seconds of audio the engine produced."""
    outcome: SynthesisOutcome

    @property
    def real_time_factor(self) -> float | None:
        """Compute seconds per audio second; None without audio."""
        return self.compute_s / self.audio_s if self.audio_s > 0 else None


class SynthesisObserver(Protocol):
    """Told of every stream that ran, on the event loop, once its worker let go for good;
    and of every live request refused after waiting for a slot."""

    def synthesised(self, report: SynthesisReport) -> None: ...

    def refused(self, engine: str, code: str) -> None:
        """A live request (a session's or room's utterance) waited its queue timeout
        and was refused with ``code``: its client hears of it only as an ``error``
        event, never through HTTP, so this is where it is counted. HTTP callers'
        refusals are raised at once and counted where they are answered."""
        ...
