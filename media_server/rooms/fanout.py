"""One encoded stream to many listeners: the room's frame sink."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import av

from media_server.audio.frames import OutgoingFrame
from media_server.rtc.track import EncodedAudioTrack, make_packet

logger = logging.getLogger(__name__)


class FanOut:
    """Sends every frame the room's pacer emits to every joined track.

    Per listener there is only the RTP header, SRTP and the send (each listener's
    :class:`~media_server.rtc.rtp_writer.RtpWriter`); for a track without a writer
    the ``av.Packet`` is built once per tick and the same object queued on each. A
    track added between ticks gets the next frame; ``on_first`` tells its owner
    at which stream position that listener started.
    """

    def __init__(self) -> None:
        self._tracks: dict[EncodedAudioTrack, Callable[[int], None] | None] = {}

    def __len__(self) -> int:
        return len(self._tracks)

    def add(self, track: EncodedAudioTrack, on_first: Callable[[int], None] | None = None) -> None:
        self._tracks[track] = on_first

    def remove(self, track: EncodedAudioTrack) -> None:
        self._tracks.pop(track, None)

    def send(self, frame: OutgoingFrame) -> None:
        if not self._tracks:
            return
        packet: av.Packet[Any] | None = None
        for track, on_first in list(self._tracks.items()):
            writer = track.writer
            if writer is not None:
                writer.write(frame)
            else:
                if packet is None:
                    packet = make_packet(frame)
                track.send_packet(packet)
            if on_first is not None:
                self._tracks[track] = None
                on_first(frame.pts)
