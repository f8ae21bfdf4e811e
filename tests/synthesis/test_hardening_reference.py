"""Reference audio from untrusted clients: crafted headers are refused before they cost memory."""

from __future__ import annotations

import base64
import struct
import subprocess
import sys
import textwrap

import pytest

from synthesis import ClientError
from synthesis.base import EngineCapabilities
from synthesis.capabilities import reference_check
from synthesis.reference import MAX_SOURCE_CHANNELS, decode_reference_audio
from synthesis.request import Mode, ReferenceAudio, RequestError, RequestLimits, parse_request

LIMITS = RequestLimits()
FLAC_BOMB_BLOCK = 16_384
"""The review's bomb: 16384-sample blocks at 1 Hz, each 16384 s of audio in 11 bytes."""
RSS_GROWTH_LIMIT_MB = 200


def _crc8(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = ((crc << 1) ^ 0x07) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def _crc16(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x8005) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    return crc


def flac_bomb(stream_rate_hz: int = 1, frame_rates_hz: tuple[int, ...] = (0, 0, 0)) -> bytes:
    """A valid FLAC of constant 16-bit mono blocks, built byte by byte.

    ``stream_rate_hz`` goes in STREAMINFO; each frame either takes it (0) or names its
    own rate in its header (FLAC allows a different rate per frame).
    """
    info = struct.pack(">HH", FLAC_BOMB_BLOCK, FLAC_BOMB_BLOCK) + bytes(6)
    info += ((stream_rate_hz << 44) | (15 << 36)).to_bytes(8, "big") + bytes(16)
    out = b"fLaC" + bytes([0x80]) + len(info).to_bytes(3, "big") + info
    for number, rate_hz in enumerate(frame_rates_hz):
        # sync + fixed blocksize; block code 14 (16384), rate code 0 (STREAMINFO) or
        # 13 (16-bit Hz at the end of the header); mono, 16 bits; frame number.
        header = bytes([0xFF, 0xF8, 0xE0 | (13 if rate_hz else 0), 0x08, number])
        if rate_hz:
            header += rate_hz.to_bytes(2, "big")
        header += bytes([_crc8(header)])
        frame = header + b"\x00" + struct.pack(">h", 4096)  # a CONSTANT subframe
        out += frame + _crc16(frame).to_bytes(2, "big")
    return out


def wav_header(rate_hz: int, channels: int, data_bytes: int, bits: int = 16) -> bytes:
    block_align = channels * bits // 8
    fmt = struct.pack("<HHIIHH", 1, channels, rate_hz, rate_hz * block_align, block_align, bits)
    riff_size = min(4 + 8 + len(fmt) + 8 + data_bytes, 0xFFFFFFFF)
    return (
        b"RIFF" + struct.pack("<I", riff_size) + b"WAVE"
        + b"fmt " + struct.pack("<I", len(fmt)) + fmt
        + b"data" + struct.pack("<I", data_bytes)
    )  # fmt: skip


def tone_s16(samples: int, channels: int = 1) -> bytes:
    one = struct.pack("<h", 8000) + struct.pack("<h", -8000)
    return one * (samples * channels // 2)


def refused(blob: bytes) -> RequestError:
    with pytest.raises(ClientError) as caught:
        decode_reference_audio(blob, LIMITS)
    assert caught.value.field == "reference_audio" and caught.value.solution
    return caught.value


def test_the_reviews_81_byte_flac_bomb_is_refused_by_its_header() -> None:
    blob = flac_bomb()
    assert len(blob) < 100
    error = refused(blob)
    assert error.code == "reference_undecodable"
    assert "1 Hz" in error.message


def test_a_frame_with_its_own_absurd_rate_is_refused_before_resampling() -> None:
    # STREAMINFO and the first frame are a plausible 44.1 kHz; later frames say 1 Hz.
    error = refused(flac_bomb(44_100, (44_100, 1, 1)))
    assert error.code == "reference_undecodable"
    assert "frame" in error.message and "1 Hz" in error.message


@pytest.mark.parametrize(
    ("rate_hz", "channels", "needle"),
    [(1, 1, "1 Hz"), (7_999, 1, "7999 Hz"), (384_000, 1, "384000 Hz"), (16_000, 16, "16 channels")],
)
def test_wav_headers_with_absurd_rates_or_channels_are_refused(
    rate_hz: int, channels: int, needle: str
) -> None:
    samples = 4_000
    blob = wav_header(rate_hz, channels, samples * channels * 2) + tone_s16(samples, channels)
    error = refused(blob)
    assert error.code == "reference_undecodable"
    assert needle in error.message
    assert channels <= MAX_SOURCE_CHANNELS or str(MAX_SOURCE_CHANNELS) in error.message


def test_a_wav_claiming_a_huge_data_chunk_decodes_only_what_is_there() -> None:
    seconds = 2
    blob = wav_header(16_000, 1, 0xFFFFFFF0) + tone_s16(16_000 * seconds)
    audio = decode_reference_audio(blob, LIMITS)
    assert audio.duration_s == pytest.approx(seconds, abs=0.05)


def test_a_long_wav_stops_at_the_limit_counted_in_source_samples() -> None:
    blob = wav_header(8_000, 1, 8_000 * 2 * 40) + tone_s16(8_000 * 40)
    assert refused(blob).code == "reference_too_long"


BOMB_CHILD = textwrap.dedent(
    """
    import resource, sys
    from synthesis.reference import decode_reference_audio
    from synthesis.request import RequestError, RequestLimits

    def rss_mb():
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        raise AssertionError("no VmHWM")

    blobs = [bytes.fromhex(h) for h in sys.argv[1:]]
    before = rss_mb()
    # Keep a regression from taking the machine with it: fail with MemoryError instead.
    limit = 4 << 30
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    for blob in blobs:
        try:
            decode_reference_audio(blob, RequestLimits())
        except RequestError as exc:
            print(exc.code)
        else:
            print("accepted")
    print(f"growth_mb={rss_mb() - before:.1f}")
    """
)


@pytest.mark.slow
def test_bombs_cost_less_than_200_mb_of_memory() -> None:
    # A fresh process, so the peak RSS (VmHWM) is this decode's, not an earlier test's.
    blobs = [
        flac_bomb(),
        flac_bomb(44_100, (44_100, 1, 1)),
        wav_header(1, 1, 0xFFFFFFF0) + tone_s16(4_000),
    ]
    done = subprocess.run(
        [sys.executable, "-c", BOMB_CHILD, *(b.hex() for b in blobs)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.split()
    assert lines[:3] == ["reference_undecodable"] * 3
    growth_mb = float(lines[3].removeprefix("growth_mb="))
    assert growth_mb < RSS_GROWTH_LIMIT_MB


# -- refusing before decoding -----------------------------------------------------------

PIPER_LIKE = EngineCapabilities(frozenset({Mode.SFT}), 22_050, ("en-US",))
CLONING = EngineCapabilities(
    frozenset({Mode.SFT, Mode.ZERO_SHOT, Mode.CROSS_LINGUAL, Mode.INSTRUCT}),
    24_000,
    ("zh",),
    cloning=True,
)


def must_not_decode(blob: bytes, limits: RequestLimits) -> ReferenceAudio:
    raise AssertionError("reference audio was decoded")


@pytest.mark.parametrize(
    ("capabilities", "mode", "field"),
    [
        (PIPER_LIKE, "sft", "reference_audio"),
        (PIPER_LIKE, "cross_lingual", "mode"),
        (CLONING, "sft", "reference_audio"),
    ],
)
def test_reference_audio_the_engine_cannot_use_is_refused_before_decoding(
    capabilities: EngineCapabilities, mode: str, field: str
) -> None:
    data = {"text": "hi", "mode": mode, "reference_audio": base64.b64encode(flac_bomb()).decode()}
    with pytest.raises(ClientError) as caught:
        parse_request(data, LIMITS, must_not_decode, reference_check("test", capabilities))
    assert caught.value.code == "unsupported"
    assert caught.value.field == field


def test_cloning_modes_still_decode() -> None:
    decoded: list[bytes] = []

    def decoder(blob: bytes, limits: RequestLimits) -> ReferenceAudio:
        decoded.append(blob)
        return decode_reference_audio(blob, limits)

    clip = wav_header(16_000, 1, 16_000 * 2 * 2) + tone_s16(16_000 * 2)
    data = {
        "text": "hi",
        "mode": "cross_lingual",
        "reference_audio": base64.b64encode(clip).decode(),
    }
    request = parse_request(data, LIMITS, decoder, reference_check("test", CLONING))
    assert decoded == [clip]
    assert request.reference_audio is not None
    assert request.reference_audio.duration_s == pytest.approx(2.0, abs=0.05)
