"""PreciseClock: waits on a Linux timerfd end at (never before) their deadline."""

from __future__ import annotations

import asyncio
import os
import sys
import time

import pytest

from media_server.clock import MonotonicClock, PreciseClock

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="timerfd is Linux")


async def test_a_wait_ends_at_its_deadline_and_the_timer_is_reused() -> None:
    clock = PreciseClock()
    assert clock.precise
    for _ in range(3):
        deadline = clock.now() + 0.01
        await clock.sleep_until(deadline)
        assert time.monotonic() >= deadline  # the timer is on time.monotonic's clock
    assert clock.timers == 1  # one waiter at a time: one timer
    clock.close()
    assert clock.timers == 0


async def test_concurrent_waiters_each_get_a_timer_and_wake_in_order() -> None:
    clock = PreciseClock()
    start = clock.now()
    woke: list[int] = []

    async def wait(index: int, delay_s: float) -> None:
        await clock.sleep_until(start + delay_s)
        assert time.monotonic() >= start + delay_s
        woke.append(index)

    await asyncio.gather(wait(2, 0.03), wait(0, 0.01), wait(1, 0.02))
    assert woke == [0, 1, 2]
    assert clock.timers == 3
    clock.close()


async def test_a_cancelled_wait_gives_its_timer_back() -> None:
    clock = PreciseClock()
    sleeper = asyncio.get_running_loop().create_task(clock.sleep_until(clock.now() + 60))
    await asyncio.sleep(0.01)
    sleeper.cancel()
    with pytest.raises(asyncio.CancelledError):
        await sleeper
    deadline = clock.now() + 0.005
    await clock.sleep_until(deadline)  # the same timer, disarmed and re-armed
    assert time.monotonic() >= deadline and clock.timers == 1
    clock.close()


async def test_closing_wakes_no_one_early_and_releases_the_descriptors() -> None:
    clock = PreciseClock()
    deadline = clock.now() + 0.05
    sleeper = asyncio.get_running_loop().create_task(clock.sleep_until(deadline))
    await asyncio.sleep(0.01)
    fd_count = len(os.listdir("/proc/self/fd"))
    clock.close()
    assert len(os.listdir("/proc/self/fd")) == fd_count - 1
    await sleeper  # finished on asyncio.sleep, still not before its deadline
    assert time.monotonic() >= deadline


async def test_a_past_deadline_only_yields() -> None:
    clock = PreciseClock()
    await clock.sleep_until(clock.now() - 1.0)
    assert clock.timers == 0
    await MonotonicClock().sleep_until(0.0)
