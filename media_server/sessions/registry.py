"""SessionRegistry: creates, finds, limits and reaps voice sessions."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import secrets
from collections.abc import Callable
from typing import Final

from media_server.audio.budget import EncodeBudget
from media_server.audio.opus import encode_silence
from media_server.clock import Clock, MonotonicClock
from media_server.config import Settings
from media_server.log_context import log_context
from media_server.playout.ticker import Ticker
from media_server.sessions.session import VoiceSession
from media_server.tasks import cancel_and_wait
from media_server.telemetry.metrics import ServerMetrics
from synthesis import SynthesisService
from synthesis.errors import ClientLimit, NotFound, ServerBusy

logger = logging.getLogger(__name__)

SWEEP_INTERVAL_S: Final = 1.0


RETRY_AFTER_S: Final = 5
"""What a client over a limit is told to wait before trying again."""


class SessionLimitReached(ServerBusy):
    default_code = "too_many_sessions"

    def __init__(self, limit: int) -> None:
        super().__init__(
            None,
            f"the server already has {limit} sessions",
            f"retry in {RETRY_AFTER_S} s, or raise VMS_MAX_SESSIONS",
            retry_after_s=RETRY_AFTER_S,
        )
        self.limit = limit


class ClientSessionLimit(ClientLimit):
    """One client address already has as many unconnected sessions as it may (1:1 sessions
    and room listeners together)."""

    default_code = "too_many_pending_sessions"

    def __init__(self, limit: int) -> None:
        super().__init__(
            None,
            f"this client already has {limit} sessions that have not connected",
            "complete ICE on (or DELETE) the sessions you started before starting more; the "
            "operator can raise VMS_MAX_PENDING_SESSIONS_PER_CLIENT",
            retry_after_s=RETRY_AFTER_S,
        )
        self.limit = limit


class SessionNotFound(NotFound):
    default_code = "session_not_found"


class SessionRegistry:
    """All live sessions of one server.

    Sessions ask to be closed through :meth:`request_close`; the registry's
    reaper task does the closing, so nothing is fire-and-forget. A sweeper
    closes sessions idle longer than ``idle_timeout_s``. :meth:`aclose` closes
    everything and stops both tasks.
    """

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
        """Asked before a session is created and before it opens an utterance (drain)."""
        self.synthesis = synthesis
        self._metrics = metrics
        self._clock = clock or MonotonicClock()
        self._encode_executor = encode_executor
        self._encode_budget = encode_budget
        self._silence = encode_silence(settings.opus)
        self._sessions: dict[str, VoiceSession] = {}
        self._pending = 0
        self._creating: dict[str, int] = {}
        self._to_close: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self.ticker = Ticker(self._clock)
        self.closed_total = 0

    def __len__(self) -> int:
        return len(self._sessions)

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._reap(), name="session-reaper"),
            loop.create_task(self._sweep(), name="session-sweeper"),
            loop.create_task(self.ticker.run(), name="session-ticker"),
        ]

    def get(self, session_id: str) -> VoiceSession | None:
        return self._sessions.get(session_id)

    def sessions(self) -> list[VoiceSession]:
        return list(self._sessions.values())

    def start_stats_window(self) -> int:
        """Start a fresh measuring window in every session's pacing stats
        (:meth:`PacingStats.start_window`); returns how many."""
        sessions = self.sessions()
        for session in sessions:
            session.pacer.stats.start_window()
        return len(sessions)

    def unconnected(self, client: str) -> int:
        """Sessions of ``client`` being created or not connected (yet, or any more)."""
        return self._creating.get(client, 0) + sum(
            1 for s in self._sessions.values() if s.client == client and s.connecting
        )

    async def create(
        self,
        offer_sdp: str,
        voice_id: str | None = None,
        *,
        client: str | None = None,
        credential: bytes | None = None,
    ) -> tuple[VoiceSession, str]:
        """Create and negotiate a session; returns it and the answer SDP.

        ``client`` (an address; None for a trusted caller) may hold at most
        ``max_pending_sessions_per_client`` sessions that have not connected.
        ``credential`` is kept on the session for signaling to check later.
        """
        if self._admit is not None:
            self._admit()
        if len(self._sessions) + self._pending >= self.settings.max_sessions:
            raise SessionLimitReached(self.settings.max_sessions)
        limit = self.settings.max_pending_sessions_per_client
        if client is not None and limit and self.unconnected(client) >= limit:
            raise ClientSessionLimit(limit)
        session_id = secrets.token_urlsafe(12)
        with log_context(session=session_id):  # its tasks (and what they log) keep the id
            session, answer = await self._start(session_id, offer_sdp, voice_id, client, credential)
        self._sessions[session_id] = session
        if self._metrics is not None:
            self._metrics.sessions_started.inc()
        logger.info(
            "session %s created (%d live)",
            session_id,
            len(self._sessions),
            extra={"event": "session.created", "session": session_id},
        )
        return session, answer

    async def _start(
        self,
        session_id: str,
        offer_sdp: str,
        voice_id: str | None,
        client: str | None,
        credential: bytes | None,
    ) -> tuple[VoiceSession, str]:
        session = VoiceSession(
            session_id,
            self.settings,
            self.synthesis,
            self._clock,
            self._silence,
            self.request_close,
            voice_id=voice_id,
            encode_executor=self._encode_executor,
            encode_budget=self._encode_budget,
            ticker=self.ticker,
            metrics=self._metrics,
            admit=self._admit,
        )
        session.client = client
        session.credential = credential
        self._pending += 1
        if client is not None:
            self._creating[client] = self._creating.get(client, 0) + 1
        try:
            answer = await session.start(offer_sdp)
        except BaseException:
            await session.aclose()
            raise
        finally:
            self._pending -= 1
            if client is not None:
                left = self._creating[client] - 1
                if left:
                    self._creating[client] = left
                else:
                    del self._creating[client]
        return session, answer

    def request_close(self, session_id: str, reason: str) -> None:
        if session_id in self._sessions:
            self._to_close.put_nowait((session_id, reason))

    async def close(self, session_id: str, reason: str = "closed by client") -> bool:
        session = self._sessions.pop(session_id, None)
        if session is None:
            return False
        with log_context(session=session_id):
            await session.aclose()
        self.closed_total += 1
        if self._metrics is not None:
            self._metrics.sessions_closed.inc()
        logger.info(
            "session %s closed: %s (%d live)",
            session_id,
            reason,
            len(self._sessions),
            extra={"event": "session.closed", "session": session_id, "reason": reason},
        )
        return True

    async def _reap(self) -> None:
        while True:
            session_id, reason = await self._to_close.get()
            try:
                await self.close(session_id, reason)
            except Exception:
                logger.exception("closing session %s failed", session_id)

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(min(SWEEP_INTERVAL_S, self.settings.idle_timeout_s / 4))
            self._close_idle()

    def _close_idle(self) -> None:
        # A method of its own: a loop variable in ``_sweep`` would keep the last session
        # it saw alive (peer connection, DTLS, SRTP) while that coroutine sleeps.
        for session in self.sessions():
            if session.idle_for() > self.settings.idle_timeout_s:
                self.request_close(session.session_id, "idle timeout")

    async def aclose(self) -> None:
        tasks, self._tasks = self._tasks, []
        await cancel_and_wait(*tasks)
        for session_id in list(self._sessions):
            await self.close(session_id, "server shutdown")
