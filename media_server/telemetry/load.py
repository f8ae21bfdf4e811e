"""Gauges read at scrape time: how loaded the server is right now.

Nothing on the media path updates a gauge; a scrape asks the server for one
:class:`LoadSnapshot` and turns it into metric families, so an idle scrape costs the
media path nothing and the figures cannot drift from the server's own state.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from media_server.telemetry.metrics import NAMESPACE


@dataclass(frozen=True, slots=True)
class LoadSnapshot:
    sessions: int
    max_sessions: int
    rooms: int
    room_participants: Mapping[str, int] = field(default_factory=dict)
    """Members by role (``listener``, ``speaker``, ``bot``)."""
    speaking_streams: int = 0
    synthesis_slots: int = 0
    synthesis_slots_busy: int = 0
    synthesis_queued: int = 0
    encode_load_cores: float = 0.0
    encode_budget_cores: float = 0.0
    opus_complexity: int = 0
    draining: bool = False
    callers_speaking: int = 0
    """Callers whose voice is on now (the server's VAD)."""


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"{NAMESPACE}_{name}", doc, value=value)


class LoadCollector(Collector):
    """Yields the gauges of one :class:`LoadSnapshot` per scrape."""

    def __init__(self, snapshot: Callable[[], LoadSnapshot]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[GaugeMetricFamily]:
        s = self._snapshot()
        yield _gauge("sessions", "1:1 sessions open.", s.sessions)
        yield _gauge("sessions_max", "The 1:1 session limit (VMS_MAX_SESSIONS).", s.max_sessions)
        yield _gauge("rooms", "Rooms open.", s.rooms)
        participants = GaugeMetricFamily(
            f"{NAMESPACE}_room_participants", "Room members, by role.", labels=["role"]
        )
        for role, count in sorted(s.room_participants.items()):
            participants.add_metric([role], count)
        yield participants
        yield _gauge(
            "speaking_streams", "Streams encoding speech now (1:1 and rooms).", s.speaking_streams
        )
        yield _gauge("synthesis_slots", "Synthesis requests the engine may run at once.",
                     s.synthesis_slots)  # fmt: skip
        yield _gauge("synthesis_slots_busy", "Synthesis slots held now.", s.synthesis_slots_busy)
        yield _gauge("synthesis_queued", "Live requests waiting for a synthesis slot.",
                     s.synthesis_queued)  # fmt: skip
        yield _gauge("opus_encode_load_cores", "Opus encoding load, in CPU cores (smoothed).",
                     s.encode_load_cores)  # fmt: skip
        yield _gauge("opus_encode_budget_cores", "Cores encoding may use before complexity drops.",
                     s.encode_budget_cores)  # fmt: skip
        yield _gauge("opus_complexity", "The Opus complexity every stream encodes at now.",
                     s.opus_complexity)  # fmt: skip
        yield _gauge("draining", "1 while the server drains before stopping.", int(s.draining))
        yield _gauge("callers_speaking", "Room callers speaking now (the server's VAD).",
                     s.callers_speaking)  # fmt: skip
