"""RoomRegistry: rooms created on first join, closed when the last member leaves."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import re
from collections.abc import Callable
from typing import Final

from media_server.audio.budget import EncodeBudget
from media_server.audio.opus import encode_silence
from media_server.clock import Clock, MonotonicClock
from media_server.config import Settings
from media_server.log_context import log_context
from media_server.rooms.room import RETRY_AFTER_S, ListenerSession, Room
from media_server.rooms.tokens import Claims
from media_server.sessions.registry import ClientSessionLimit, SessionNotFound
from media_server.tasks import cancel_and_wait
from media_server.telemetry.metrics import ServerMetrics
from synthesis import SynthesisService
from synthesis.errors import ServerBusy

logger = logging.getLogger(__name__)

ROOM_NAME: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")
"""Use with ``fullmatch``: ``match`` with ``$`` would let a trailing newline through."""


class RoomLimitReached(ServerBusy):
    default_code = "too_many_rooms"

    def __init__(self, limit: int) -> None:
        super().__init__(
            None,
            f"the server already has {limit} rooms",
            f"retry in {RETRY_AFTER_S} s, or raise VMS_MAX_ROOMS",
            retry_after_s=RETRY_AFTER_S,
        )
        self.limit = limit


class RoomRegistry:
    """Owns every room. Listener close requests go through its reaper task; a
    room left empty is closed (its pacer, speaker and peers stopped and awaited)."""

    def __init__(
        self,
        settings: Settings,
        synthesis: SynthesisService,
        *,
        clock: Clock | None = None,
        encode_executor: concurrent.futures.Executor | None = None,
        encode_budget: EncodeBudget | None = None,
        metrics: ServerMetrics | None = None,
        admit: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self._admit = admit
        """Asked before anyone joins a room and before a member opens an utterance (drain)."""
        self._synthesis = synthesis
        self._metrics = metrics
        self._clock = clock or MonotonicClock()
        self._encode_executor = encode_executor
        self._encode_budget = encode_budget
        self._silence = encode_silence(settings.opus)
        self.rooms: dict[str, Room] = {}
        self._to_close: asyncio.Queue[tuple[str, str, str]] = asyncio.Queue()
        self._reaper: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._reaper = asyncio.get_running_loop().create_task(self._reap(), name="room-reaper")

    def get_or_create(self, name: str) -> Room:
        if self._admit is not None:
            self._admit()
        room = self.rooms.get(name)
        if room is not None:
            return room
        if len(self.rooms) >= self.settings.max_rooms:
            raise RoomLimitReached(self.settings.max_rooms)
        with log_context(room=name):  # its pacer and speaker tasks keep the name
            room = Room(
                name,
                self.settings,
                self._synthesis,
                self._clock,
                self._silence,
                encode_executor=self._encode_executor,
                encode_budget=self._encode_budget,
                metrics=self._metrics,
                admit=self._admit,
            )
            room.start()
        self.rooms[name] = room
        logger.info(
            "room %s created (%d rooms)",
            name,
            len(self.rooms),
            extra={"event": "room.created", "room": name},
        )
        return room

    def start_stats_window(self) -> int:
        """Start a fresh measuring window in every room's pacing stats
        (:meth:`PacingStats.start_window`); returns how many."""
        for room in self.rooms.values():
            room.pacer.stats.start_window()
        return len(self.rooms)

    def unconnected(self, client: str) -> int:
        """Listeners of ``client``, in any room, being created or not connected."""
        return sum(
            1
            for room in self.rooms.values()
            for listener in room.listeners.values()
            if listener.client == client and listener.connecting
        )

    def listener_closer(self, room: str) -> ListenerCloser:
        return ListenerCloser(self._to_close, room)

    async def join_listener(
        self,
        name: str,
        claims: Claims,
        offer_sdp: str,
        *,
        client: str | None = None,
        credential: bytes | None = None,
    ) -> tuple[ListenerSession, str]:
        """Add a listener to room ``name`` (created if need be); returns it and the answer.

        ``client`` and ``credential`` as for 1:1 sessions; a room this join created is
        closed again if the join fails.
        """
        limit = self.settings.max_pending_sessions_per_client
        if client is not None and limit and self.unconnected(client) >= limit:
            raise ClientSessionLimit(limit)
        room = self.get_or_create(name)
        try:
            return await room.add_listener(
                claims, offer_sdp, self.listener_closer(name), client=client, credential=credential
            )
        except BaseException:
            await self.close_if_empty(room)
            raise

    def listener(self, name: str, listener_id: str) -> ListenerSession:
        room = self.rooms.get(name)
        listener = None if room is None else room.listeners.get(listener_id)
        if listener is None:
            raise SessionNotFound(
                None,
                f"no such listener in room {name!r}",
                f"the session ended; POST /rooms/{name}/whep to join again",
            )
        return listener

    def stats(self) -> list[dict[str, object]]:
        return [room.stats() for room in self.rooms.values()]

    async def remove_listener(self, room_name: str, listener_id: str, reason: str = "left") -> bool:
        room = self.rooms.get(room_name)
        if room is None or not await room.remove_listener(listener_id, reason):
            return False
        await self.close_if_empty(room)
        return True

    async def close_if_empty(self, room: Room) -> None:
        if room.empty and self.rooms.get(room.name) is room:
            del self.rooms[room.name]
            await room.aclose()
            logger.info(
                "room %s closed (%d rooms)",
                room.name,
                len(self.rooms),
                extra={"event": "room.closed", "room": room.name},
            )

    async def _reap(self) -> None:
        while True:
            room_name, listener_id, reason = await self._to_close.get()
            try:
                await self.remove_listener(room_name, listener_id, reason)  # logs room.left
            except Exception:
                logger.exception("closing listener %s failed", listener_id)

    async def aclose(self) -> None:
        await cancel_and_wait(self._reaper)
        for room in list(self.rooms.values()):
            await room.aclose()
        self.rooms.clear()


class ListenerCloser:
    """``request_close`` for the listeners of one room: queues them for the reaper."""

    def __init__(self, queue: asyncio.Queue[tuple[str, str, str]], room: str) -> None:
        self._queue = queue
        self._room = room

    def __call__(self, listener_id: str, reason: str) -> None:
        self._queue.put_nowait((self._room, listener_id, reason))
