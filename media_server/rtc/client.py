"""PeerClient: one WebRTC client of the server, with its peer, its tasks and its lifecycle."""

from __future__ import annotations

import abc
import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any, Final, Protocol

from media_server.clock import Clock
from media_server.config import Settings
from media_server.link.adaptor import AudioDecision, AudioNetworkAdaptor, LinkReport
from media_server.log_context import current_log_ids, log_context
from media_server.rtc.inbound import InboundAudio
from media_server.rtc.peer import PeerSession
from media_server.rtc.reports import ReportReader
from media_server.rtc.track import EncodedAudioTrack
from media_server.tasks import cancel_and_wait
from media_server.telemetry.metrics import ServerMetrics


class OutgoingEvent(Protocol):
    """An event for the client's data channel (``media_server.speech.events``)."""

    def to_json(self) -> str: ...


logger = logging.getLogger(__name__)

CloseRequest = Callable[[str, str], None]

LINK_POLL_S: Final = 1.0
"""How often a client's newest RTCP report is looked for (Chromium sends one every ~5 s)."""


class PeerClient(abc.ABC):
    """The part every WebRTC client shares, whatever feeds its audio track.

    Owns a :class:`PeerSession`, the outgoing :class:`EncodedAudioTrack` and
    the tasks it spawns; :meth:`aclose` cancels and awaits them and closes the
    peer. Asks its owner to close it (``request_close(client_id, reason)``) when
    the peer fails or closes, stays ``disconnected`` past the grace period, a
    task crashes, or it never connects. With ``metrics``, each new RTCP receiver report,
    each change of the link adaptor's decision and each ICE restart is observed.
    """

    def __init__(
        self,
        client_id: str,
        settings: Settings,
        clock: Clock,
        request_close: CloseRequest,
        *,
        metrics: ServerMetrics | None = None,
        receive_audio: bool = False,
    ) -> None:
        self.client_id = client_id
        self._receive_audio = receive_audio
        """Answer a ``sendrecv`` offer ``sendrecv`` and read the client's audio
        (:meth:`_run_inbound`); otherwise the client may only listen."""
        self._metrics = metrics
        self._settings = settings
        self._clock = clock
        self._request_close = request_close
        self.log_ids = current_log_ids()
        """The log ids bound where it was created (its session, or room and listener),
        bound again for work that starts elsewhere (an ICE restart from a request)."""
        self.track = EncodedAudioTrack()
        self.peer = PeerSession(
            client_id,
            settings.ice_servers,
            self._on_message,
            self._on_state,
            max_remote_candidates=settings.max_remote_candidates,
            red=settings.red_max_distance > 0,
        )
        self.peer.on_restart_settled = self._path_restored
        self.adaptor = AudioNetworkAdaptor(
            settings.opus, settings.red_max_distance, adaptive=settings.audio_adaptation
        )
        self._tasks: set[asyncio.Task[None]] = set()
        self._disconnect_timer: asyncio.TimerHandle | None = None
        self.last_activity = clock.now()
        self.closed = False
        self.events_sent = 0
        self.client: str | None = None
        """The address of the client that created it, for per-client bounds (None: trusted)."""
        self.credential: bytes | None = None
        """An opaque proof (a token's digest) its creator showed; the same is needed to
        change or end it. Set and checked by signaling; None when none was shown."""

    @property
    def connecting(self) -> bool:
        """Not (yet) connected: what a client that never completes ICE holds."""
        return self.peer.connection_state != "connected"

    async def start(self, offer_sdp: str) -> str:
        """Negotiate and start; returns the answer SDP (raises ``OfferError``)."""
        answer = await self.peer.answer(offer_sdp, self.track, receive=self._receive_audio)
        self._spawn(self._watch_connect(), "connect-timeout")
        self._spawn(self._run_media(), "media")
        self._spawn(self._follow_link(), "link")
        if self.peer.inbound is not None:
            self._spawn(self._run_inbound(self.peer.inbound), "inbound")
        return answer

    async def _run_inbound(self, inbound: InboundAudio) -> None:  # noqa: B027 - optional
        """Read the client's audio until it ends or the client closes (only for a client
        made with ``receive_audio`` whose offer sends audio)."""

    @property
    def ice_etag(self) -> str:
        """The WHEP ``ETag`` of the session's ICE generation (see :class:`PeerSession`)."""
        return self.peer.ice_etag

    def is_ice_restart(self, fragment: str) -> bool:
        """Whether a ``PATCH`` body carries new ICE credentials (an ICE restart)."""
        return self.peer.is_ice_restart(fragment)

    def ice_stats(self) -> dict[str, Any]:
        """ICE restarts of this session, for its stats: completed, given up, and how long
        the last one's checks took (None before one completed)."""
        restarts = self.peer.ice_restarts
        last_s = restarts.last_checks_s if restarts is not None else None
        return {
            "ice_restarts": restarts.completed if restarts is not None else 0,
            "ice_restarts_failed": restarts.failed if restarts is not None else 0,
            "ice_restart_checks_ms": None if last_s is None else round(last_s * 1000, 1),
        }

    async def add_trickle(self, fragment: str) -> int:
        """Apply a WHEP ``PATCH`` body (``OfferError`` and subclasses for a refused one:
        the session stays up and nothing of the fragment is applied)."""
        return await self.peer.add_trickle(fragment)

    async def restart_ice(self, fragment: str) -> str:
        """Apply a WHEP ICE-restart ``PATCH`` body; returns the answer fragment (see
        :meth:`PeerSession.restart_ice`). A refused one leaves the session as it was,
        and a restart whose checks never succeed ends nothing by itself."""
        with log_context(**self.log_ids):  # its log lines and checks task carry the ids
            answer = await self.peer.restart_ice(fragment)
            if self._metrics is not None:
                self._metrics.ice_restarts.inc()
            self._path_lost()
        return answer

    def _path_lost(self) -> None:  # noqa: B027 - an optional hook
        """An ICE restart began: the client's old path is dead (what was sent on it
        lately never arrived) until :meth:`_path_restored`."""

    def _path_restored(self, completed: bool) -> None:  # noqa: B027 - an optional hook
        """The restart's checks ended: a new path (``completed``), or consent on the old
        one decides."""

    @abc.abstractmethod
    async def _run_media(self) -> None:
        """Feed ``self.track`` until cancelled (started once negotiation is done)."""

    async def _transport_ready(self) -> None:
        """Wait until aiortc's sender asks for the first frame (DTLS is up), then,
        unless ``direct_rtp`` is off, send the track's frames straight to the wire."""
        await self.track.first_recv.wait()
        if self._settings.direct_rtp:
            writer = self.peer.rtp_writer(self.track)
            if writer is not None:
                writer.red_distance = self.adaptor.decision.red_distance
                self.track.attach_writer(writer)

    async def _follow_link(self) -> None:
        """Feed the client's RTCP receiver reports to its adaptor, and apply what it decides."""
        await self.track.first_recv.wait()
        sender = self.peer.sender_of(self.track)
        if sender is None:
            return
        reader = ReportReader(sender)
        while True:
            await asyncio.sleep(LINK_POLL_S)
            report = await reader.read()
            if report is None:
                continue
            self._observe_report(report)
            before = self.adaptor.decision
            decision = self.adaptor.update(report)
            if decision is not before:
                logger.debug("%s(%s) link: %s", type(self).__name__, self.client_id, decision)
                self._observe_decision(decision)
                writer = self.track.writer
                if writer is not None:
                    writer.red_distance = decision.red_distance
                self._link_changed(decision)

    def _observe_report(self, report: LinkReport) -> None:
        """A report not seen before (the reader gives each once): into the histograms."""
        metrics = self._metrics
        if metrics is None:
            return
        metrics.fraction_lost.observe(min(1.0, max(0.0, report.fraction_lost)))
        metrics.jitter.observe(report.jitter_ms / 1000)
        if report.rtt_ms is not None:
            metrics.rtt.observe(report.rtt_ms / 1000)

    def _observe_decision(self, decision: AudioDecision) -> None:
        metrics = self._metrics
        if metrics is None:
            return
        metrics.link_decisions.labels(
            red_distance=str(decision.red_distance),
            fec=str(decision.inband_fec).lower(),
            congested=str(decision.congested).lower(),
        ).inc()
        metrics.target_bitrate.observe(decision.bitrate_bps)

    def _link_changed(self, decision: AudioDecision) -> None:  # noqa: B027 - an optional hook
        """The adaptor changed its decision: apply the encoder's part of it."""

    def link_stats(self) -> dict[str, Any]:
        """The adaptor's view of the link and what the writer sends (for ``/stats``)."""
        writer = self.track.writer
        return {
            **self.adaptor.snapshot(),
            "red_negotiated": self.peer.red_payload_type is not None,
            "red_packets": 0 if writer is None else writer.red_packets,
        }

    @abc.abstractmethod
    def _on_message(self, raw: str | bytes) -> None:
        """A data-channel message arrived."""

    async def _on_close(self) -> None:  # noqa: B027 - an optional hook
        """Release what the subclass owns; runs after its tasks are cancelled."""

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=f"{name}-{self.client_id}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error(
                "%s(%s) task %s failed",
                type(self).__name__,
                self.client_id,
                task.get_name(),
                exc_info=task.exception(),
            )
            self._request_close(self.client_id, "internal error")

    async def _watch_connect(self) -> None:
        await asyncio.sleep(self._settings.connect_timeout_s)
        if self.peer.connection_state != "connected":
            self._request_close(self.client_id, "connect timeout")

    def _on_state(self, state: str) -> None:
        """aiortc reports no ``disconnected``; ``failed`` comes when consent freshness
        expires or DTLS fails. An ICE restart pauses consent while its checks run, so
        a restart in progress is never closed here; one that never completes hands
        back to consent, and ends here as a lost path would (see ``ice_restart``)."""
        if self._disconnect_timer is not None:
            self._disconnect_timer.cancel()
            self._disconnect_timer = None
        if state in ("failed", "closed"):
            self._request_close(self.client_id, f"peer {state}")
        elif state == "disconnected":
            self._disconnect_timer = asyncio.get_running_loop().call_later(
                self._settings.disconnect_grace_s,
                self._request_close,
                self.client_id,
                "peer disconnected",
            )

    def send_event(self, event: OutgoingEvent) -> None:
        self.send_text(event.to_json())

    def send_text(self, text: str) -> None:
        """An event already serialised (a room's broadcast is encoded once for all)."""
        if self.peer.send(text):
            self.events_sent += 1

    async def aclose(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._disconnect_timer is not None:
            self._disconnect_timer.cancel()
        await cancel_and_wait(*self._tasks)
        await self._on_close()
        self.track.stop()
        await self.peer.close()
