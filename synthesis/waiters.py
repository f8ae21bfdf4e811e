"""Live requests that found every synthesis slot busy wait here, fairly, for one."""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field


@dataclass(eq=False)
class Waiter:
    owner: object
    """Who asked (a session's or room's stream): owners take turns."""
    continuation: bool
    """A later piece of an utterance already speaking; first pieces go before it."""
    seq: int
    granted: asyncio.Future[None] = field(default_factory=asyncio.Future)


class WaitQueue:
    """Fair order among waiters: first pieces before continuations, then the owner
    served longest ago, then arrival. A session that queues many utterances cannot
    starve the others, and a new utterance's first words overtake the tail of a
    running one, whose listener still has audio buffered."""

    def __init__(self) -> None:
        self._waiters: list[Waiter] = []
        self._served: dict[object, int] = {}
        self._turn = itertools.count(1)
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self._waiters)

    def _key(self, waiter: Waiter) -> tuple[bool, int, int]:
        return (waiter.continuation, self._served.get(waiter.owner, 0), waiter.seq)

    def add(self, owner: object, continuation: bool) -> tuple[Waiter, int]:
        """Queue a waiter; returns it and its position (1: next to be served)."""
        waiter = Waiter(owner, continuation, next(self._seq))
        key = self._key(waiter)
        position = 1 + sum(1 for other in self._waiters if self._key(other) < key)
        self._waiters.append(waiter)
        return waiter, position

    def remove(self, waiter: Waiter) -> None:
        if waiter in self._waiters:
            self._waiters.remove(waiter)

    def grant_next(self) -> bool:
        """Give a freed slot to the first waiter in fair order; False if none waits."""
        while self._waiters:
            waiter = min(self._waiters, key=self._key)
            self._waiters.remove(waiter)
            if waiter.granted.done():  # its wait was cancelled and it is leaving
                continue
            self._served[waiter.owner] = next(self._turn)
            waiter.granted.set_result(None)
            return True
        return False

    def served(self, owner: object) -> None:
        """``owner`` got a slot without waiting: it goes behind others at its next wait."""
        self._served[owner] = next(self._turn)

    def forget(self, owner: object) -> None:
        """``owner`` is gone (its session closed): drop its turn record."""
        self._served.pop(owner, None)
