"""Decoding voice-cloning reference clips: formats, downmix, resampling and every rejection."""

from __future__ import annotations

import io
import struct
from typing import Any

import av
import numpy as np
import pytest

from synthesis import ClientError
from synthesis.reference import decode_reference_audio
from synthesis.request import REFERENCE_RATE_HZ, RequestError, RequestLimits

LIMITS = RequestLimits()


def voice_like(rate: int, seconds: float, amplitude: float = 0.5) -> np.ndarray:
    """Harmonics of a 140 Hz voice with a slow syllable-rate envelope, float32."""
    t = np.arange(int(rate * seconds)) / rate
    wave = np.zeros_like(t)
    for k in range(1, 12):
        wave += np.sin(2 * np.pi * 140 * k * t) / k
    envelope = 0.6 + 0.4 * np.sin(2 * np.pi * 4 * t)
    signal = wave * envelope
    return (signal / float(np.abs(signal).max()) * amplitude).astype(np.float32)


def sine(rate: int, seconds: float, freq: float = 440.0, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (np.sin(2 * np.pi * freq * t) * amplitude).astype(np.float32)


def encode(fmt: str, codec: str, rate: int, channels: np.ndarray, **options: Any) -> bytes:
    """A real file in ``fmt`` from planar float ``channels`` (shape: channels x samples)."""
    layout = "stereo" if channels.shape[0] == 2 else "mono"
    buffer = io.BytesIO()
    with av.open(buffer, "w", format=fmt, options=options) as container:
        stream = container.add_stream(codec, rate=rate, layout=layout)
        assert isinstance(stream, av.AudioStream)
        if codec == "vorbis":  # FFmpeg's native Vorbis encoder is marked experimental
            stream.codec_context.options = {"strict": "experimental"}
        for start in range(0, channels.shape[1], 1024):
            chunk = np.ascontiguousarray(channels[:, start : start + 1024])
            frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=layout)
            frame.sample_rate = rate
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buffer.getvalue()


def wav(signal: np.ndarray, rate: int = 16_000) -> bytes:
    return encode("wav", "pcm_s16le", rate, signal.reshape(1, -1))


def peak_hz(pcm: np.ndarray, rate: int = REFERENCE_RATE_HZ) -> float:
    spectrum = np.abs(np.fft.rfft(pcm.astype(np.float64)))
    return float(np.argmax(spectrum) * rate / pcm.size)


def rejection(blob: bytes, limits: RequestLimits = LIMITS) -> RequestError:
    with pytest.raises(ClientError) as caught:
        decode_reference_audio(blob, limits)
    assert caught.value.field == "reference_audio"
    assert caught.value.solution
    return caught.value


@pytest.mark.parametrize(
    ("fmt", "codec", "rate", "n_channels"),
    [
        ("wav", "pcm_s16le", 44_100, 2),
        ("wav", "pcm_s16le", 16_000, 1),
        ("mp3", "libmp3lame", 44_100, 2),
        ("mp3", "libmp3lame", 22_050, 1),
        ("ogg", "vorbis", 48_000, 2),
        ("ogg", "libopus", 48_000, 1),
        ("ogg", "libopus", 48_000, 2),
        ("flac", "flac", 22_050, 1),
        ("flac", "flac", 48_000, 2),
    ],
)
def test_decodes_each_format_to_16khz_mono_float(
    fmt: str, codec: str, rate: int, n_channels: int
) -> None:
    tone = sine(rate, 2.0)
    blob = encode(fmt, codec, rate, np.tile(tone, (n_channels, 1)))
    audio = decode_reference_audio(blob, LIMITS)
    assert audio.sample_rate_hz == REFERENCE_RATE_HZ
    assert audio.pcm.dtype == np.float32 and audio.pcm.ndim == 1
    assert audio.duration_s == pytest.approx(2.0, abs=0.06)
    assert float(np.abs(audio.pcm).max()) == pytest.approx(0.5, abs=0.05)
    assert peak_hz(audio.pcm) == pytest.approx(440, abs=2)


def test_voice_like_clip_keeps_its_fundamental_and_level() -> None:
    signal = voice_like(22_050, 3.0)
    audio = decode_reference_audio(wav(signal, 22_050), LIMITS)
    assert audio.duration_s == pytest.approx(3.0, abs=0.01)
    assert float(np.abs(audio.pcm).max()) == pytest.approx(0.5, abs=0.03)
    assert peak_hz(audio.pcm) == pytest.approx(140, abs=2)


def test_stereo_is_averaged_to_mono() -> None:
    left = sine(44_100, 1.5, amplitude=0.8)
    blob = encode("wav", "pcm_s16le", 44_100, np.stack([left, np.zeros_like(left)]))
    audio = decode_reference_audio(blob, LIMITS)
    assert float(np.abs(audio.pcm).max()) == pytest.approx(0.4, abs=0.01)


