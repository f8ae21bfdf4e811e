"""PeerSession: one RTCPeerConnection, its negotiation and its data channel. Knows no text."""

from __future__ import annotations

import logging
import re
from collections import deque
from collections.abc import Callable
from typing import Final

from aiortc import (
    RTCConfiguration,
    RTCDataChannel,
    RTCIceServer,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamTrack
from aiortc.sdp import candidate_from_sdp

from media_server.config import IceServer
from media_server.rtp_writer import RtpWriter
from media_server.teardown import release_peer

logger = logging.getLogger(__name__)


MAX_UNSENT_MESSAGES: Final = 64
"""Events kept for a data channel that is not open yet (RTP may start before it)."""


class OfferError(ValueError):
    """An SDP offer (or trickle fragment) that cannot be used."""

    def __init__(self, message: str, solution: str) -> None:
        super().__init__(message)
        self.message = message
        self.solution = solution


class IceRestartUnsupported(OfferError):
    pass


_MEDIA = re.compile(r"^m=(\w+) ", re.MULTILINE)


def check_offer(sdp: str) -> None:
    """Cheap structural checks before any WebRTC work is done."""
    if not sdp.lstrip().startswith("v=0"):
        raise OfferError("the body is not an SDP offer", "send the offer SDP, starting with 'v=0'")
    kinds = _MEDIA.findall(sdp)
    if "audio" not in kinds:
        raise OfferError(
            "the offer has no audio section",
            "add a recvonly audio transceiver before creating the offer",
        )


def _ignore_message(raw: str | bytes) -> None:
    """What a closed peer does with a late data-channel message."""


def _ignore_state(state: str) -> None:
    """What a closed peer does with a late state change."""


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
    ) -> None:
        self.label = label
        self._on_message = on_message
        self._on_state = on_state
        config = RTCConfiguration(
            iceServers=[
                RTCIceServer(urls=list(s.urls), username=s.username, credential=s.credential)
                for s in ice_servers
            ]
        )
        self.pc = RTCPeerConnection(configuration=config)
        self.channel: RTCDataChannel | None = None
        self._unsent: deque[str] = deque(maxlen=MAX_UNSENT_MESSAGES)
        self._remote_ufrag: str | None = None
        self._released = False
        self.pc.on("connectionstatechange", self._state_changed)
        self.pc.on("datachannel", self._channel_opened)

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

    async def answer(self, offer_sdp: str, track: MediaStreamTrack) -> str:
        """Apply the offer, attach ``track`` to its audio transceiver, return the answer SDP."""
        check_offer(offer_sdp)
        try:
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
        except Exception as exc:  # aiortc's parser raises assorted types, AssertionError too
            raise OfferError(
                f"the SDP offer could not be used: {exc or type(exc).__name__}",
                "send the unmodified offer SDP from RTCPeerConnection.createOffer()",
            ) from exc
        audio = [t for t in self.pc.getTransceivers() if t.kind == "audio"]
        if not audio:
            raise OfferError("the offer has no usable audio section", "offer an audio transceiver")
        self.pc.addTrack(track)
        # Always answer sendonly: for a sendrecv offer this keeps the client from
        # sending microphone audio that nothing here would read (aiortc would
        # queue it without bound).
        audio[0].direction = "sendonly"
        answer = await self.pc.createAnswer()
        await self.pc.setLocalDescription(answer)
        ufrag = re.search(r"^a=ice-ufrag:(\S+)", offer_sdp, re.MULTILINE)
        self._remote_ufrag = ufrag.group(1) if ufrag else None
        return str(self.pc.localDescription.sdp)

    def rtp_writer(self, track: MediaStreamTrack) -> RtpWriter | None:
        """A direct writer for ``track``'s RTP once its sender has started, or None."""
        if self._released:
            return None
        for transceiver in self.pc.getTransceivers():
            if transceiver.sender.track is track:
                return RtpWriter.bind(transceiver)
        return None

    async def add_trickle(self, sdpfrag: str) -> int:
        """Apply an ``application/trickle-ice-sdpfrag`` body; returns candidates added."""
        if self._released:
            return 0
        ufrag = re.search(r"^a=ice-ufrag:(\S+)", sdpfrag, re.MULTILINE)
        if ufrag and self._remote_ufrag and ufrag.group(1) != self._remote_ufrag:
            raise IceRestartUnsupported(
                "ICE restart is not supported by this server",
                "DELETE this session and POST a new offer",
            )
        mid_match = re.search(r"^a=mid:(\S+)", sdpfrag, re.MULTILINE)
        transceivers = self.pc.getTransceivers()
        default_mid = (
            mid_match.group(1) if mid_match else (transceivers[0].mid if transceivers else "0")
        )
        added = 0
        for line in sdpfrag.splitlines():
            line = line.strip()
            if line.startswith("a=mid:"):
                default_mid = line[len("a=mid:") :]
            elif line.startswith("a=candidate:"):
                try:
                    candidate = candidate_from_sdp(line[len("a=candidate:") :])
                except (ValueError, IndexError, AssertionError) as exc:
                    raise OfferError(
                        f"bad candidate line {line!r}: {exc}",
                        "send candidates as 'a=candidate:...' lines (RFC 8840)",
                    ) from exc
                candidate.sdpMid = default_mid
                await self.pc.addIceCandidate(candidate)
                added += 1
            elif line == "a=end-of-candidates":
                await self.pc.addIceCandidate(None)
        return added

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
        needed, see :mod:`media_server.teardown`)."""
        if self._released:
            return
        await self.pc.close()
        if self._released:  # closed meanwhile by another task
            return
        self._released = True
        self.channel = None
        self._unsent.clear()
        # the owner's callbacks point back at it: drop them, so nothing is cyclic
        self._on_message = _ignore_message
        self._on_state = _ignore_state
        await release_peer(self.pc)
