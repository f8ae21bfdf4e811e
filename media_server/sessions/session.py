"""VoiceSession: wires one peer, one speaker and one pacer together for a WHEP client."""

from __future__ import annotations

import concurrent.futures
import logging
from collections.abc import Callable
from typing import Any, Final

from media_server.audio.budget import EncodeBudget
from media_server.audio.encoder import StreamEncoder
from media_server.audio.frames import FRAME_MS
from media_server.clock import Clock
from media_server.config import Settings
from media_server.link.adaptor import AudioDecision
from media_server.playout.pacer import Pacer
from media_server.playout.ticker import Ticker
from media_server.rtc.client import CloseRequest, PeerClient
from media_server.speech.events import ErrorEvent
from media_server.speech.paced import PacedSpeech
from media_server.speech.protocol import (
    loads_json,
    parse_client_message,
)
from media_server.speech.queue import monotonic_ms
from media_server.speech.talker import Talker
from media_server.telemetry.api import count_refusal
from media_server.telemetry.metrics import ServerMetrics, SpeechKind
from synthesis import SynthesisService
from synthesis.errors import ClientError

logger = logging.getLogger(__name__)

PATH_LOST_REWIND_MS: Final = 1500
"""Speech sent again after an ICE restart: the bundled page restarts after 1 s without
audio, so its restart reaches the server about 1.2-1.4 s after the path died
(``bench.ice_move``). A client that took longer to notice misses the part before."""


class VoiceSession(PeerClient):
    """A 1:1 voice session: text arrives on the data channel, speech leaves as Opus RTP.

    Besides what :class:`PeerClient` owns, it has its own speaker (synthesis,
    encoding) and its own pacer.
    """

    def __init__(
        self,
        session_id: str,
        settings: Settings,
        synthesis: SynthesisService,
        clock: Clock,
        silence_payload: bytes,
        request_close: CloseRequest,
        *,
        voice_id: str | None = None,
        encode_executor: concurrent.futures.Executor | None = None,
        encode_budget: EncodeBudget | None = None,
        ticker: Ticker | None = None,
        metrics: ServerMetrics | None = None,
        admit: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(session_id, settings, clock, request_close, metrics=metrics)
        self._talker = Talker(None, voice_id, settings, clock, admit=admit)
        self.speech = PacedSpeech(
            synthesis,
            StreamEncoder(settings.opus),
            self.send_event,
            encode_executor=encode_executor,
            encode_budget=encode_budget,
            max_queued=settings.max_queued_utterances,
            debug_timings=settings.debug_timings,
            metrics=metrics,
            kind=SpeechKind.SESSION,
        )
        self.pacer = Pacer(self.speech, self.track, clock, silence_payload, metrics=metrics)
        self._ticker = ticker

    @property
    def session_id(self) -> str:
        return self.client_id

    async def _run_media(self) -> None:
        self.speech.start()
        # RTP starts when aiortc's sender first asks for a frame (DTLS is up):
        # the first packet on the wire is stream position 0.
        await self._transport_ready()
        if self._ticker is None:
            await self.pacer.run()
            return
        failed = self._ticker.add(self.pacer)  # one shared clock task for all sessions
        try:
            await failed
        finally:
            self._ticker.remove(self.pacer)

    async def _on_close(self) -> None:
        await self.speech.aclose()

    def _link_changed(self, decision: AudioDecision) -> None:
        self.speech.encoder.target = decision.coding

    def _path_lost(self) -> None:
        """Hold speech while the new path is checked, and send again what the client
        most likely missed since it moved (a room's stream goes on for the others)."""
        self.speech.hold(PATH_LOST_REWIND_MS // FRAME_MS)

    def _path_restored(self, completed: bool) -> None:
        self.speech.release()

    def idle_for(self) -> float:
        if self.speech.speaking:
            self.last_activity = self._clock.now()
        return self._clock.now() - self.last_activity

    # -- data channel -------------------------------------------------------------

    def _on_message(self, raw: str | bytes) -> None:
        received_ms = monotonic_ms()
        self.last_activity = self._clock.now()
        try:
            message = parse_client_message(raw, limits=self._talker.limits)
            self._talker.apply(
                message,
                self.speech.queue,
                self.speech.engine,
                cancel_everyone=True,
                received_ms=received_ms,
            )
        except ClientError as exc:
            count_refusal(self._metrics, exc)
            self.send_event(ErrorEvent.of(exc, _id_of(raw)))

    def stats(self) -> dict[str, Any]:
        return {
            "session_id": self.session_id,
            "connection_state": self.peer.connection_state,
            "queued_utterances": self.speech.pending,
            "dropped_frames": self.track.dropped_frames,
            "rewound_frames": self.speech.rewound_frames,
            "link": self.link_stats(),
            **self.ice_stats(),
            **self.pacer.stats.snapshot().as_dict(),
        }


def _id_of(raw: str | bytes) -> str | None:
    """The ``id`` of a refused message, when it has a usable one, for the error event."""
    try:
        data = loads_json(raw)
    except (ValueError, UnicodeDecodeError):  # JsonTooDeep is a ValueError
        return None
    utterance_id = data.get("id") if isinstance(data, dict) else None
    return utterance_id[:64] if isinstance(utterance_id, str) else None
