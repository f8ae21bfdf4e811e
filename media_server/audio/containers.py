"""Streaming audio encoders for the HTTP TTS API: raw PCM, streamable WAV and Ogg/Opus.

Each formatter turns engine PCM (mono int16 at the engine's rate) into response
body bytes as the PCM arrives: send :meth:`AudioFormatter.header` first, then
what each :meth:`~AudioFormatter.feed` returns, then :meth:`~AudioFormatter.finish`.
Blocking (libswresample, libopus): run ``feed``/``finish`` off the event loop.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import struct
from typing import Final, Protocol

import numpy as np
import numpy.typing as npt

from media_server.audio.encoder import Framer
from media_server.audio.frames import FRAME_SAMPLES, SAMPLE_RATE_HZ
from media_server.audio.opus import OpusEncoder, OpusSettings
from media_server.audio.resampler import StreamResampler

logger = logging.getLogger(__name__)

Pcm = npt.NDArray[np.int16]

FORMATS: Final = ("pcm", "wav", "ogg")
UNKNOWN_SIZE: Final = 0xFFFFFFFF
"""RIFF and data chunk size of a WAV whose length is not known when its header is sent."""
DEFAULT_PRE_SKIP: Final = 312
"""libopus's lookahead at 48 kHz (2.5 ms + 4 ms), used if the encoder cannot be asked."""
FRAMES_PER_PAGE: Final = 3
"""Opus packets per Ogg page at most (60 ms): small pages let a client start decoding early."""
OGG_CRC_POLY: Final = 0x04C11DB7
VENDOR: Final = b"voice-media-server (libopus)"


class AudioFormatter(Protocol):
    content_type: str
    """The response's Content-Type."""

    def header(self) -> bytes:
        """Bytes that open the body, before any audio."""
        ...

    def feed(self, pcm: Pcm) -> bytes:
        """Body bytes for more mono int16 PCM at the source rate (may be empty)."""
        ...

    def finish(self) -> bytes:
        """The body's last bytes, once all PCM has been fed."""
        ...


def _le_bytes(pcm: Pcm) -> bytes:
    return np.ascontiguousarray(pcm, dtype="<i2").tobytes()


class PcmFormatter:
    """Raw signed 16-bit little-endian mono samples at the source rate.

    ``audio/L16`` (RFC 2586) would be the registered type, but it is big-endian;
    ``audio/pcm`` is what TTS APIs commonly send for little-endian s16, and the
    parameters say the rate and channel count a client needs to play it.
    """

    def __init__(self, source_rate_hz: int) -> None:
        self.content_type = f"audio/pcm;rate={source_rate_hz};channels=1"

    def header(self) -> bytes:
        return b""

    def feed(self, pcm: Pcm) -> bytes:
        return _le_bytes(pcm)

    def finish(self) -> bytes:
        return b""


class WavFormatter:
    """16-bit mono WAV at the source rate whose header is sent before the length is known.

    Both chunk sizes are 0xFFFFFFFF, as FFmpeg writes to a pipe: FFmpeg, browsers
    and most players read such a file to its end.
    """

    content_type = "audio/wav"

    def __init__(self, source_rate_hz: int) -> None:
        self.source_rate_hz = source_rate_hz

    def header(self) -> bytes:
        rate = self.source_rate_hz
        fmt = struct.pack("<HHIIHH", 1, 1, rate, rate * 2, 2, 16)  # PCM, mono, s16
        return (
            b"RIFF"
            + struct.pack("<I", UNKNOWN_SIZE)
            + b"WAVE"
            + b"fmt "
            + struct.pack("<I", len(fmt))
            + fmt
            + b"data"
            + struct.pack("<I", UNKNOWN_SIZE)
        )

    def feed(self, pcm: Pcm) -> bytes:
        return _le_bytes(pcm)

    def finish(self) -> bytes:
        return b""


def _crc_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ OGG_CRC_POLY if crc & 0x80000000 else crc << 1) & 0xFFFFFFFF
        table.append(crc)
    return tuple(table)


_CRC_TABLE: Final = _crc_table()


def ogg_crc(data: bytes) -> int:
    """Ogg's CRC-32: polynomial 0x04C11DB7, not reflected, zero initial value and no final xor."""
    crc = 0
    for byte in data:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ _CRC_TABLE[(crc >> 24) ^ byte]
    return crc


