"""Writing our Opus frames as SRTP straight from the ticker, without aiortc's sender task.

aiortc sends a pre-encoded packet through a task per track: the packet is queued,
the sender's task wakes, converts the timestamp with ``Fraction`` arithmetic,
builds an ``RtpPacket`` (and two NTP clock reads for an extension audio never
negotiates), serialises it, and awaits four coroutine layers down to the socket.
At 50 packets a second per listener that was the largest share of the event
loop's time per stream (measured: see docs/performance.md).

An :class:`RtpWriter` does the same job synchronously, inside the pacer's tick: it
patches the marker, sequence number and timestamp into a header serialised once
(with the session's negotiated ``mid`` extension), protects it with the DTLS
transport's SRTP session and hands it to the nominated ICE pair's socket. It keeps
the sender's counters, so aiortc's RTCP sender reports and ``getStats()`` stay
true. aiortc's own sender task stays parked on the track's empty queue.

Where the client negotiated RED (:mod:`media_server.rtc.red`), each packet also repeats
the ``red_distance`` frames before it; the link adaptor sets that distance
per listener, so a room's one encoded stream reaches each with the redundancy its link needs.

It reaches into aiortc/aioice internals (named in :data:`SENDER_COUNTERS`,
:data:`TRANSPORT_COUNTERS` and :func:`RtpWriter.bind`); when they are not there
(another aiortc version) ``bind`` returns ``None`` and frames take aiortc's path.
"""

from __future__ import annotations

import logging
import random
import struct
import time
from collections import deque
from typing import Any, Final

from aiortc import RTCRtpTransceiver
from aiortc.rtcdtlstransport import State
from aiortc.rtcrtpparameters import RTCRtpParameters
from aiortc.rtp import HeaderExtensionsMap, RtpPacket

from media_server.audio.frames import OutgoingFrame
from media_server.link.adaptor import MAX_RED_DISTANCE
from media_server.rtc.red import red_payload

logger = logging.getLogger(__name__)

SENDER_COUNTERS: Final = (
    "_RTCRtpSender__ntp_timestamp",
    "_RTCRtpSender__rtp_timestamp",
    "_RTCRtpSender__octet_count",
    "_RTCRtpSender__packet_count",
)
"""What aiortc's ``RTCRtpSender`` reads for its RTCP sender reports and stats."""

TRANSPORT_COUNTERS: Final = ("_RTCDtlsTransport__tx_bytes", "_RTCDtlsTransport__tx_packets")

NTP_EPOCH_OFFSET_S: Final = 2_208_988_800
"""Seconds from the NTP epoch (1900) to the Unix epoch (1970)."""

_HEADER_FIELDS: Final = struct.Struct("!BHI")  # marker|payload type, sequence, timestamp
RTP_COMPONENT: Final = 1


def ntp_time(unix_s: float) -> int:
    """A Unix time as a 64-bit NTP timestamp (32.32 fixed point)."""
    return int((unix_s + NTP_EPOCH_OFFSET_S) * (1 << 32))


