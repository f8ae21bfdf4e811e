"""The 20 ms clock, on a fake clock: deadlines, catch-up cap, idle silence, immediate start."""

from __future__ import annotations

import asyncio
from collections import deque

import pytest

from media_server.audio.frames import FRAME_S, FRAME_SAMPLES, OutgoingFrame
from media_server.playout.pacer import MAX_CATCH_UP_FRAMES, Pacer
from synthesis.testing import FakeClock

SILENCE = b"\xf8\xff\xfe"


class QueueSource:
    def __init__(self) -> None:
        self.packets: deque[bytes] = deque()

    def next_payload(self, pts: int) -> bytes | None:
        return self.packets.popleft() if self.packets else None


class RecordingSink:
    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.sent: list[tuple[float, OutgoingFrame]] = []

    def send(self, frame: OutgoingFrame) -> None:
        self.sent.append((self.clock.now(), frame))


def make(clock: FakeClock) -> tuple[Pacer, QueueSource, RecordingSink]:
    source, sink = QueueSource(), RecordingSink(clock)
    return Pacer(source, sink, clock, SILENCE), source, sink


async def run_for(pacer: Pacer, clock: FakeClock, seconds: float) -> None:
    end = clock.now() + seconds
    task = asyncio.create_task(pacer.run())
    while clock.now() < end:
        await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_deadlines_are_absolute_so_late_wakeups_do_not_accumulate() -> None:
    clock = FakeClock(oversleep_s=0.004)  # every wake-up 4 ms late
    pacer, _, sink = make(clock)
    start = clock.now()
    await run_for(pacer, clock, 2.0)
    deadlines = clock.sleeps
    assert len(deadlines) >= 90
    for n, deadline in enumerate(deadlines, start=1):
        assert deadline == pytest.approx(start + n * FRAME_S)
    # frames go out 4 ms late, never more: the error does not grow over 100 frames
    lateness = [t - (start + i * FRAME_S) for i, (t, _) in enumerate(sink.sent)]
    assert max(lateness) == pytest.approx(0.004)
    assert pacer.stats.snapshot().lateness_p99_ms == pytest.approx(4.0)


async def test_idle_sends_silence_with_continuous_timestamps() -> None:
    clock = FakeClock()
    pacer, _, sink = make(clock)
    await run_for(pacer, clock, 1.0)
    frames = [f for _, f in sink.sent]
    assert len(frames) >= 50
    assert all(f.payload == SILENCE and not f.speech for f in frames)
    assert [f.pts for f in frames] == [i * FRAME_SAMPLES for i in range(len(frames))]
    assert pacer.stats.speech_frames_sent == 0


async def test_speech_starts_on_the_next_tick_after_idle() -> None:
    clock = FakeClock()
    pacer, source, sink = make(clock)
    for _ in range(5):  # idle for 100 ms
        pacer.emit_due()
        clock.t = pacer.tick_deadline(len(sink.sent))
    clock.advance(0.007)  # speech arrives 7 ms into a tick
    source.packets.extend([b"speech1", b"speech2"])
    next_deadline = pacer.tick_deadline(len(sink.sent))
    clock.t = next_deadline
    pacer.emit_due()
    sent_at, frame = sink.sent[-1]
    assert frame.payload == b"speech1" and frame.speech
    assert sent_at == next_deadline  # the very next tick, no extra idle tick waited out
    assert frame.pts == 5 * FRAME_SAMPLES


async def test_stall_catch_up_is_capped_and_timestamps_track_the_clock() -> None:
    clock = FakeClock()
    pacer, source, sink = make(clock)
    source.packets.extend(bytes([i]) for i in range(200))
    pacer.emit_due()  # tick 0 at t0
    t0 = sink.sent[0][0]
    clock.advance(0.5)  # the loop stalls for 500 ms (25 ticks)
    task = asyncio.create_task(pacer.run())
    for _ in range(10):
        await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    burst = [f for t, f in sink.sent[1:] if t == pytest.approx(t0 + 0.5)]
    # at most MAX_CATCH_UP_FRAMES overdue frames plus the one due now go out at once
    assert len(burst) == MAX_CATCH_UP_FRAMES + 1
    # ticks 1..24 were overdue at t0 + 500 ms: 3 of them are sent, 21 are skipped
    assert pacer.stats.skipped_frames == 24 - MAX_CATCH_UP_FRAMES
    # no speech is lost, it is delayed; timestamps jump over the skipped ticks
    assert [f.payload for _, f in sink.sent[:5]] == [bytes([i]) for i in range(5)]
    pts = [f.pts for _, f in sink.sent]
    assert pts[1] == (1 + pacer.stats.skipped_frames) * FRAME_SAMPLES
    # after the burst the pacer is back on a 20 ms grid, in step with the clock
    later = [t for t, _ in sink.sent[len(burst) + 1 :]]
    assert all(b - a == pytest.approx(FRAME_S) for a, b in zip(later, later[1:], strict=False))
    assert pacer.stats.max_lateness_s == pytest.approx(MAX_CATCH_UP_FRAMES * FRAME_S)
