"""HeapTrimmer: trims once per busy period, only after the server has been idle."""

from __future__ import annotations

import asyncio
import platform

import pytest

from media_server.runtime.heap import HeapTrimmer, glibc_malloc_trim, rss_bytes
from synthesis.testing import FakeClock


class World:
    def __init__(self) -> None:
        self.busy = False
        self.trims = 0

    def trim(self) -> int:
        self.trims += 1
        return 1


async def test_trims_once_after_a_busy_period_and_only_when_idle_long_enough() -> None:
    world, clock = World(), FakeClock()
    readings = iter([120 * 2**20, 100 * 2**20])
    trimmer = HeapTrimmer(
        lambda: world.busy, clock, idle_s=2.0, trim=world.trim, rss=lambda: next(readings)
    )
    await trimmer.check()
    assert world.trims == 0  # idle since start-up: nothing was freed
    world.busy = True
    await trimmer.check()
    clock.advance(10)
    await trimmer.check()
    assert world.trims == 0  # never while sessions are open
    world.busy = False
    await trimmer.check()
    clock.advance(1.0)
    await trimmer.check()
    assert world.trims == 0  # idle, but not for 2 s yet
    clock.advance(1.0)
    await trimmer.check()
    assert world.trims == 1 and trimmer.trims == 1
    assert trimmer.freed_bytes == 20 * 2**20
    clock.advance(60)
    await trimmer.check()
    assert world.trims == 1  # once per busy period


async def test_a_session_in_the_idle_grace_restarts_it() -> None:
    world, clock = World(), FakeClock()
    trimmer = HeapTrimmer(lambda: world.busy, clock, idle_s=2.0, trim=world.trim, rss=lambda: 0)
    world.busy = True
    await trimmer.check()
    world.busy = False
    await trimmer.check()
    clock.advance(1.5)
    world.busy = True
    await trimmer.check()
    world.busy = False
    clock.advance(0.5)
    await trimmer.check()
    clock.advance(1.5)
    await trimmer.check()
    assert world.trims == 0
    clock.advance(0.5)
    await trimmer.check()
    assert world.trims == 1


async def test_without_malloc_trim_nothing_runs() -> None:
    clock, busy = FakeClock(), [True]
    trimmer = HeapTrimmer(lambda: busy[0], clock, idle_s=1.0, trim=None)
    assert not trimmer.available
    await trimmer.check()
    busy[0] = False
    clock.advance(5)
    await trimmer.check()
    assert trimmer.trims == 0
    await asyncio.wait_for(trimmer.run(), 1.0)  # no task left polling for nothing


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")
def test_glibc_trim_is_found_and_runs() -> None:
    trim = glibc_malloc_trim()
    assert trim is not None
    assert trim() in (0, 1)
    assert rss_bytes() > 0
