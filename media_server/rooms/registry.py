"""RoomRegistry: rooms created on first join, closed when the last member leaves."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import re
from typing import Final

from media_server.audio.budget import EncodeBudget
from media_server.audio.opus import encode_silence
from media_server.clock import Clock, MonotonicClock
from media_server.config import Settings
from media_server.rooms.room import Room
from media_server.tasks import cancel_and_wait
from synthesis import SynthesisService

logger = logging.getLogger(__name__)

ROOM_NAME: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")
"""Use with ``fullmatch``: ``match`` with ``$`` would let a trailing newline through."""


class RoomLimitReached(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(f"the server already has {limit} rooms")
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
    ) -> None:
        self.settings = settings
        self._synthesis = synthesis
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
        room = self.rooms.get(name)
        if room is not None:
            return room
        if len(self.rooms) >= self.settings.max_rooms:
            raise RoomLimitReached(self.settings.max_rooms)
        room = Room(
            name,
            self.settings,
            self._synthesis,
            self._clock,
            self._silence,
            encode_executor=self._encode_executor,
            encode_budget=self._encode_budget,
        )
        room.start()
        self.rooms[name] = room
        logger.info("room %s created (%d rooms)", name, len(self.rooms))
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

    async def remove_listener(self, room_name: str, listener_id: str) -> bool:
        room = self.rooms.get(room_name)
        if room is None or not await room.remove_listener(listener_id):
            return False
        await self.close_if_empty(room)
        return True

    async def close_if_empty(self, room: Room) -> None:
        if room.empty and self.rooms.get(room.name) is room:
            del self.rooms[room.name]
            await room.aclose()
            logger.info("room %s closed (%d rooms)", room.name, len(self.rooms))

    async def _reap(self) -> None:
        while True:
            room_name, listener_id, reason = await self._to_close.get()
            try:
                if await self.remove_listener(room_name, listener_id):
                    logger.info("listener %s left %s: %s", listener_id, room_name, reason)
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
