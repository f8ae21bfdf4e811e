"""HTTP body formats: raw PCM, streamable WAV and Ogg/Opus pages written by hand."""

from __future__ import annotations

import io
import struct
import wave
from dataclasses import dataclass

import av
import numpy as np
import pytest

from media_server.audio.containers import (
    FRAMES_PER_PAGE,
    AudioFormatter,
    OggOpusFormatter,
    create_formatter,
    ogg_crc,
)
from media_server.audio.frames import FRAME_SAMPLES, SAMPLE_RATE_HZ
from media_server.audio.opus import OpusSettings

OPUS = OpusSettings()


def tone(rate: int, seconds: float, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (np.sin(2 * np.pi * freq * t) * 10000).astype(np.int16)


def stream(formatter: AudioFormatter, signal: np.ndarray, chunk: int) -> bytes:
    body = formatter.header()
    for start in range(0, signal.size, chunk):
        body += formatter.feed(signal[start : start + chunk])
    return body + formatter.finish()


def decode(body: bytes) -> tuple[np.ndarray, int]:
    """Mono samples and rate of a whole response body, as PyAV (FFmpeg) reads it."""
    with av.open(io.BytesIO(body), mode="r") as container:
        audio = container.streams.audio[0]
        frames = [f.to_ndarray().reshape(-1) for f in container.decode(audio)]
        return np.concatenate(frames).astype(np.float64), audio.rate


def peak_hz(pcm: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(pcm * np.hanning(pcm.size)))
    return float(np.argmax(spectrum) * rate / pcm.size)


def crc_bitwise(data: bytes) -> int:
    """Ogg's CRC one bit at a time, independent of the table the formatter uses."""
    crc = 0
    for byte in data:
        crc ^= byte << 24
        for _ in range(8):
            crc = (crc << 1) ^ 0x04C11DB7 if crc & 0x80000000 else crc << 1
            crc &= 0xFFFFFFFF
    return crc


@dataclass
class Page:
    flags: int
    granule: int
    serial: int
    sequence: int
    packets: list[bytes]


def parse_pages(body: bytes) -> list[Page]:
    """Split an Ogg stream into pages, checking each page's CRC on the way."""
    pages, pos = [], 0
    while pos < len(body):
        assert body[pos : pos + 4] == b"OggS" and body[pos + 4] == 0
        flags, granule, serial, sequence, crc, count = struct.unpack_from("<BqIIIB", body, pos + 5)
        lacing = body[pos + 27 : pos + 27 + count]
        size = 27 + count + sum(lacing)
        page = bytearray(body[pos : pos + size])
        page[22:26] = b"\0\0\0\0"
        assert crc_bitwise(bytes(page)) == crc, f"bad CRC on page {sequence}"
        packets, data, current = [], pos + 27 + count, b""
        for value in lacing:
            current += body[data : data + value]
            data += value
            if value < 255:
                packets.append(current)
                current = b""
        assert current == b"", "a packet continues past its page"
        pages.append(Page(flags, granule, serial, sequence, packets))
        pos += size
    return pages


def test_ogg_crc_matches_the_reference_and_known_values() -> None:
    assert ogg_crc(b"") == 0
    for data in (b"OggS", b"123456789", bytes(range(256)) * 3):
        assert ogg_crc(data) == crc_bitwise(data)
    assert ogg_crc(b"123456789") == 0x89A1897F  # CRC-32/MPEG-2 without init/xor ("BZIP2" kin)


@pytest.mark.parametrize("rate", [16_000, 22_050, 24_000, 48_000])
def test_ogg_opus_decodes_to_the_same_tone_and_length(rate: int) -> None:
    signal = tone(rate, 1.234)
    decoded, decoded_rate = decode(stream(create_formatter("ogg", rate, OPUS), signal, 4410))
    assert decoded_rate == SAMPLE_RATE_HZ
    assert decoded.size / decoded_rate == pytest.approx(signal.size / rate, abs=0.02)
    assert peak_hz(decoded[4800:-4800], decoded_rate) == pytest.approx(440, abs=2)


def test_ogg_pages_follow_rfc_7845() -> None:
    rate = 24_000
    formatter = OggOpusFormatter(rate, OPUS, serial=0x1234ABCD)
    signal = tone(rate, 1.0)
    body = stream(formatter, signal, 2400)
    pages = parse_pages(body)
    head, tags, audio = pages[0], pages[1], pages[2:]
    assert [p.sequence for p in pages] == list(range(len(pages)))
    assert {p.serial for p in pages} == {0x1234ABCD}
    assert head.flags == 0x02 and head.granule == 0 and len(head.packets) == 1
    magic, version, channels, pre_skip, input_rate, gain, family = struct.unpack(
        "<8sBBHIhB", head.packets[0]
    )
    assert (magic, version, channels, input_rate, gain, family) == (b"OpusHead", 1, 1, rate, 0, 0)
    assert pre_skip == formatter.pre_skip == 312
    assert tags.flags == 0 and tags.granule == 0 and tags.packets[0].startswith(b"OpusTags")
    assert all(p.flags == 0 for p in audio[:-1]) and audio[-1].flags == 0x04
    assert all(1 <= len(p.packets) <= FRAMES_PER_PAGE for p in audio)
    # granules count 48 kHz samples of the packets so far; the last one ends at the real end
    packets = 0
    for page in audio[:-1]:
        packets += len(page.packets)
        assert page.granule == packets * FRAME_SAMPLES
    packets += len(audio[-1].packets)
    assert audio[-1].granule == pre_skip + SAMPLE_RATE_HZ  # 1 s of input
    assert audio[-2].granule <= audio[-1].granule <= packets * FRAME_SAMPLES


def test_ogg_streams_pages_as_audio_arrives() -> None:
    formatter = create_formatter("ogg", 48_000, OPUS)
    assert formatter.content_type == "audio/ogg; codecs=opus"
    header = formatter.header()
    assert [p.sequence for p in parse_pages(header)] == [0, 1]
    first = formatter.feed(tone(48_000, 0.02))  # one 20 ms frame is out at once
    assert len(parse_pages(first)) == 1 and len(parse_pages(first)[0].packets) == 1
    assert formatter.feed(tone(48_000, 0.01)) == b""  # half a frame waits for the rest


def test_ogg_small_chunks_and_one_chunk_both_decode() -> None:
    rate = 22_050
    signal = tone(rate, 0.8)
    small = stream(create_formatter("ogg", rate, OPUS), signal, 37)
    large = stream(create_formatter("ogg", rate, OPUS), signal, signal.size)
    for body in (small, large):
        decoded, decoded_rate = decode(body)
        assert decoded.size / decoded_rate == pytest.approx(0.8, abs=0.02)
    # small feeds give smaller pages, but the same packets and the same end
    small_pages, large_pages = parse_pages(small), parse_pages(large)
    assert len(small_pages) > len(large_pages)
    assert sum(len(p.packets) for p in small_pages) == sum(len(p.packets) for p in large_pages)
    assert small_pages[-1].granule == large_pages[-1].granule


def test_ogg_with_no_audio_is_still_a_valid_stream() -> None:
    body = stream(create_formatter("ogg", 24_000, OPUS), np.zeros(0, np.int16), 1)
    pages = parse_pages(body)
    (pre_skip,) = struct.unpack_from("<H", pages[0].packets[0], 10)
    assert pages[-1].flags == 0x04 and pages[-1].granule == pre_skip
    with av.open(io.BytesIO(body)) as container:
        assert container.streams.audio[0].codec_context.name == "opus"


@pytest.mark.parametrize("rate", [16_000, 22_050, 24_000])
def test_wav_streams_with_unknown_length(rate: int) -> None:
    formatter = create_formatter("wav", rate, OPUS)
    assert formatter.content_type == "audio/wav"
    signal = tone(rate, 1.5)
    body = stream(formatter, signal, 1000)
    assert len(formatter.header()) == 44 and body[4:8] == body[40:44] == b"\xff" * 4
    assert formatter.feed(signal[:10]) == signal[:10].astype("<i2").tobytes()
    decoded, decoded_rate = decode(body)
    assert decoded_rate == rate
    np.testing.assert_array_equal(decoded, signal)
    # Python's wave takes the unknown size as a huge frame count but reads to the end
    with wave.open(io.BytesIO(body)) as reader:
        assert reader.getframerate() == rate and reader.getnchannels() == 1
        assert reader.getsampwidth() == 2
        assert len(reader.readframes(reader.getnframes())) == 2 * signal.size


def test_pcm_is_raw_little_endian_samples() -> None:
    formatter = create_formatter("pcm", 24_000, OPUS)
    assert formatter.content_type.startswith("audio/pcm") and "rate=24000" in formatter.content_type
    signal = tone(24_000, 0.5)
    body = stream(formatter, signal, 333)
    assert formatter.header() == b"" and formatter.finish() == b""
    assert len(body) == 2 * signal.size
    np.testing.assert_array_equal(np.frombuffer(body, dtype="<i2"), signal)


def test_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="mp3"):
        create_formatter("mp3", 24_000, OPUS)
