"""Drain: the server's way out, refusing new work while the speech it has finishes.

On SIGTERM the process does not cut a sentence in half: it stops taking new sessions,
requests and utterances (``503``/``error`` ``draining``, with ``Retry-After`` so a
client tries another replica), lets every queued utterance play to its end and every
``/tts`` request finish, and only then closes, or once the drain timeout has passed.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Final

from media_server.clock import Clock
from synthesis.errors import ServerBusy

logger = logging.getLogger(__name__)

DRAIN_POLL_S: Final = 0.05
"""How often the drain looks whether speech is still playing: an utterance ends on a
20 ms pacer tick, so a short poll costs nothing and keeps the queues free of hooks."""
DRAIN_SETTLE_S: Final = 0.25
"""After the last utterance left the pacer, this long for its final frames and its
``speech.done`` event to cross the network before the peers are closed."""
DRAINING_RETRY_AFTER_S: Final = 2
"""What a refused client is told to wait: by then the load balancer has seen
``/readyz`` fail and sends it to another replica."""


class ServerDraining(ServerBusy):
    """The server is shutting down: new sessions, requests and utterances are refused."""

    default_code = "draining"

    def __init__(self) -> None:
        super().__init__(
            None,
            "the server is shutting down and takes no new sessions or speech",
            f"retry in {DRAINING_RETRY_AFTER_S} s: another replica, or this one once "
            "restarted, will answer",
            retry_after_s=DRAINING_RETRY_AFTER_S,
        )


@dataclass(frozen=True, slots=True)
class DrainSummary:
    """What a drain waited for and what it had to cut (logged at exit)."""

    waited_s: float
    sessions: int
    """1:1 sessions and room members live when the drain began."""
    utterances_cut: int
    """Utterances still queued or playing when the drain ended (0 unless it timed out)."""
    requests_cut: int
    """``POST /tts`` requests still running when it ended."""

    @property
    def clean(self) -> bool:
        return not self.utterances_cut and not self.requests_cut


class Drain:
    """The draining state of one server and the ``/tts`` requests in flight.

    :meth:`admit` is the one check every new session, request and utterance passes;
    :meth:`wait` turns draining on and returns once nothing is left to say.
    """

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self.draining = False
        self._requests = 0

    @property
    def requests(self) -> int:
        return self._requests

    def admit(self) -> None:
        """Raise :class:`ServerDraining` once the server is draining."""
        if self.draining:
            raise ServerDraining()

    @contextlib.contextmanager
    def request(self) -> Iterator[None]:
        """Around one ``POST /tts``: admitted, and waited for by the drain."""
        self.admit()
        self._requests += 1
        try:
            yield
        finally:
            self._requests -= 1

    async def wait(
        self, timeout_s: float, utterances: Callable[[], int], sessions: int
    ) -> DrainSummary:
        """Refuse new work from now on; return once ``utterances()`` (queued or playing,
        everywhere) and the ``/tts`` requests are 0, or after ``timeout_s``."""
        self.draining = True
        clock = self._clock
        started = clock.now()
        deadline = started + timeout_s
        left = utterances()
        waited = bool(left or self._requests)
        while (left or self._requests) and clock.now() < deadline:
            await clock.sleep_until(min(clock.now() + DRAIN_POLL_S, deadline))
            left = utterances()
        if (waited or sessions) and not (left or self._requests) and clock.now() < deadline:
            await clock.sleep_until(min(clock.now() + DRAIN_SETTLE_S, deadline))
            left = utterances()
        summary = DrainSummary(round(clock.now() - started, 3), sessions, left, self._requests)
        if summary.clean:
            logger.info(
                "drained in %.2f s (%d sessions)",
                summary.waited_s,
                sessions,
                extra={"event": "server.drained"},
            )
        else:
            logger.warning(
                "drain timeout (%g s): cutting %d utterances and %d /tts requests",
                timeout_s,
                summary.utterances_cut,
                summary.requests_cut,
            )
        return summary
