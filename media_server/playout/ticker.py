"""One 20 ms clock for every 1:1 session: a single task instead of a timer per stream.

With a task per pacer, every session wakes the event loop 50 times a second on a
timer of its own. The ticker wakes once per *slot* instead: the 20 ms frame is
cut into :data:`PHASES` slots (5 ms each) and every pacer belongs to one of them,
the least crowded when it joined, so the work of one tick is spread over the frame
rather than all due at the same instant. Each pacer keeps its own absolute
deadlines, lateness record and capped catch-up (:class:`~media_server.playout.pacer.Pacer`);
the ticker only decides when to call it.
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import Final

from media_server.audio.frames import FRAME_S
from media_server.clock import Clock
from media_server.playout.pacer import Pacer

logger = logging.getLogger(__name__)

PHASES: Final = 4
"""Slots per 20 ms frame (5 ms apart)."""


class Ticker:
    """Drives many pacers from one task; :meth:`run` is owned by the session registry."""

    def __init__(self, clock: Clock, phases: int = PHASES) -> None:
        if phases < 1:
            raise ValueError("phases must be at least 1")
        self._clock = clock
        self._phases: list[dict[Pacer, asyncio.Future[None]]] = [{} for _ in range(phases)]
        self._slot_s = FRAME_S / phases
        self._origin = clock.now()
        self._next_slot = 0
        self._wakeup = asyncio.Event()

    def __len__(self) -> int:
        return sum(len(phase) for phase in self._phases)

    def add(self, pacer: Pacer) -> asyncio.Future[None]:
        """Start ``pacer`` on the next slot of the least crowded phase.

        The returned future fails with the pacer's exception if sending ever
        raises (the pacer is dropped); it never completes otherwise.
        """
        phase = min(range(len(self._phases)), key=lambda p: len(self._phases[p]))
        now = self._clock.now()
        slots = len(self._phases)
        slot = math.ceil((now - self._origin) / self._slot_s - 1e-9)
        slot += (phase - slot) % slots
        pacer.start_at(self._origin + slot * self._slot_s)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._phases[phase][pacer] = done
        self._wakeup.set()
        return done

    def remove(self, pacer: Pacer) -> None:
        for phase in self._phases:
            done = phase.pop(pacer, None)
            if done is not None and not done.done():
                done.cancel()

    async def run(self) -> None:
        """Tick until cancelled; sleeps on an event while no pacer is registered."""
        slots = len(self._phases)
        while True:
            if not len(self):
                self._wakeup.clear()
                await self._wakeup.wait()
            now = self._clock.now()
            due = math.floor((now - self._origin) / self._slot_s + 1e-9)
            if due < self._next_slot:
                await self._clock.sleep_until(self._origin + self._next_slot * self._slot_s)
                continue
            # every slot from the last one served to now (after a stall: each phase once)
            first = max(self._next_slot, due - slots + 1)
            for slot in range(first, due + 1):
                self._serve(self._phases[slot % slots], now)
            self._next_slot = due + 1

    def _serve(self, phase: dict[Pacer, asyncio.Future[None]], now: float) -> None:
        for pacer, done in list(phase.items()):
            try:
                pacer.emit_until(now)
            except Exception as exc:
                logger.exception("pacer failed; dropped from the ticker")
                phase.pop(pacer, None)
                if not done.done():
                    done.set_exception(exc)
