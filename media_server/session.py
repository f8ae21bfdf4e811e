"""VoiceSession: wires one peer, one speaker and one pacer together for a WHEP client."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
from collections.abc import Callable
from typing import Any

from media_server.clock import Clock
from media_server.config import Settings
from media_server.opus import OpusEncoder
from media_server.pacer import Pacer
from media_server.peer import PeerSession
from media_server.protocol import (
    CancelMessage,
    ClientMessage,
    ProtocolError,
    SayMessage,
    TextDeltaMessage,
    TextDoneMessage,
    checked_request,
    parse_client_message,
    queue_full,
    rate_limited,
)
from media_server.rate import TokenBucket
from media_server.speaker import Speaker
from media_server.track import EncodedAudioTrack
from synthesis import (
    RequestLimits,
    SynthesisRequest,
    SynthesisService,
)

logger = logging.getLogger(__name__)


class VoiceSession:
    """A 1:1 voice session: text arrives on the data channel, speech leaves as Opus RTP.

    Owns its tasks (pacer, speaker producer); :meth:`aclose` cancels and awaits
    them and closes the peer. Asks its owner to close it through ``request_close``
    when the peer fails, disconnects for too long, or never connects.
    """

    def __init__(
        self,
        session_id: str,
        settings: Settings,
        synthesis: SynthesisService,
        clock: Clock,
        silence_payload: bytes,
        request_close: Callable[[str, str], None],
        *,
        voice_id: str | None = None,
        encode_executor: concurrent.futures.Executor | None = None,
    ) -> None:
        self.session_id = session_id
        self._settings = settings
        self._clock = clock
        self._request_close = request_close
        self.track = EncodedAudioTrack()
        self.peer = PeerSession(session_id, settings.ice_servers, self._on_message, self._on_state)
        self._engine = synthesis.engine
        self._voice_id = voice_id
        self._limits = RequestLimits(max_text_chars=settings.max_text_chars)
        self.speaker = Speaker(
            synthesis,
            OpusEncoder(settings.opus),
            self._send_event,
            encode_executor=encode_executor,
            max_queued=settings.max_queued_utterances,
        )
        self.pacer = Pacer(self.speaker, self.track, clock, silence_payload)
        self._rate = TokenBucket(settings.say_rate_per_s, settings.say_burst, clock)
        self._tasks: set[asyncio.Task[None]] = set()
        self._disconnect_timer: asyncio.TimerHandle | None = None
        self.last_activity = clock.now()
        self.created_at = clock.now()
        self.closed = False
        self.events_sent = 0

    # -- lifecycle --------------------------------------------------------------

    async def start(self, offer_sdp: str) -> str:
        """Negotiate and start; returns the answer SDP (raises ``OfferError``)."""
        answer = await self.peer.answer(offer_sdp, self.track)
        self.speaker.start()
        self._spawn(self._run_pacer(), "pacer")
        self._spawn(self._watch_connect(), "connect-timeout")
        return answer

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=f"{name}-{self.session_id}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error(
                "VoiceSession(%s) task %s failed",
                self.session_id,
                task.get_name(),
                exc_info=task.exception(),
            )
            self._request_close(self.session_id, "internal error")

    async def _run_pacer(self) -> None:
        # RTP starts when aiortc's sender first asks for a frame (DTLS is up):
        # the first packet on the wire is stream position 0.
        await self.track.first_recv.wait()
        await self.pacer.run()

    async def _watch_connect(self) -> None:
        await asyncio.sleep(self._settings.connect_timeout_s)
        if self.peer.connection_state != "connected":
            self._request_close(self.session_id, "connect timeout")

    def _on_state(self, state: str) -> None:
        if self._disconnect_timer is not None:
            self._disconnect_timer.cancel()
            self._disconnect_timer = None
        if state in ("failed", "closed"):
            self._request_close(self.session_id, f"peer {state}")
        elif state == "disconnected":
            self._disconnect_timer = asyncio.get_running_loop().call_later(
                self._settings.disconnect_grace_s,
                self._request_close,
                self.session_id,
                "peer disconnected",
            )

    def idle_for(self) -> float:
        if self.speaker.speaking:
            self.last_activity = self._clock.now()
        return self._clock.now() - self.last_activity

    async def aclose(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._disconnect_timer is not None:
            self._disconnect_timer.cancel()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.speaker.aclose()
        self.track.stop()
        await self.peer.close()

    # -- data channel -------------------------------------------------------------

    def _send_event(self, event: dict[str, Any]) -> None:
        if self.peer.send(json.dumps(event, separators=(",", ":"))):
            self.events_sent += 1

    def _on_message(self, raw: str | bytes) -> None:
        self.last_activity = self._clock.now()
        try:
            self._handle(parse_client_message(raw, limits=self._limits))
        except ProtocolError as exc:
            self._send_event(exc.event(_id_of(raw)))

    def _checked(self, request: SynthesisRequest) -> SynthesisRequest:
        return checked_request(self._engine, request, self._voice_id)

    def _take_rate_token(self) -> None:
        if not self._rate.take():
            raise rate_limited(self._settings.say_burst, self._settings.say_rate_per_s)

    def _handle(self, message: ClientMessage) -> None:
        try:
            if isinstance(message, CancelMessage):
                self.speaker.cancel()
            elif isinstance(message, SayMessage):
                request = self._checked(message.request)
                self._take_rate_token()
                self.speaker.say(request, message.utterance_id)
            elif isinstance(message, TextDeltaMessage):
                if self.speaker.text_delta_opens(message.utterance_id):
                    self._take_rate_token()
                base = self._checked(SynthesisRequest(text=message.text or " "))
                self.speaker.text_delta(message.text, base, message.utterance_id)
            elif isinstance(message, TextDoneMessage):
                if self.speaker.text_done(message.utterance_id) is None:
                    raise ProtocolError(
                        "no_open_text",
                        "there is no streamed text to finish",
                        "send 'text.done' after 'text.delta' messages, with the same 'id'",
                    )
        except OverflowError:
            raise queue_full(self.speaker.pending, self.speaker.max_queued) from None

    def stats(self) -> dict[str, Any]:
        pacing = self.pacer.stats.snapshot().as_dict()
        pacing["underruns"] = self.speaker.underruns
        return {
            "session_id": self.session_id,
            "connection_state": self.peer.connection_state,
            "queued_utterances": self.speaker.pending,
            "dropped_frames": self.track.dropped_frames,
            **pacing,
        }


def _id_of(raw: str | bytes) -> str | None:
    """The ``id`` of a refused message, when it has a usable one, for the error event."""
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    utterance_id = data.get("id") if isinstance(data, dict) else None
    return utterance_id[:64] if isinstance(utterance_id, str) else None
