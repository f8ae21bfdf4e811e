"""Tempo change without pitch change: length, pitch, seams, passthrough and speed."""

from __future__ import annotations

import numpy as np
import pytest

from synthesis.stretch import WINDOW_MS, TimeStretcher

RATE = 24_000
WINDOW = RATE * WINDOW_MS // 1000
CHUNK_SIZES = [1, 7, 333, 1000, 4410, 17, 2400]  # uneven, like an engine's chunks


def tone(seconds: float, freq: float = 440.0, rate: int = RATE) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (np.sin(2 * np.pi * freq * t) * 10000).astype(np.int16)


def voice_like(seconds: float, rate: int = RATE) -> np.ndarray:
    """Harmonics of a gliding 120-180 Hz fundamental with a syllable-rate envelope."""
    t = np.arange(int(rate * seconds)) / rate
    phase = 2 * np.pi * np.cumsum(150 + 30 * np.sin(2 * np.pi * 0.7 * t)) / rate
    signal = np.zeros_like(t)
    for k in range(1, 15):
        signal += np.sin(k * phase) / k
    signal *= 0.6 + 0.4 * np.sin(8 * np.pi * t)
    return (signal / float(np.abs(signal).max()) * 12000).astype(np.int16)


def whole(signal: np.ndarray, speed: float, rate: int = RATE) -> np.ndarray:
    stretcher = TimeStretcher(rate, speed)
    return np.concatenate([stretcher.process(signal), stretcher.flush()])


def chunked(signal: np.ndarray, speed: float) -> tuple[np.ndarray, list[int]]:
    """The stretched signal fed in uneven chunks, and where each call's output began."""
    stretcher = TimeStretcher(RATE, speed)
    pieces, pos, i = [], 0, 0
    while pos < signal.size:
        size = CHUNK_SIZES[i % len(CHUNK_SIZES)]
        pieces.append(stretcher.process(signal[pos : pos + size]))
        pos, i = pos + size, i + 1
    pieces.append(stretcher.flush())
    seams = np.cumsum([0] + [p.size for p in pieces])[1:-1].tolist()
    return np.concatenate(pieces), seams


def peak_hz(pcm: np.ndarray, rate: int = RATE) -> float:
    trimmed = pcm[WINDOW:-WINDOW].astype(np.float64)
    spectrum = np.abs(np.fft.rfft(trimmed * np.hanning(trimmed.size)))
    return float(np.argmax(spectrum) * rate / trimmed.size)


def max_step(pcm: np.ndarray) -> int:
    return int(np.abs(np.diff(pcm.astype(np.int32))).max())


@pytest.mark.parametrize("speed", [0.5, 0.8, 1.25, 2.0])
@pytest.mark.parametrize("signal", [tone(2.0), voice_like(2.0)], ids=["tone", "voice"])
def test_length_follows_the_speed(signal: np.ndarray, speed: float) -> None:
    out = whole(signal, speed)
    assert out.dtype == np.int16
    assert abs(out.size - signal.size / speed) <= WINDOW


@pytest.mark.parametrize("speed", [0.5, 0.8, 1.25, 2.0])
def test_pitch_is_kept(speed: float) -> None:
    out = whole(tone(2.0), speed)
    assert peak_hz(out) == pytest.approx(440, abs=2)
    # and the level: the overlap-added windows sum to one, so the tone is not dimmed
    assert np.abs(out[WINDOW:-WINDOW]).max() == pytest.approx(10000, rel=0.02)


@pytest.mark.parametrize("speed", [0.5, 1.25])
def test_voice_harmonics_stay_in_place(speed: float) -> None:
    # a fixed 200 Hz fundamental with harmonics: every harmonic stays on a multiple of 200 Hz
    t = np.arange(RATE * 2) / RATE
    harmonics = np.zeros_like(t)
    for k in range(1, 6):
        harmonics += np.sin(2 * np.pi * 200 * k * t) / k
    signal = (harmonics * 6000).astype(np.int16)
    out = whole(signal, speed)
    assert peak_hz(out) == pytest.approx(200, abs=2)
    trimmed = out[WINDOW:-WINDOW].astype(np.float64)
    spectrum = np.abs(np.fft.rfft(trimmed * np.hanning(trimmed.size)))
    bin_hz = RATE / trimmed.size
    for k in range(2, 5):
        lo, hi = int((200 * k - 20) / bin_hz), int((200 * k + 20) / bin_hz)
        assert abs(np.argmax(spectrum[lo:hi]) + lo - 200 * k / bin_hz) <= 2 / bin_hz


@pytest.mark.parametrize("speed", [0.5, 0.8, 1.25, 2.0])
@pytest.mark.parametrize("signal", [tone(2.0), voice_like(2.0)], ids=["tone", "voice"])
def test_chunked_stream_matches_one_shot_without_seams(signal: np.ndarray, speed: float) -> None:
    expected = whole(signal, speed)
    got, seams = chunked(signal, speed)
    np.testing.assert_array_equal(got, expected)
    # no clicks anywhere, seams included: no step bigger than the input's own steepest
    limit = max_step(signal) * 1.1
    assert max_step(got) <= limit
    for seam in seams:
        if 0 < seam < got.size:
            assert abs(int(got[seam]) - int(got[seam - 1])) <= limit


def test_speed_one_is_an_exact_passthrough() -> None:
    signal = voice_like(1.0)
    stretcher = TimeStretcher(RATE, 1.0)
    got = np.concatenate([stretcher.process(signal[:100]), stretcher.process(signal[100:])])
    np.testing.assert_array_equal(got, signal)
    assert stretcher.flush().size == 0


@pytest.mark.parametrize("samples", [0, 1, 10, 700])
def test_short_and_empty_streams(samples: int) -> None:
    out = whole(tone(1.0)[:samples], 0.5)
    assert out.size == samples * 2 and out.dtype == np.int16


def test_rejects_out_of_range_settings() -> None:
    for speed in (0.49, 2.01):
        with pytest.raises(ValueError, match="speed"):
            TimeStretcher(RATE, speed)
    with pytest.raises(ValueError, match="sample_rate_hz"):
        TimeStretcher(0, 1.5)


@pytest.mark.parametrize("rate", [16_000, 22_050, 48_000])
def test_other_rates(rate: int) -> None:
    out = whole(tone(1.0, rate=rate), 1.5, rate=rate)
    assert out.size == round(rate / 1.5)
    assert peak_hz(out, rate) == pytest.approx(440, abs=3)