class RtpWriter:
    """Sends one outgoing audio stream's frames; build it with :meth:`bind`."""

    def __init__(
        self,
        sender: Any,
        dtls: Any,
        ice_connection: Any,
        payload_type: int,
        header: bytes,
        red_payload_type: int | None = None,
    ) -> None:
        self._sender = sender
        self._dtls = dtls
        self._nominated: dict[int, Any] = ice_connection._nominated
        self._payload_type = payload_type
        self._header = bytearray(header)
        self._sequence = random.randrange(1 << 15)  # as aiortc: no early wraparound
        self._timestamp_origin = random.getrandbits(32)
        self._last_speech = False
        self._first = True
        self.red_payload_type = red_payload_type
        self.red_distance = 0
        """Earlier frames each packet repeats (0: plain Opus; needs negotiated RED)."""
        self._recent: deque[OutgoingFrame] = deque(maxlen=MAX_RED_DISTANCE + 1)
        self.red_packets = 0
        self.sent = 0
        self.unsent = 0
        """Frames dropped because the transport was not (or no longer) connected."""

    @classmethod
    def bind(
        cls, transceiver: RTCRtpTransceiver, red_payload_type: int | None = None
    ) -> RtpWriter | None:
        """A writer for ``transceiver``'s started sender, or None where this aiortc
        lacks the parts it needs (frames then go through aiortc's sender task)."""
        sender = transceiver.sender
        try:
            dtls = sender.transport
            ice_connection = dtls.transport._connection
            ready = dtls._tx_srtp is not None and isinstance(ice_connection._nominated, dict)
            payload_type = transceiver._codecs[0].payloadType
            extensions = HeaderExtensionsMap()
            extensions.configure(RTCRtpParameters(headerExtensions=transceiver._headerExtensions))
        except (AttributeError, IndexError):
            logger.info("aiortc internals differ; audio goes through aiortc's sender")
            return None
        if not ready or payload_type is None:
            return None
        if not all(hasattr(sender, name) for name in SENDER_COUNTERS) or not all(
            hasattr(dtls, name) for name in TRANSPORT_COUNTERS
        ):
            logger.info("aiortc sender counters differ; audio goes through aiortc's sender")
            return None
        template = RtpPacket(payload_type=payload_type)
        template.ssrc = sender._ssrc
        template.extensions.mid = transceiver.mid
        header = template.serialize(extensions)
        return cls(sender, dtls, ice_connection, payload_type, header, red_payload_type)

    def write(self, frame: OutgoingFrame) -> None:
        """Send ``frame`` now (called from the pacer's tick, on the event loop)."""
        pair = self._nominated.get(RTP_COMPONENT)
        try:
            srtp = self._dtls._tx_srtp
            ready = self._dtls._state is State.CONNECTED and srtp is not None
            transport = pair.protocol.transport if pair is not None and ready else None
        except AttributeError:  # the connection was already released (media_server.rtc.teardown)
            transport = None
        if transport is None or pair is None:
            self.unsent += 1
            return
        # marker: the first packet of the stream and of each talkspurt (RFC 3551)
        marker = self._first or (frame.speech and not self._last_speech)
        self._first = False
        self._last_speech = frame.speech
        timestamp = (self._timestamp_origin + frame.pts) & 0xFFFFFFFF
        payload_type, payload = self._payload(frame)
        header = self._header
        _HEADER_FIELDS.pack_into(header, 1, (marker << 7) | payload_type, self._sequence, timestamp)
        data = srtp.protect(bytes(header) + payload)
        transport.sendto(data, pair.remote_addr)
        self._sequence = (self._sequence + 1) & 0xFFFF
        self.sent += 1
        self._count(timestamp, len(payload), len(data))

    def _payload(self, frame: OutgoingFrame) -> tuple[int, bytes]:
        """The packet's payload type and payload: RED while the link needs it, plain Opus
        otherwise. Silence is repeated too (a few bytes a frame): a receiver conceals a
        lost silence packet as it does speech, and its jitter buffer reacts alike."""
        recent = self._recent
        distance = self.red_distance
        red = self.red_payload_type
        recent.append(frame)
        if red is None or distance <= 0:
            return self._payload_type, frame.payload
        earlier = list(recent)[-distance - 1 : -1]  # the frames before this one, oldest first
        blocks = [(frame.pts - f.pts, f.payload) for f in earlier if f.pts < frame.pts]
        self.red_packets += 1
        return red, red_payload(self._payload_type, frame.payload, blocks)

    def _count(self, timestamp: int, payload_bytes: int, wire_bytes: int) -> None:
        sender, dtls = self._sender, self._dtls
        sender._RTCRtpSender__ntp_timestamp = ntp_time(time.time())
        sender._RTCRtpSender__rtp_timestamp = timestamp
        sender._RTCRtpSender__octet_count += payload_bytes
        sender._RTCRtpSender__packet_count += 1
        dtls._RTCDtlsTransport__tx_bytes += wire_bytes
        dtls._RTCDtlsTransport__tx_packets += 1
