"""Decode a voice-cloning reference clip (WAV/MP3/OGG/FLAC bytes) to 16 kHz mono float32."""

from __future__ import annotations

import io
import logging
from typing import Final

import av
import numpy as np
import numpy.typing as npt

from synthesis.request import REFERENCE_RATE_HZ, ReferenceAudio, RequestError, RequestLimits

logger = logging.getLogger(__name__)

FIELD: Final = "reference_audio"
SILENCE_PEAK_DBFS: Final = -50.0
"""A clip whose loudest sample is below this is treated as silence."""
SILENCE_PEAK: Final = 10 ** (SILENCE_PEAK_DBFS / 20)
LENGTH_SLACK_S: Final = 0.1
"""Codec padding (MP3 frames, Opus pre-skip) may decode a clip a little longer than recorded."""
FORMATS: Final = "WAV, MP3, OGG (Vorbis or Opus) or FLAC"
MIN_SOURCE_RATE_HZ: Final = 8_000
MAX_SOURCE_RATE_HZ: Final = 192_000
"""Sample rates a recording of a voice can have; anything else is a crafted header
(an 81-byte FLAC at 1 Hz claimed hours of audio and resampled to gigabytes)."""
MAX_SOURCE_CHANNELS: Final = 8
MAX_FRAME_SAMPLES: Final = 65_536
"""Samples per channel in one decoded frame: FLAC's largest block (65535) fits, and one
frame then holds at most a few megabytes whatever the header claims."""


def _sniff_format(blob: bytes) -> str | None:
    """The demuxer for ``blob`` from its magic bytes; None if it is none of ours.

    Naming the demuxer ourselves keeps FFmpeg from probing its way into
    playlist or concat formats that would open other files or URLs.
    """
    if blob[:4] == b"RIFF" and blob[8:12] == b"WAVE":
        return "wav"
    if blob[:4] == b"OggS":
        return "ogg"
    if blob[:4] == b"fLaC":
        return "flac"
    if blob[:3] == b"ID3" or (len(blob) > 1 and blob[0] == 0xFF and blob[1] & 0xE0 == 0xE0):
        return "mp3"
    return None


def _undecodable(message: str) -> RequestError:
    return RequestError(
        "reference_undecodable", message, f"send a {FORMATS} file, base64-encoded", field=FIELD
    )


def _too_long(limits: RequestLimits) -> RequestError:
    return RequestError(
        "reference_too_long",
        f"is longer than {limits.max_reference_s:g} s",
        f"trim the clip to at most {limits.max_reference_s:g} s of speech",
        field=FIELD,
    )


def _check_shape(rate_hz: int, channels: int, what: str) -> None:
    """Refuse rates and channel counts no voice recording has, before any sample is made."""
    if not MIN_SOURCE_RATE_HZ <= rate_hz <= MAX_SOURCE_RATE_HZ:
        raise _undecodable(
            f"{what} a sample rate of {rate_hz} Hz; "
            f"{MIN_SOURCE_RATE_HZ}-{MAX_SOURCE_RATE_HZ} Hz is accepted"
        )
    if not 1 <= channels <= MAX_SOURCE_CHANNELS:
        raise _undecodable(f"{what} {channels} channels; 1-{MAX_SOURCE_CHANNELS} are accepted")


def _decode(
    container: av.container.InputContainer, limits: RequestLimits
) -> npt.NDArray[np.float32]:
    """All of the first audio stream, averaged to mono at 16 kHz; stops once over the maximum.

    Length is counted in source samples as frames are decoded, before resampling, so
    a clip that claims hours of audio costs one frame's work, not hours of samples.
    """
    if not container.streams.audio:
        raise _undecodable("contains no audio stream")
    stream = container.streams.audio[0]
    header_rate_hz = stream.codec_context.sample_rate
    if header_rate_hz:  # 0: not in the header; every frame is checked below anyway
        _check_shape(header_rate_hz, stream.codec_context.layout.nb_channels, "declares")
    # Planar float keeps each channel's samples apart, so the downmix is a plain mean.
    resampler = av.AudioResampler(format="fltp", rate=REFERENCE_RATE_HZ)
    max_s = limits.max_reference_s + LENGTH_SLACK_S
    max_samples = int(max_s * REFERENCE_RATE_HZ)
    chunks: list[npt.NDArray[np.float32]] = []
    total = 0
    source_s = 0.0

    def collect(frames: list[av.AudioFrame]) -> None:
        nonlocal total
        for frame in frames:
            mono = frame.to_ndarray().astype(np.float32).mean(axis=0, dtype=np.float32)
            chunks.append(mono)
            total += mono.size
        if total > max_samples:
            raise _too_long(limits)

    for packet in container.demux(stream):
        for frame in packet.decode():
            # A frame may carry its own rate and layout (FLAC does): check each one.
            _check_shape(frame.sample_rate, frame.layout.nb_channels, "has a frame with")
            if frame.samples > MAX_FRAME_SAMPLES:
                raise _undecodable(
                    f"has a frame of {frame.samples} samples; at most {MAX_FRAME_SAMPLES} "
                    "are accepted"
                )
            source_s += frame.samples / frame.sample_rate
            if source_s > max_s:
                raise _too_long(limits)
            collect(resampler.resample(frame))
    collect(resampler.resample(None))
    if not chunks:
        return np.zeros(0, dtype=np.float32)
    return np.clip(np.concatenate(chunks), -1.0, 1.0)


def decode_reference_audio(blob: bytes, limits: RequestLimits) -> ReferenceAudio:
    """Decode, downmix and resample a reference clip; raises :class:`RequestError`.

    Blocking and CPU-bound (FFmpeg decoding, tens of milliseconds for a
    30 s clip): callers on an event loop run it in an executor.
    """
    if len(blob) > limits.max_reference_bytes:
        raise RequestError(
            "reference_too_large",
            f"is {len(blob)} bytes; the limit is {limits.max_reference_bytes}",
            f"send at most {limits.max_reference_s:g} s of audio, or a compressed format",
            field=FIELD,
        )
    fmt = _sniff_format(blob)
    if fmt is None:
        raise _undecodable(f"is not a {FORMATS} file")
    try:
        with av.open(io.BytesIO(blob), mode="r", format=fmt) as container:
            pcm = _decode(container, limits)
    except RequestError:
        raise
    except (av.FFmpegError, ValueError) as exc:  # PyAV reports some malformed input as ValueError
        logger.debug("reference audio (%s, %d bytes) failed to decode: %s", fmt, len(blob), exc)
        raise _undecodable(f"could not be decoded as {fmt.upper()}") from None
    if pcm.size == 0:
        raise _undecodable("contains no audio samples")
    pcm = pcm[: int(limits.max_reference_s * REFERENCE_RATE_HZ)]
    audio = ReferenceAudio(pcm=pcm)
    if audio.duration_s < limits.min_reference_s:
        raise RequestError(
            "reference_too_short",
            f"is {audio.duration_s:.2f} s long; at least {limits.min_reference_s:g} s is needed",
            f"send a clip of {limits.min_reference_s:g} to {limits.max_reference_s:g} s of speech",
            field=FIELD,
        )
    peak = float(np.max(np.abs(pcm)))
    if peak < SILENCE_PEAK:
        raise RequestError(
            "reference_silent",
            f"is silent (peak {20 * np.log10(max(peak, 1e-10)):.0f} dBFS)",
            "record the clip again with the speaker audible",
            field=FIELD,
        )
    logger.debug("reference audio: %s, %.2f s, peak %.3f", fmt, audio.duration_s, peak)
    return audio