class OggPageWriter:
    """Builds the pages of one logical Ogg bitstream (RFC 3533)."""

    BOS: Final = 0x02
    EOS: Final = 0x04

    def __init__(self, serial: int) -> None:
        self.serial = serial
        self.sequence = 0

    def page(self, packets: list[bytes], granule: int, flags: int = 0) -> bytes:
        """One page holding whole ``packets`` (at most 255 lacing values, so ~64 KB)."""
        lacing = bytearray()
        for packet in packets:
            lacing += b"\xff" * (len(packet) // 255) + bytes([len(packet) % 255])
        if len(lacing) > 255:
            raise ValueError("too many packets for one Ogg page")
        header = struct.pack(
            "<4sBBqIIIB", b"OggS", 0, flags, granule, self.serial, self.sequence, 0, len(lacing)
        )
        page = bytearray(header + lacing + b"".join(packets))
        struct.pack_into("<I", page, 22, ogg_crc(bytes(page)))
        self.sequence += 1
        return bytes(page)


def _pre_skip(encoder: OpusEncoder) -> int:
    try:
        return encoder.get(encoder.ctl.get_lookahead)
    except Exception:  # an opuslib without the ctl: libopus's usual value
        logger.debug("opus lookahead unavailable; assuming %d", DEFAULT_PRE_SKIP)
        return DEFAULT_PRE_SKIP


class OggOpusFormatter:
    """Ogg/Opus (RFC 7845): 48 kHz, 20 ms mono packets, a page every few packets.

    The first two pages (OpusHead, OpusTags) are :meth:`header`. Every ``feed``
    returns pages for all the packets it encoded, so nothing waits on the page
    size. Granule positions count 48 kHz samples including the pre-skip; the
    EOS page's granule ends the stream at the last real sample, so decoders drop
    the zero padding of the last frame.
    """

    content_type = "audio/ogg; codecs=opus"

    def __init__(self, source_rate_hz: int, opus: OpusSettings, serial: int | None = None) -> None:
        self._encoder = OpusEncoder(opus)
        self._resampler = StreamResampler(source_rate_hz, SAMPLE_RATE_HZ)
        self._framer = Framer()
        self._writer = OggPageWriter(random.getrandbits(32) if serial is None else serial)
        self.pre_skip = _pre_skip(self._encoder)
        self._samples = 0  # real 48 kHz samples in
        self._packets = 0  # 20 ms packets out
        head = struct.pack("<8sBBHIhB", b"OpusHead", 1, 1, self.pre_skip, source_rate_hz, 0, 0)
        tags = b"OpusTags" + struct.pack("<I", len(VENDOR)) + VENDOR + struct.pack("<I", 0)
        self._header = self._writer.page([head], 0, OggPageWriter.BOS)
        self._header += self._writer.page([tags], 0)

    def header(self) -> bytes:
        return self._header

    def _pages(self, frames: list[Pcm], last: bool = False) -> bytes:
        packets = [self._encoder.encode(frame) for frame in frames]
        out = bytearray()
        for i in range(0, len(packets), FRAMES_PER_PAGE):
            batch = packets[i : i + FRAMES_PER_PAGE]
            self._packets += len(batch)
            final = last and i + FRAMES_PER_PAGE >= len(packets)
            if final:  # end trimming: the stream ends at the last real sample
                out += self._writer.page(batch, self.pre_skip + self._samples, OggPageWriter.EOS)
            else:
                out += self._writer.page(batch, self._packets * FRAME_SAMPLES)
        return bytes(out)

    def feed(self, pcm: Pcm) -> bytes:
        resampled = self._resampler.resample(pcm)
        self._samples += int(resampled.size)
        return self._pages(self._framer.push(resampled))

    def finish(self) -> bytes:
        """The last packets and the EOS page; the formatter is then spent."""
        tail = self._resampler.flush()
        self._samples += int(tail.size)
        # ``pre_skip`` zeros more, so the encoder's lookahead delay does not cut the end off.
        frames = self._framer.push(tail) + self._framer.push(np.zeros(self.pre_skip, np.int16))
        frames += self._framer.flush()
        if not frames:  # the EOS page carries at least one packet
            frames.append(np.zeros(FRAME_SAMPLES, np.int16))
        return self._pages(frames, last=True)


def create_formatter(fmt: str, source_rate_hz: int, opus: OpusSettings) -> AudioFormatter:
    """A formatter for ``fmt`` (one of :data:`FORMATS`); ValueError for any other."""
    if fmt == "pcm":
        return PcmFormatter(source_rate_hz)
    if fmt == "wav":
        return WavFormatter(source_rate_hz)
    if fmt == "ogg":
        return OggOpusFormatter(source_rate_hz, opus)
    raise ValueError(f"unknown audio format {fmt!r}; use one of: {', '.join(FORMATS)}")


def http_opus(settings: OpusSettings) -> OpusSettings:
    """Opus for a container over TCP: nothing is lost, so in-band FEC would only waste bits."""
    return dataclasses.replace(settings, inband_fec=False, expected_loss_pct=0)
