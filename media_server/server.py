"""MediaServer: the composition root, everything between text and packets as one object."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import gc
import importlib.metadata
import logging
import weakref
from collections.abc import Callable, Collection
from typing import Any

from media_server.audio.budget import EncodeBudget
from media_server.audio.containers import http_opus
from media_server.audio.executor import DeadlineExecutor
from media_server.clock import Clock, PreciseClock
from media_server.config import Settings
from media_server.drain import Drain, DrainSummary
from media_server.rooms.registry import RoomRegistry
from media_server.rooms.room import ListenerSession, Room
from media_server.rooms.tokens import Claims, Role, TokenSigner
from media_server.rtc.ice import restrict_host_addresses
from media_server.runtime.collector import CollectionScheduler
from media_server.runtime.heap import HeapTrimmer, glibc_malloc_trim
from media_server.runtime.loop_lag import LoopLagProbe
from media_server.runtime.priority import (
    encode_thread_priority,
    lower_thread_priority,
    raise_loop_priority,
    urgent_thread_priority,
)
from media_server.sessions.registry import SessionNotFound, SessionRegistry
from media_server.sessions.session import VoiceSession
from media_server.speech.talker import Talker
from media_server.speech.unpaced import Transport, UnpacedSpeech
from media_server.tasks import cancel_and_wait
from media_server.telemetry import EngineObserver, LoadCollector, LoadSnapshot, ServerMetrics
from synthesis import Engine, InvalidRequest, ServerBusy, SynthesisService, create_engine

logger = logging.getLogger(__name__)


def _version() -> str:
    try:
        return importlib.metadata.version("voice-media-server")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


class RoomsDisabled(ServerBusy):
    default_code = "rooms_disabled"

    def __init__(self) -> None:
        super().__init__(
            None,
            "rooms need a token secret, and none is configured",
            "start the server with VMS_TOKEN_SECRET set (at least 16 bytes)",
        )


class MediaServer:
    """Synthesis service, encode pool and budget, the session and room registries (one
    ticker drives every 1:1 session), heap trimmer and collection scheduler: built by
    :meth:`start`, closed by :meth:`aclose`, in one place and one order.

    Signaling asks it one question per request; nothing outside reaches into what it owns.
    ``engine`` defaults to the one ``settings`` names, loaded off the event loop; ``clock``
    to a :class:`PreciseClock` this server owns.
    """

    def __init__(
        self, settings: Settings, engine: Engine | None = None, clock: Clock | None = None
    ) -> None:
        self.settings = settings
        self._given_engine = engine
        self._owned_clock: PreciseClock | None = None
        if clock is None:
            clock = self._owned_clock = PreciseClock()
        self.clock: Clock = clock
        self.signer = TokenSigner(settings.token_secret.encode()) if settings.token_secret else None
        self._engine: Engine | None = None
        self._synthesis: SynthesisService | None = None
        self._sessions: SessionRegistry | None = None
        self._rooms: RoomRegistry | None = None
        self._encode_pool: DeadlineExecutor | None = None
        self._budget: EncodeBudget | None = None
        self._trimmer: HeapTrimmer | None = None
        self._collector: CollectionScheduler | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.metrics = ServerMetrics()
        """What ``GET /metrics`` exposes (:meth:`metrics_exposition`)."""
        self._drain = Drain(self.clock)
        self._streams: weakref.WeakSet[UnpacedSpeech] = weakref.WeakSet()
        """``/tts/ws`` speakers, for the drain to wait on (a closed one is empty)."""

    # -- life cycle ---------------------------------------------------------------

    async def start(self) -> None:
        settings = self.settings
        if settings.ice_host_addresses:
            restrict_host_addresses(settings.ice_host_addresses)
        loop_nice = raise_loop_priority(settings.loop_nice) if settings.loop_nice else 0
        urgent = urgent_thread_priority(loop_nice)
        engine = self._given_engine
        if engine is None:
            # Loaded at first-chunk priority: threads the engine starts (ONNX Runtime's
            # pool) inherit it, and a first chunk must not wait for a thread that
            # every busy neighbour outranks.
            with concurrent.futures.ThreadPoolExecutor(
                1, thread_name_prefix="engine-load", initializer=urgent
            ) as loader:
                engine = await asyncio.get_running_loop().run_in_executor(
                    loader, create_engine, settings.engine
                )
        self._engine = engine
        self.metrics.build.info({"version": _version(), "engine": engine.name})
        self._synthesis = SynthesisService(
            engine,
            settings.synthesis_slots,
            http_slots=settings.http_synthesis_slots,
            chunk_timeout_s=settings.synthesis_chunk_timeout_s,
            thread_initializer=lower_thread_priority,
            urgent_initializer=urgent,
            queue_timeout_s=settings.synthesis_queue_timeout_s,
            observer=EngineObserver(self.metrics),
        )
        # Earliest deadline first: the stream whose encoded audio runs out soonest.
        self._encode_pool = DeadlineExecutor(
            settings.encode_thread_count,
            thread_name_prefix="opus-encode",
            initializer=encode_thread_priority(loop_nice),
        )
        # One Opus complexity for every stream, lowered when encoding outgrows its budget.
        self._budget = EncodeBudget(
            settings.opus.encode_budget_pct / 100,
            settings.opus.complexity,
            settings.opus.min_complexity,
            now=self.clock.now,
        )
        shared: dict[str, Any] = {
            "clock": self.clock,
            "encode_executor": self._encode_pool,
            "encode_budget": self._budget,
            "metrics": self.metrics,
            "admit": self._drain.admit,
        }
        self._sessions = SessionRegistry(settings, self._synthesis, **shared)
        self._sessions.start()
        self._rooms = RoomRegistry(settings, self._synthesis, **shared)
        self._rooms.start()
        self._trimmer = HeapTrimmer(
            self._busy,
            self.clock,
            settings.heap_trim_idle_s,
            trim=glibc_malloc_trim() if settings.heap_trim_idle_s > 0 else None,
        )
        self._collector = CollectionScheduler(self._busy, self.clock, settings.gc_full_interval_s)
        self._collector.install()
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._trimmer.run(), name="heap-trimmer"),
            loop.create_task(self._collector.run(), name="gc-scheduler"),
            loop.create_task(
                LoopLagProbe(self.clock, self.metrics.loop_lag).run(), name="loop-lag-probe"
            ),
        ]
        self._freeze_startup_objects()
        logger.info(
            "server started: engine %s, %d synthesis slots, %d encode threads",
            engine.name,
            settings.synthesis_slots,
            settings.encode_thread_count,
            extra={"event": "server.started", "engine": engine.name},
        )

    async def aclose(self) -> None:
        gc.unfreeze()
        await cancel_and_wait(*self._tasks)
        self._tasks = []
        if self._collector is not None:
            self._collector.uninstall()
        if self._rooms is not None:
            await self._rooms.aclose()
        if self._sessions is not None:
            await self._sessions.aclose()
        if self._synthesis is not None:
            self._synthesis.close()
        if self._encode_pool is not None:
            self._encode_pool.shutdown(wait=False, cancel_futures=True)
        if self._engine is not None and self._given_engine is None:
            self._engine.close()
        if self._owned_clock is not None:
            self._owned_clock.close()
        logger.info("server stopped", extra={"event": "server.stopped"})

    @staticmethod
    def _freeze_startup_objects() -> None:
        """Keep what start-up built out of every later garbage collection.

        A full collection holds the event loop while it walks every tracked object, and
        most of them after start-up (modules, the engine, aiortc's and aiohttp's classes)
        live as long as the server; frozen, they are never walked again. The collections
        that walk live sessions' objects are scheduled by :class:`CollectionScheduler`.
        """
        gc.collect()
        gc.freeze()
        logger.info("gc: %d start-up objects frozen", gc.get_freeze_count())

    def _busy(self) -> bool:
        return len(self.sessions) > 0 or bool(self.rooms.rooms)

    # -- what it owns ------------------------------------------------------------

    @property
    def engine(self) -> Engine:
        assert self._engine is not None, "MediaServer.start() has not run"
        return self._engine

    @property
    def synthesis(self) -> SynthesisService:
        assert self._synthesis is not None, "MediaServer.start() has not run"
        return self._synthesis

    @property
    def sessions(self) -> SessionRegistry:
        assert self._sessions is not None, "MediaServer.start() has not run"
        return self._sessions

    @property
    def rooms(self) -> RoomRegistry:
        assert self._rooms is not None, "MediaServer.start() has not run"
        return self._rooms

    # -- 1:1 sessions -------------------------------------------------------------

    async def create_session(
        self,
        offer_sdp: str,
        voice_id: str | None = None,
        *,
        client: str | None = None,
        credential: bytes | None = None,
    ) -> tuple[VoiceSession, str]:
        """A negotiated 1:1 session and its answer SDP (see :meth:`SessionRegistry.create`)."""
        if voice_id is not None:
            voices = {v.voice_id for v in self.engine.voices}
            if voice_id not in voices:
                raise InvalidRequest(
                    "unknown_voice",
                    f"voice {voice_id!r} does not exist",
                    f"use one of: {', '.join(sorted(voices))}, or omit ?voice=",
                )
        return await self.sessions.create(offer_sdp, voice_id, client=client, credential=credential)

    def session(self, session_id: str) -> VoiceSession:
        session = self.sessions.get(session_id)
        if session is None:
            raise SessionNotFound(
                None,
                "no such session",
                "the session ended or never existed; POST /whep to start a new one",
            )
        return session

    async def close_session(self, session_id: str) -> bool:
        return await self.sessions.close(session_id)

    # -- unpaced streams ---------------------------------------------------------------

    def unpaced_speech(
        self,
        fmt: str,
        transport: Transport,
        *,
        hold: Callable[[], contextlib.AbstractContextManager[None]] | None = None,
    ) -> UnpacedSpeech:
        """A ``/tts/ws`` stream: its own utterance queue, spoken as fast as synthesis
        goes (not started: the caller starts and closes it)."""
        settings = self.settings
        speech = UnpacedSpeech(
            self.synthesis,
            fmt,
            http_opus(settings.opus),
            transport,
            Talker(None, None, settings, self.clock, admit=self._drain.admit),
            max_queued=settings.max_queued_utterances,
            hold=hold,
            metrics=self.metrics,
        )
        self._streams.add(speech)
        return speech

    # -- draining -------------------------------------------------------------------

    @property
    def draining(self) -> bool:
        return self._drain.draining

    def admit(self) -> None:
        """Raise ``ServerDraining`` (503, ``draining``) once the server is draining: every
        new session, room member, ``/tts`` request and socket asks first."""
        self._drain.admit()

    def tts_request(self) -> contextlib.AbstractContextManager[None]:
        """Around one ``POST /tts``: refused while draining, and waited for by :meth:`drain`."""
        return self._drain.request()

    async def drain(self, timeout_s: float) -> DrainSummary:
        """Refuse new work, then wait up to ``timeout_s`` until every session's, room's and
        ``/tts/ws`` socket's speech has played out and no ``/tts`` request is running.

        Sessions stay open: :meth:`aclose` ends them after.
        """
        members = len(self.sessions) + sum(r.participants for r in self.rooms.rooms.values())
        logger.info("draining: %d sessions and room members, up to %g s", members, timeout_s)
        return await self._drain.wait(timeout_s, self._utterances, members)

    def _utterances(self) -> int:
        """Utterances queued or playing anywhere."""
        return (
            sum(s.speech.pending for s in self.sessions.sessions())
            + sum(r.speech.pending for r in self.rooms.rooms.values())
            + sum(s.queue.pending for s in self._streams)
        )

    # -- rooms --------------------------------------------------------------------

    def verify_join(self, token: str | None, room: str, roles: Collection[Role]) -> Claims:
        """The claims of a join token (``Unauthorized``/``Forbidden`` otherwise)."""
        if self.signer is None:
            raise RoomsDisabled()
        return self.signer.verify(token, room, roles)

    async def join_listener(
        self,
        room: str,
        claims: Claims,
        offer_sdp: str,
        *,
        client: str | None = None,
        credential: bytes | None = None,
    ) -> tuple[ListenerSession, str]:
        return await self.rooms.join_listener(
            room, claims, offer_sdp, client=client, credential=credential
        )

    def listener(self, room: str, listener_id: str) -> ListenerSession:
        if self.signer is None:
            raise RoomsDisabled()
        return self.rooms.listener(room, listener_id)

    async def leave(self, room: str, listener_id: str) -> bool:
        return await self.rooms.remove_listener(room, listener_id)

    def room_for_bot(self, room: str) -> Room:
        return self.rooms.get_or_create(room)

    async def release_room(self, room: Room) -> None:
        """Close ``room`` if its last member has gone."""
        await self.rooms.close_if_empty(room)

    # -- figures ------------------------------------------------------------------

    def start_stats_window(self) -> dict[str, int]:
        """Start a fresh measuring window in every pacer; returns how many it reset."""
        return {
            "sessions": self.sessions.start_stats_window(),
            "rooms": self.rooms.start_stats_window(),
        }

    async def metrics_exposition(self) -> tuple[bytes, str]:
        """``GET /metrics``: counters and histograms observed where things happen, and
        gauges from one :meth:`load` taken here, on the loop (the state it reads is the
        loop's); rendered in a worker thread, since a render takes milliseconds and
        reads ``/proc``."""
        load = self.load()
        return await asyncio.to_thread(self.metrics.exposition, LoadCollector(lambda: load))

    def load(self) -> LoadSnapshot:
        """How loaded the server is now (the gauges of ``GET /metrics``)."""
        if self._budget is None or self._synthesis is None:
            return LoadSnapshot(sessions=0, max_sessions=self.settings.max_sessions, rooms=0)
        # every role, 0 included: a series that vanished with the last room would leave
        # an alert on it without data instead of at 0
        participants: dict[str, int] = {role.value: 0 for role in Role}
        for room in self.rooms.rooms.values():
            for member in room.roster():
                participants[member["role"]] = participants.get(member["role"], 0) + 1
        synthesis = self.synthesis.stats()
        return LoadSnapshot(
            sessions=len(self.sessions),
            max_sessions=self.settings.max_sessions,
            rooms=len(self.rooms.rooms),
            room_participants=participants,
            speaking_streams=self._budget.active_streams,
            synthesis_slots=synthesis.max_concurrent,
            synthesis_slots_busy=synthesis.running,
            synthesis_queued=synthesis.waiting,
            encode_load_cores=self._budget.load_cores,
            encode_budget_cores=self._budget.budget_cores,
            opus_complexity=self._budget.complexity,
            draining=self.draining,
            callers_speaking=sum(
                1
                for room in self.rooms.rooms.values()
                for member in room.callers
                if member.caller is not None and member.caller.speaking
            ),
        )

    def health(self) -> dict[str, object]:
        return {"status": "ok", "engine": self.engine.name, "sessions": len(self.sessions)}

    def stats(self, *, detail: bool) -> dict[str, object]:
        """Server figures; with ``detail``, who is connected (session ids, rooms,
        identities): only for the operator, since a session's URL lets a client end it."""
        budget = self._budget
        trimmer = self._trimmer
        collector = self._collector
        assert budget is not None and trimmer is not None and collector is not None
        body: dict[str, object] = {
            "sessions": len(self.sessions),
            "max_sessions": self.settings.max_sessions,
            "closed_total": self.sessions.closed_total,
            "rooms_open": len(self.rooms.rooms) if self.signer is not None else 0,
            "synthesis": dataclasses.asdict(self.synthesis.stats()),
            "opus": {
                "complexity": budget.complexity,
                "encode_load_cores": round(budget.load_cores, 3),
                "encode_budget_cores": budget.budget_cores,
                "complexity_changes": budget.changes,
                "speaking_streams": budget.active_streams,
                "frame_cost_us": round(budget.frame_cost_s * 1e6, 1),
            },
            "gc": {
                "full_collections": collector.collections,
                "longest_full_ms": round(collector.longest_s * 1000, 1),
            },
            "heap": {
                "idle_trims": trimmer.trims,
                "freed_mb": round(trimmer.freed_bytes / 2**20, 1),
            },
        }
        if detail:
            body["rooms"] = self.rooms.stats() if self.signer is not None else []
            body["per_session"] = [s.stats() for s in self.sessions.sessions()]
        return body
