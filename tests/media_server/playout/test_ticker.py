"""The shared ticker on a fake clock: slots, phases, absolute deadlines, catch-up, failures."""

from __future__ import annotations

import asyncio

import pytest

from media_server.audio.frames import FRAME_S, FRAME_SAMPLES, OutgoingFrame
from media_server.playout.pacer import MAX_CATCH_UP_FRAMES, Pacer
from media_server.playout.ticker import PHASES, Ticker
from synthesis.testing import FakeClock

SILENCE = b"\xf8\xff\xfe"


class Silent:
    def next_payload(self, pts: int) -> bytes | None:
        return None


class Recorder:
    def __init__(self, clock: FakeClock, fail_at: int | None = None) -> None:
        self.clock = clock
        self.sent: list[tuple[float, int]] = []
        self.fail_at = fail_at

    def send(self, frame: OutgoingFrame) -> None:
        if self.fail_at is not None and len(self.sent) == self.fail_at:
            raise ConnectionError("transport closed")
        self.sent.append((self.clock.now(), frame.pts))


def pacer(clock: FakeClock, fail_at: int | None = None) -> tuple[Pacer, Recorder]:
    sink = Recorder(clock, fail_at)
    return Pacer(Silent(), sink, clock, SILENCE), sink


async def spin(clock: FakeClock, ticker_task: asyncio.Task[None], until: float) -> None:
    while clock.now() < until and not ticker_task.done():
        await asyncio.sleep(0)


async def test_pacers_spread_over_phases_keep_their_own_absolute_deadlines() -> None:
    clock = FakeClock(oversleep_s=0.002)  # every wake-up 2 ms late
    ticker = Ticker(clock)
    task = asyncio.create_task(ticker.run())
    pairs = [pacer(clock) for _ in range(2 * PHASES)]
    for p, _ in pairs:
        ticker.add(p)
    assert len(ticker) == 2 * PHASES
    await spin(clock, task, clock.now() + 1.0)
    task.cancel()
    starts = sorted({p.tick_deadline(0) for p, _ in pairs})
    assert len(starts) == PHASES  # two pacers per phase, phases 5 ms apart
    assert [b - a for a, b in zip(starts, starts[1:], strict=False)] == pytest.approx(
        [FRAME_S / PHASES] * (PHASES - 1)
    )
    for p, sink in pairs:
        assert len(sink.sent) >= 45
        for n, (at, pts) in enumerate(sink.sent):
            assert pts == n * FRAME_SAMPLES  # continuous timestamps
            deadline = p.tick_deadline(0) + n * FRAME_S
            assert 0 <= at - deadline <= 0.002 + 1e-9  # late by the oversleep, never more
    # lateness is recorded per pacer, as with a task of its own
    assert all(p.stats.frames_sent == len(s.sent) for p, s in pairs)


async def test_a_stall_is_caught_up_with_the_pacers_cap() -> None:
    clock = FakeClock()
    ticker = Ticker(clock)
    task = asyncio.create_task(ticker.run())
    p, sink = pacer(clock)
    ticker.add(p)
    await spin(clock, task, clock.now() + 0.2)
    sent_before = len(sink.sent)
    clock.advance(10 * FRAME_S)  # the loop was blocked for 200 ms
    await spin(clock, task, clock.now() + 0.001)
    burst = [pts for at, pts in sink.sent[sent_before:] if at == sink.sent[sent_before][0]]
    assert len(burst) == MAX_CATCH_UP_FRAMES + 1  # capped, back to back
    assert p.stats.skipped_frames == 10 - MAX_CATCH_UP_FRAMES
    task.cancel()


async def test_a_failing_pacer_is_dropped_and_its_owner_told() -> None:
    clock = FakeClock()
    ticker = Ticker(clock)
    task = asyncio.create_task(ticker.run())
    good, good_sink = pacer(clock)
    bad, _ = pacer(clock, fail_at=3)
    ticker.add(good)
    failed = ticker.add(bad)
    await spin(clock, task, clock.now() + 0.5)
    assert failed.done() and isinstance(failed.exception(), ConnectionError)
    assert len(ticker) == 1 and len(good_sink.sent) >= 20  # the others go on
    ticker.remove(good)
    assert len(ticker) == 0
    task.cancel()


async def test_idle_ticker_sleeps_until_a_pacer_is_added() -> None:
    clock = FakeClock()
    ticker = Ticker(clock)
    task = asyncio.create_task(ticker.run())
    for _ in range(20):
        await asyncio.sleep(0)
    assert clock.sleeps == []  # no timer while nobody is registered
    p, sink = pacer(clock)
    ticker.add(p)
    await spin(clock, task, clock.now() + 0.1)
    assert sink.sent
    task.cancel()
