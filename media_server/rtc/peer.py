"""PeerSession: one RTCPeerConnection, its negotiation and its data channel. Knows no text."""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
from collections import deque
from collections.abc import Callable
from typing import Final

from aiortc import (
    RTCConfiguration,
    RTCDataChannel,
    RTCIceCandidate,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpSender,
    RTCRtpTransceiver,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamTrack

from media_server.config import IceServer
from media_server.rtc.errors import (
    IceRestartRefused,
    IceRestartUnsupported,
    InvalidCandidate,
    OfferError,
    StaleIceCredentials,
    TooManyCandidates,
)
from media_server.rtc.fragment import (
    Candidates,
    credentials_of,
    parse_candidates,
    restart_answer,
    ufrag_of,
)
from media_server.rtc.ice import CandidateKey, parse_remote_candidate
from media_server.rtc.ice_restart import (
    RESTART_TIMEOUT_S,
    IceRestart,
    RestartRefused,
    RestartUnsupported,
)
from media_server.rtc.inbound import InboundAudio, shorten_jitter_buffer
from media_server.rtc.offer import MAX_MEDIA_SECTIONS, check_offer
from media_server.rtc.red import answer_with_red, offered_red
from media_server.rtc.rtp_writer import RtpWriter
from media_server.rtc.sctp import quicken_retransmission
from media_server.rtc.teardown import release_peer

logger = logging.getLogger(__name__)


MAX_UNSENT_MESSAGES: Final = 64
"""Events kept for a data channel that is not open yet (RTP may start before it)."""

MAX_PAST_ICE_GENERATIONS: Final = 16
"""Remote ufrags replaced by restarts that are remembered, so their late trickle is stale."""

DEFAULT_MAX_REMOTE_CANDIDATES: Final = 32
"""Remote ICE candidates one session takes (see ``Settings.max_remote_candidates``)."""


_CANDIDATE_LINE = re.compile(r"^a=candidate:(.*)$", re.MULTILINE)
_RESTART_SOLUTION: Final = (
    "send the new a=ice-ufrag and a=ice-pwd lines of the offer made with "
    "createOffer({iceRestart: true}), and its candidates"
)
_CANDIDATE_SOLUTION: Final = (
    "send each candidate as an 'a=candidate:' line as RFC 8839 defines it, "
    "the way RTCPeerConnection's icecandidate event gives it"
)


def _candidate(line: str) -> tuple[RTCIceCandidate, CandidateKey]:
    """A checked candidate from an ``a=candidate:`` line (raises ``OfferError``)."""
    try:
        return parse_remote_candidate(line.removeprefix("a=candidate:"))
    except ValueError as exc:
        raise OfferError(f"bad candidate line {line[:200]!r}: {exc}", _CANDIDATE_SOLUTION) from None


def _ignore_message(raw: str | bytes) -> None:
    """What a closed peer does with a late data-channel message."""


def _ignore_state(state: str) -> None:
    """What a closed peer does with a late state change."""


def _ignore_settled(completed: bool) -> None:
    """What a peer nobody listens to does when a restart's checks end."""


class PeerSession:
    """Owns one ``RTCPeerConnection``.

    It answers an offer with ``track`` as the outgoing audio, takes trickled
    candidates, forwards data-channel text to ``on_message`` and connection
    state changes to ``on_state``. It never sees PCM or text semantics.
    """

    def __init__(
        self,
        label: str,
        ice_servers: tuple[IceServer, ...],
        on_message: Callable[[str | bytes], None],
        on_state: Callable[[str], None],
        *,
        max_remote_candidates: int = DEFAULT_MAX_REMOTE_CANDIDATES,
        red: bool = True,
    ) -> None:
        self.label = label
        self._red = red
        self.red_payload_type: int | None = None
        """RED's payload type where the client offered it and the answer took it."""
        self._max_remote_candidates = max_remote_candidates
        self._on_message = on_message
        self._on_state = on_state
        self.on_restart_settled: Callable[[bool], None] = _ignore_settled
        """Told when an ICE restart's checks end (True: audio has a path again)."""
        config = RTCConfiguration(
            iceServers=[
                RTCIceServer(urls=list(s.urls), username=s.username, credential=s.credential)
                for s in ice_servers
            ]
        )
        self.pc = RTCPeerConnection(configuration=config)
        self.channel: RTCDataChannel | None = None
        self.inbound: InboundAudio | None = None
        """The client's audio, where :meth:`answer` was asked to receive it and the
        offer sends it."""
        self._unsent: deque[str] = deque(maxlen=MAX_UNSENT_MESSAGES)
        self._remote_ufrag: str | None = None
        self._past_ufrags: deque[str] = deque(maxlen=MAX_PAST_ICE_GENERATIONS)
        self._remote_candidates: set[CandidateKey] = set()
        self._trickling: set[asyncio.Future[None]] = set()
        """One future per :meth:`add_trickle` inside aiortc, for :meth:`close` to await."""
        self._ice_tag = secrets.token_hex(8)
        self._ice_restart: IceRestart | None = None
        self.ice_restart_timeout_s = RESTART_TIMEOUT_S
        """How long a restart's checks may run (see :mod:`media_server.rtc.ice_restart`)."""
        self._closing = False
        self._released = False
        self.pc.on("connectionstatechange", self._state_changed)
        self.pc.on("datachannel", self._channel_opened)

    @property
    def ice_etag(self) -> str:
        """The WHEP ``ETag`` of the session's ICE state: a new one after each restart,
        so a trickle ``PATCH`` meant for an older ICE generation can be told apart."""
        return f'"{self._ice_tag}"'

    @property
    def ice_restarts(self) -> IceRestart | None:
        """The session's ICE restarts (counts, last duration); None before the first."""
        return self._ice_restart

    @property
    def connection_state(self) -> str:
        return "closed" if self._released else str(self.pc.connectionState)

    def _state_changed(self) -> None:
        logger.debug("PeerSession(%s) connection %s", self.label, self.pc.connectionState)
        self._on_state(self.pc.connectionState)

    def _channel_opened(self, channel: RTCDataChannel) -> None:
        if self.channel is not None:
            logger.info("PeerSession(%s) ignoring extra data channel %s", self.label, channel.label)
            return
        self.channel = channel
        channel.on("message", self._on_message)
        channel.on("open", self._flush)
        self._flush()

    def _flush(self) -> None:
        channel = self.channel
        while self._unsent and channel is not None and channel.readyState == "open":
            channel.send(self._unsent.popleft())

    async def answer(
        self, offer_sdp: str, track: MediaStreamTrack, *, receive: bool = False
    ) -> str:
        """Apply the offer, attach ``track`` to its audio transceiver, return the answer SDP.

        With ``receive`` (a caller), a ``sendrecv`` audio offer is answered ``sendrecv``
        and :attr:`inbound` reads what the client sends; otherwise the answer is
        ``sendonly``.
        """
        check_offer(offer_sdp)
        # the offer's own candidates go the same way as trickled ones: checked, and counted
        # (each m= section may list them again, so the lines are bounded once per section)
        lines = offer_sdp.count("a=candidate:")
        if lines > self._max_remote_candidates * MAX_MEDIA_SECTIONS:
            raise self._too_many(lines, "the offer has", OfferError)
        for line in _CANDIDATE_LINE.finditer(offer_sdp):
            self._remote_candidates.add(_candidate(line.group(0).strip())[1])
        if len(self._remote_candidates) > self._max_remote_candidates:
            raise self._too_many(len(self._remote_candidates), "the offer has", OfferError)
        try:
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
        except Exception as exc:  # aiortc's parser raises assorted types, AssertionError too
            raise OfferError(
                f"the SDP offer could not be used: {exc or type(exc).__name__}",
                "send the unmodified offer SDP from RTCPeerConnection.createOffer()",
            ) from exc
        if self.pc.sctp is not None:
            quicken_retransmission(self.pc.sctp)
        audio = [t for t in self.pc.getTransceivers() if t.kind == "audio"]
        if not audio:
            raise OfferError("the offer has no usable audio section", "offer an audio transceiver")
        self.pc.addTrack(track)
        # Answer sendonly unless this client's audio is read: for a sendrecv offer this
        # keeps the client from sending microphone audio that nothing here would read
        # (aiortc would decode it and queue it without bound). A recvonly offer makes
        # even a receiving answer sendonly (aiortc ANDs the two directions).
        audio[0].direction = "sendrecv" if receive else "sendonly"
        try:
            answer = await self.pc.createAnswer()
            await self.pc.setLocalDescription(answer)
        except OSError:
            raise  # the server's own sockets, not the offer
        except Exception as exc:  # e.g. ValueError for a second m=application section
            raise OfferError(
                f"the SDP offer could not be answered: {exc or type(exc).__name__}",
                "offer one recvonly audio transceiver and at most one data channel, "
                "as RTCPeerConnection.createOffer() does",
            ) from exc
        if receive and audio[0].currentDirection == "sendrecv":
            shorten_jitter_buffer(audio[0].receiver)
            self.inbound = InboundAudio(audio[0].receiver.track)
        ufrag = re.search(r"^a=ice-ufrag:(\S+)", offer_sdp, re.MULTILINE)
        self._remote_ufrag = ufrag.group(1) if ufrag else None
        return self._with_red(offer_sdp, str(self.pc.localDescription.sdp), audio[0])

    def _with_red(self, offer_sdp: str, answer_sdp: str, audio: RTCRtpTransceiver) -> str:
        """The answer, taking the offer's RED over the negotiated Opus where there is one.

        Not where the client's audio is read: RED in a ``sendrecv`` answer lets the
        browser send RED too, which aiortc's receiver cannot unpack (its packets would
        be dropped); that client's downlink keeps in-band FEC."""
        codecs = getattr(audio, "_codecs", None) or []
        opus = codecs[0] if codecs and codecs[0].mimeType.lower() == "audio/opus" else None
        if not self._red or self.inbound is not None or opus is None or opus.payloadType is None:
            return answer_sdp
        red = offered_red(offer_sdp, opus.payloadType)
        if red is None:
            return answer_sdp
        self.red_payload_type = red
        return answer_with_red(answer_sdp, red, opus.payloadType)

    def sender_of(self, track: MediaStreamTrack) -> RTCRtpSender | None:
        """The sender that carries ``track`` (None once released)."""
        if self._released:
            return None
        for transceiver in self.pc.getTransceivers():
            if transceiver.sender.track is track:
                return transceiver.sender
        return None

    def rtp_writer(self, track: MediaStreamTrack) -> RtpWriter | None:
        """A direct writer for ``track``'s RTP once its sender has started, or None."""
        if self._released:
            return None
        for transceiver in self.pc.getTransceivers():
            if transceiver.sender.track is track:
                return RtpWriter.bind(transceiver, self.red_payload_type)
        return None

    def is_ice_restart(self, sdpfrag: str) -> bool:
        """Whether ``sdpfrag`` carries ICE credentials other than the session's."""
        ufrag = ufrag_of(sdpfrag)
        return ufrag not in (None, self._remote_ufrag) and ufrag not in self._past_ufrags

    async def add_trickle(self, sdpfrag: str) -> int:
        """Apply an ``application/trickle-ice-sdpfrag`` body; returns candidates added.

        The whole fragment is checked before aiortc sees any of it, so a refused one
        (``OfferError``, ``TooManyCandidates``) changes nothing. A candidate already
        known (same component, transport, address and port) is skipped, as RFC 8838
        section 9 says; each new one costs aioice a re-sort of its check list, so
        :attr:`_max_remote_candidates` bounds the work as well as the count.
        A fragment with new credentials is an ICE restart (:meth:`restart_ice`).
        """
        if self._closing:
            return 0
        if ufrag_of(sdpfrag) not in (None, self._remote_ufrag):
            raise StaleIceCredentials(
                "the fragment's a=ice-ufrag is not the session's current one",
                "trickle the current ICE generation's candidates; restart with 'If-Match: *'",
            )
        candidates = self._candidates(sdpfrag, self._remote_candidates)
        self._remote_candidates |= candidates.keys
        return await self._add_candidates(list(candidates.new), candidates.end)

    def _restart_settled(self, completed: bool) -> None:
        self.on_restart_settled(completed)

    async def restart_ice(self, sdpfrag: str) -> str:
        """Restart ICE with the client's new credentials and candidates in ``sdpfrag``;
        returns the answer fragment: the server's new credentials and its candidates.

        The session keeps its DTLS, SRTP, data channel and RTP streams: only the path
        changes (see :mod:`media_server.rtc.ice_restart`). Anything refused
        (``OfferError`` and subclasses) leaves the session as it was.
        """
        if self._closing:
            raise IceRestartRefused("the session is closing", "POST a new offer")
        remote = credentials_of(sdpfrag)
        if remote is None:
            raise OfferError("an ICE restart needs a=ice-ufrag and a=ice-pwd", _RESTART_SOLUTION)
        try:
            remote.check()
        except ValueError as exc:
            raise OfferError(str(exc), _RESTART_SOLUTION) from None
        candidates = self._candidates(sdpfrag, set())
        if self._ice_restart is None:
            try:
                self._ice_restart = IceRestart.of(self.pc, self.label, self.ice_restart_timeout_s)
                self._ice_restart.on_settled = self._restart_settled
            except RestartUnsupported as exc:
                raise IceRestartUnsupported(
                    f"ICE restart is not available for this session: {exc}",
                    "DELETE this session and POST a new offer (bundled, as browsers make it)",
                ) from None
        try:
            local = await self._ice_restart.begin(remote)
        except RestartUnsupported as exc:  # internals gone since (not expected)
            raise IceRestartUnsupported(str(exc), "DELETE the session, POST a new offer") from None
        except RestartRefused as exc:
            raise IceRestartRefused(
                f"the session's ICE cannot be restarted now: {exc}",
                "restart once the session has connected; or DELETE it and POST a new offer",
            ) from None
        if self._remote_ufrag is not None:
            self._past_ufrags.append(self._remote_ufrag)
        self._remote_ufrag = remote.ufrag
        self._remote_candidates = set(candidates.keys)
        self._ice_tag = secrets.token_hex(8)
        await self._add_candidates(list(candidates.new), candidates.end)
        first = self.pc.getTransceivers()[0]
        gathered = self._ice_restart.local_candidates()
        return restart_answer(first.kind, first.mid or "0", local, gathered)

    def _candidates(self, sdpfrag: str, known: set[CandidateKey]) -> Candidates:
        """The fragment's new candidates; raises (changing nothing) for a bad or an
        excess one."""
        # more lines than the session may ever take: refused before parsing any (each costs a parse)
        lines = sdpfrag.count("a=candidate:")
        if lines > self._max_remote_candidates:
            raise self._too_many(lines, "this fragment has")
        transceivers = self.pc.getTransceivers()
        try:
            mid = (transceivers[0].mid if transceivers else None) or "0"
            found = parse_candidates(sdpfrag, known, mid)
        except ValueError as exc:
            raise InvalidCandidate(str(exc), _CANDIDATE_SOLUTION) from None
        count = len(known) + len(found.keys)
        if count > self._max_remote_candidates:
            raise self._too_many(count, "this session would have")
        return found

    def _too_many(
        self, count: int, subject: str, kind: type[OfferError] = TooManyCandidates
    ) -> OfferError:
        """An offer with too many is an ``invalid_offer``; a trickle ``too_many_candidates``."""
        return kind(
            f"{subject} {count} remote ICE candidates, "
            f"at most {self._max_remote_candidates} are taken",
            "send only the candidates your ICE agent gathered (a browser has fewer "
            "than 20), each once; the operator can raise VMS_MAX_REMOTE_CANDIDATES",
        )

    async def _add_candidates(self, candidates: list[RTCIceCandidate], end: bool) -> int:
        """Hand checked candidates to aiortc; :meth:`close` waits for this to end,
        as aioice may still be resolving an mDNS name when the peer closes."""
        busy: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._trickling.add(busy)
        added = 0
        try:
            for candidate in candidates:
                if self._closing:
                    return added
                await self.pc.addIceCandidate(candidate)
                added += 1
            if end and not self._closing:
                await self.pc.addIceCandidate(None)
            return added
        finally:
            self._trickling.discard(busy)
            busy.set_result(None)

    def send(self, text: str) -> bool:
        """Send on the data channel; before it is open, keep the message (the newest
        :data:`MAX_UNSENT_MESSAGES`) for when it opens. False once it has closed."""
        if self._released:
            return False
        channel = self.channel
        if channel is None or channel.readyState == "connecting":
            self._unsent.append(text)
            return True
        if channel.readyState != "open":
            return False
        self._flush()
        channel.send(text)
        return True

    async def close(self) -> None:
        """Close the connection, then free its parts at once (no garbage collection
        needed, see :mod:`media_server.rtc.teardown`)."""
        if self._released:
            return
        self._closing = True
        if self._ice_restart is not None:
            await self._ice_restart.close()
        try:
            await self.pc.close()
            closed_cleanly = True
        except Exception:
            # aiortc half-built from an offer it then could not answer: what is left
            # of it is for the garbage collector, not for release_peer
            logger.warning("PeerSession(%s) did not close cleanly", self.label, exc_info=True)
            closed_cleanly = False
        if self._released:  # closed meanwhile by another task
            return
        self._released = True
        self.channel = None
        self.inbound = None
        self._unsent.clear()
        # the owner's callbacks point back at it: drop them, so nothing is cyclic
        self._on_message = _ignore_message
        self._on_state = _ignore_state
        self.on_restart_settled = _ignore_settled
        if closed_cleanly:
            await release_peer(self.pc, busy=list(self._trickling))