def test_values_stay_within_full_scale() -> None:
    # lossy codecs overshoot a full-scale square wave; the result is clipped to [-1, 1]
    square = np.sign(sine(44_100, 1.5, freq=200)).astype(np.float32)
    audio = decode_reference_audio(encode("mp3", "libmp3lame", 44_100, square[None]), LIMITS)
    assert float(np.abs(audio.pcm).max()) <= 1.0


def test_mp3_without_id3_tag_is_recognised() -> None:
    blob = encode("mp3", "libmp3lame", 44_100, sine(44_100, 1.5)[None], id3v2_version="0")
    assert blob[0] == 0xFF
    assert decode_reference_audio(blob, LIMITS).duration_s == pytest.approx(1.5, abs=0.06)


def test_rejects_a_file_over_the_byte_limit() -> None:
    blob = wav(sine(16_000, 2.0))
    error = rejection(blob, RequestLimits(max_reference_bytes=len(blob) - 1))
    assert error.code == "reference_too_large"


def test_rejects_a_clip_over_the_duration_limit() -> None:
    error = rejection(wav(sine(16_000, 3.0)), RequestLimits(max_reference_s=2.0))
    assert error.code == "reference_too_long"
    assert "2 s" in error.message


def test_a_clip_at_the_duration_limit_is_accepted() -> None:
    audio = decode_reference_audio(wav(sine(16_000, 2.0)), RequestLimits(max_reference_s=2.0))
    assert audio.duration_s == pytest.approx(2.0, abs=1e-3)


def test_stops_decoding_once_over_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    real = av.AudioResampler
    seen: list[int] = []

    class Counting:
        def __init__(self, **kwargs: Any) -> None:
            self._inner = real(**kwargs)

        def resample(self, frame: av.AudioFrame | None) -> list[av.AudioFrame]:
            seen.append(0 if frame is None else frame.samples)
            return self._inner.resample(frame)

    blob = encode("flac", "flac", 16_000, sine(16_000, 20.0)[None])
    monkeypatch.setattr(av, "AudioResampler", Counting)
    assert rejection(blob, RequestLimits(max_reference_s=2.0)).code == "reference_too_long"
    assert 2.0 * 16_000 < sum(seen) < 3.0 * 16_000  # a 20 s file, read no further than 3 s


def test_rejects_a_clip_under_the_minimum() -> None:
    error = rejection(wav(sine(16_000, 0.5)))
    assert error.code == "reference_too_short"
    assert "0.50 s" in error.message


@pytest.mark.parametrize("amplitude", [0.0, 10 ** (-60 / 20)])
def test_rejects_silence(amplitude: float) -> None:
    error = rejection(wav(sine(16_000, 2.0, amplitude=amplitude)))
    assert error.code == "reference_silent"


def test_quiet_but_audible_speech_is_accepted() -> None:
    quiet = voice_like(16_000, 2.0, amplitude=10 ** (-40 / 20))
    assert decode_reference_audio(wav(quiet), LIMITS).duration_s == pytest.approx(2.0, abs=1e-3)


@pytest.mark.parametrize(
    "blob",
    [
        b"",
        b"hello, this is not audio at all" * 10,
        np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes(),
        b"RIFF\x24\x00\x00\x00WAVE" + b"\x00" * 64,
        b"OggS" + b"\x00" * 200,
        b"fLaC" + b"\x01" * 200,
        b"ID3" + b"\x00" * 200,
    ],
    ids=["empty", "text", "noise", "wav-magic", "ogg-magic", "flac-magic", "id3-magic"],
)
def test_rejects_undecodable_data(blob: bytes) -> None:
    assert rejection(blob).code == "reference_undecodable"


def test_rejects_a_truncated_file() -> None:
    blob = encode("ogg", "libopus", 48_000, sine(48_000, 2.0)[None])
    assert rejection(blob[:100]).code == "reference_undecodable"


def test_rejects_a_wav_with_no_samples() -> None:
    fmt = struct.pack("<HHIIHH", 1, 1, 16_000, 32_000, 2, 16)
    blob = b"RIFF" + struct.pack("<I", 36) + b"WAVEfmt " + struct.pack("<I", 16) + fmt
    error = rejection(blob + b"data" + struct.pack("<I", 0))
    assert error.code == "reference_undecodable"
    assert "no audio samples" in error.message


def test_rejects_a_file_with_no_audio_stream() -> None:
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="ogg") as container:
        stream = container.add_stream("libvpx", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        for _ in range(3):
            image = av.VideoFrame.from_ndarray(np.zeros((64, 64, 3), np.uint8), format="rgb24")
            for packet in stream.encode(image):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    error = rejection(buffer.getvalue())
    assert error.code == "reference_undecodable"
    assert "no audio stream" in error.message
