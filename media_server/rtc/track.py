"""The outgoing audio track: hands pre-encoded Opus packets to aiortc's sender."""

from __future__ import annotations

import asyncio
import fractions
from typing import Any, Final

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from media_server.audio.frames import SAMPLE_RATE_HZ, OutgoingFrame
from media_server.rtc.rtp_writer import RtpWriter

TIME_BASE: Final = fractions.Fraction(1, SAMPLE_RATE_HZ)
QUEUE_FRAMES: Final = 10
"""If the sender falls this many frames behind, the oldest frames are dropped."""


def make_packet(frame: OutgoingFrame) -> av.Packet[Any]:
    packet = av.Packet(frame.payload)
    packet.pts = frame.pts
    packet.time_base = TIME_BASE
    return packet


class EncodedAudioTrack(MediaStreamTrack):
    """The outgoing audio of one peer: frames already encoded by us.

    Once an :class:`~media_server.rtc.rtp_writer.RtpWriter` is attached, a frame is
    written to the wire at once, inside the pacer's tick. Until then (or where the
    writer cannot be bound) ``recv`` returns it as an ``av.Packet`` to aiortc's
    ``RTCRtpSender``, which packs it as-is (no re-encode, no thread hop); RTP
    timestamps come from the packet's ``pts``. The pacer decides when a frame
    exists; this track only delivers it.
    """

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._queue: asyncio.Queue[av.Packet[Any] | None] = asyncio.Queue(QUEUE_FRAMES)
        self.dropped_frames = 0
        self.first_recv = asyncio.Event()
        """Set when aiortc's sender first asks for a frame: the transport is up."""
        self.writer: RtpWriter | None = None

    def attach_writer(self, writer: RtpWriter) -> None:
        """Send every later frame through ``writer`` instead of aiortc's sender task."""
        if self.readyState == "live":
            self.writer = writer

    def send(self, frame: OutgoingFrame) -> None:
        writer = self.writer
        if writer is not None:
            writer.write(frame)
        else:
            self.send_packet(make_packet(frame))

    def send_packet(self, packet: av.Packet[Any]) -> None:
        """Queue a packet; the same packet object may go to many tracks (fan-out)."""
        if self.readyState != "live":
            return
        if self._queue.full():
            self._queue.get_nowait()
            self.dropped_frames += 1
        self._queue.put_nowait(packet)

    async def recv(self) -> av.Packet[Any]:
        if self.readyState != "live":
            raise MediaStreamError
        self.first_recv.set()
        packet = await self._queue.get()
        if packet is None:
            raise MediaStreamError
        return packet

    def stop(self) -> None:
        self.writer = None
        if self.readyState == "live":
            super().stop()
            while not self._queue.empty():
                self._queue.get_nowait()
            self._queue.put_nowait(None)
