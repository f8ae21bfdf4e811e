"""A caller's incoming audio: aiortc's decoded frames, as mono s16 chunks with their
RTP-clock position. The only place that reads a remote track."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Final

import av
import numpy as np
import numpy.typing as npt
from aiortc import RTCRtpReceiver
from aiortc.jitterbuffer import JitterBuffer
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

logger = logging.getLogger(__name__)

Pcm = npt.NDArray[np.int16]

_S16: Final = frozenset({"s16", "s16p"})

CALLER_PREFETCH_FRAMES: Final = 1
"""Frames aiortc's receiver holds before decoding a caller's audio. Its default (4)
holds 80 ms, most of a caller frame's trip to a bot (``bench.barge_in``); with 1 a frame
is released as soon as the next one's packet arrives (20 ms). A packet arriving after
its successor is then dropped instead of reordered: a 20 ms gap the positions show."""
_JITTER_BUFFER: Final = "_RTCRtpReceiver__jitter_buffer"
"""aiortc 1.16's name for the receiver's jitter buffer (fenced by a test)."""
_JITTER_CAPACITY: Final = 16


def shorten_jitter_buffer(receiver: RTCRtpReceiver) -> bool:
    """Give an audio receiver a jitter buffer that holds :data:`CALLER_PREFETCH_FRAMES`;
    False (and the default kept) where aiortc no longer has the attribute. Call it
    before the first packet arrives (right after the answer)."""
    current = getattr(receiver, _JITTER_BUFFER, None)
    if not isinstance(current, JitterBuffer):
        logger.warning("aiortc's receiver has no %s: caller audio keeps its delay", _JITTER_BUFFER)
        return False
    setattr(receiver, _JITTER_BUFFER, JitterBuffer(_JITTER_CAPACITY, CALLER_PREFETCH_FRAMES))
    return True


@dataclass(frozen=True, slots=True)
class InboundChunk:
    pts: int | None
    """Position of its first sample, in samples at ``rate_hz`` since the stream's first
    packet (aiortc maps RTP timestamps to it); None where the decoder gave none."""
    rate_hz: int
    pcm: Pcm
    """Mono s16 (a stereo decode is averaged)."""


def mono_s16(frame: av.AudioFrame) -> Pcm | None:
    """The frame's samples, mono s16; None for a sample format a decoder of ours never
    gives (only s16 is expected: aiortc decodes Opus, PCMU and PCMA to it)."""
    if frame.format.name not in _S16:
        return None
    channels = len(frame.layout.channels)
    samples = frame.to_ndarray()
    if channels <= 1:
        return np.ascontiguousarray(samples.reshape(-1), dtype=np.int16)
    if channels == 2 and samples.shape[0] == 1:
        # what aiortc's Opus decoder gives: interleaved stereo; halves cannot overflow
        # and stay int16 (half the time of a sum in int32)
        interleaved = np.asarray(samples, dtype=np.int16).reshape(-1)
        stereo: Pcm = (interleaved[0::2] >> 1) + (interleaved[1::2] >> 1)
        return stereo
    # packed: one row of interleaved samples; planar: one row per channel
    by_channel = samples.reshape(-1, channels).T if samples.shape[0] == 1 else samples
    mixed: Pcm = (by_channel.astype(np.int32).sum(axis=0) // channels).astype(np.int16)
    return mixed


def _samples_at(pts: int | None, time_base: Fraction | None, rate_hz: int) -> int | None:
    """``pts`` in samples at ``rate_hz`` (aiortc's audio time base is already 1/rate)."""
    if pts is None:
        return None
    if time_base is None or time_base == Fraction(1, rate_hz):
        return int(pts)
    return int(pts * time_base * rate_hz)


class InboundAudio:
    """Reads a remote audio track. aiortc's receiver decodes in its own thread and
    queues frames to the track without bound, so the reader must keep up: it does no
    more than reshape the samples here."""

    def __init__(self, track: MediaStreamTrack) -> None:
        self._track = track
        self.skipped = 0
        """Frames that could not be read (an unexpected sample format)."""

    async def read(self) -> InboundChunk | None:
        """The next chunk, or None once the track has ended (the peer closed). Cancelling
        a read loses nothing."""
        while True:
            try:
                frame: Any = await self._track.recv()
            except MediaStreamError:
                return None
            if not isinstance(frame, av.AudioFrame):
                self.skipped += 1
                continue
            pcm = mono_s16(frame)
            if pcm is None:
                if not self.skipped:
                    logger.warning("caller audio in %s: frames skipped", frame.format.name)
                self.skipped += 1
                continue
            rate_hz = int(frame.sample_rate)
            return InboundChunk(_samples_at(frame.pts, frame.time_base, rate_hz), rate_hz, pcm)
