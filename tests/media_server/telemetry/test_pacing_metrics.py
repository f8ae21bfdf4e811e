"""The pacer's metrics on a fake clock: lateness per frame, skipped ticks, catch-up frames."""

from __future__ import annotations

import pytest

from media_server.audio.frames import FRAME_S, OutgoingFrame
from media_server.playout.pacer import MAX_CATCH_UP_FRAMES, Pacer
from media_server.telemetry.metrics import ServerMetrics
from synthesis.testing import FakeClock

SILENCE = b"\xf8\xff\xfe"


class Idle:
    def next_payload(self, pts: int) -> bytes | None:
        return None


class Sink:
    def __init__(self) -> None:
        self.frames: list[OutgoingFrame] = []

    def send(self, frame: OutgoingFrame) -> None:
        self.frames.append(frame)


def value(metrics: ServerMetrics, name: str) -> float:
    found = metrics.registry.get_sample_value(name)
    return 0.0 if found is None else found


def test_a_stall_counts_skipped_ticks_and_catch_up_frames() -> None:
    metrics, clock, sink = ServerMetrics(), FakeClock(), Sink()
    pacer = Pacer(Idle(), sink, clock, SILENCE, metrics=metrics)
    pacer.start_at(clock.now())
    pacer.emit_until(clock.now())  # tick 0, on time
    clock.advance(FRAME_S + 0.002)
    pacer.emit_until(clock.now())  # tick 1, 2 ms late
    assert value(metrics, "vms_frame_send_lateness_seconds_count") == 2
    assert value(metrics, "vms_frame_send_lateness_seconds_sum") == pytest.approx(0.002)
    assert value(metrics, "vms_pacer_catch_up_frames_total") == 0
    # a 500 ms stall: ticks 2..26 are due; 3 overdue frames catch up, 21 ticks are skipped
    clock.advance(0.5)
    pacer.emit_until(clock.now())
    skipped = value(metrics, "vms_pacer_skipped_ticks_total")
    assert skipped == pacer.stats.skipped_frames > 0
    assert value(metrics, "vms_pacer_catch_up_frames_total") == MAX_CATCH_UP_FRAMES
    assert value(metrics, "vms_frame_send_lateness_seconds_count") == len(sink.frames)
    assert len(sink.frames) == 2 + MAX_CATCH_UP_FRAMES + 1
