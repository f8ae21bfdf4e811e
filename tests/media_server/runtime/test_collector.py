"""CollectionScheduler: full collections while nobody listens, or at most once per interval."""

from __future__ import annotations

import asyncio
import gc
import weakref

from media_server.runtime.collector import NEVER, CollectionScheduler
from synthesis.testing import FakeClock


class World:
    def __init__(self) -> None:
        self.busy = False
        self.pending = 0
        self.collections = 0

    def collect(self) -> int:
        self.collections += 1
        self.pending = 0
        return 0


def make(world: World, clock: FakeClock, interval_s: float = 300.0) -> CollectionScheduler:
    return CollectionScheduler(
        lambda: world.busy,
        clock,
        interval_s,
        collect=world.collect,
        pending=lambda: world.pending,
    )


def test_collects_when_nobody_listens_and_rarely_while_someone_does() -> None:
    world, clock = World(), FakeClock()
    scheduler = make(world, clock)
    scheduler.check()
    assert world.collections == 0  # nothing promoted: nothing to walk
    world.busy, world.pending = True, 3
    for _ in range(299):
        clock.advance(1.0)
        scheduler.check()
    assert world.collections == 0  # sessions open: not before the interval
    clock.advance(1.0)
    scheduler.check()
    assert world.collections == 1  # the interval bounds what waits
    world.pending = 5
    clock.advance(10.0)
    scheduler.check()
    assert world.collections == 1
    world.busy = False  # the last listener left: collect at once
    scheduler.check()
    assert world.collections == 2
    scheduler.check()
    assert world.collections == 2  # and not again until something is promoted
    assert scheduler.collections == 2 and scheduler.longest_s >= 0


def test_a_quiet_stretch_restarts_the_interval() -> None:
    world, clock = World(), FakeClock()
    scheduler = make(world, clock)
    world.busy = True
    clock.advance(500.0)
    scheduler.check()  # nothing pending: nothing to collect, the interval starts now
    world.pending = 1
    clock.advance(100.0)
    scheduler.check()
    assert world.collections == 0


def test_install_turns_off_cpythons_full_collections_and_uninstall_restores_them() -> None:
    saved = gc.get_threshold()
    scheduler = CollectionScheduler(lambda: True, FakeClock(), 300.0)
    try:
        scheduler.install()
        young, middle, full = gc.get_threshold()
        assert (young, middle) == saved[:2] and full == NEVER
        scheduler.install()  # twice is harmless: uninstall still restores the original
        scheduler.uninstall()
        assert gc.get_threshold() == saved
    finally:
        gc.set_threshold(*saved)


def test_disabled_leaves_cpython_alone_and_runs_no_task() -> None:
    saved = gc.get_threshold()
    scheduler = CollectionScheduler(lambda: False, FakeClock(), 0.0)
    scheduler.install()
    assert gc.get_threshold() == saved
    asyncio.run(asyncio.wait_for(scheduler.run(), 1.0))  # returns at once


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


def test_real_cyclic_garbage_in_the_oldest_generation_is_collected_when_idle() -> None:
    saved = gc.get_threshold()
    world, clock = World(), FakeClock()
    scheduler = CollectionScheduler(lambda: world.busy, clock, 300.0)
    try:
        scheduler.install()
        a, b = Node(), Node()
        a.other, b.other = b, a
        gone = weakref.ref(a)
        gc.collect(1)  # survives the young collections: now in the oldest generation
        del a, b
        gc.collect(1)  # a younger collection never looks at it
        assert gone() is not None
        assert gc.get_count()[2] > 0
        world.busy = True
        scheduler.check()
        assert gone() is not None  # someone listens: it waits
        world.busy = False
        scheduler.check()
        assert gone() is None and scheduler.collections == 1
    finally:
        scheduler.uninstall()
        gc.set_threshold(*saved)
