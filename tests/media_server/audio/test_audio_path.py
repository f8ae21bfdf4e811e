"""Resampling, framing and Opus encoding of engine PCM."""

from __future__ import annotations

import numpy as np
import pytest

from media_server.audio.budget import EncodeBudget
from media_server.audio.encoder import Framer, StreamEncoder, UtteranceEncoder, leading_silence
from media_server.audio.frames import FRAME_SAMPLES, SAMPLE_RATE_HZ
from media_server.audio.opus import (
    WIDEBAND_MAX_COMPLEXITY,
    WIDEBAND_RATE_HZ,
    CodingTarget,
    OpusEncoder,
    OpusSettings,
    _load_opuslib,
    bundled_libopus,
    encode_silence,
    libopus_version,
)
from media_server.audio.resampler import StreamResampler


def tone(rate: int, seconds: float, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (np.sin(2 * np.pi * freq * t) * 10000).astype(np.int16)


@pytest.mark.parametrize("rate", [16_000, 22_050, 24_000, 44_100])
def test_streaming_resample_has_no_seams(rate: int) -> None:
    signal = tone(rate, 1.0)
    whole = StreamResampler(rate)
    expected = np.concatenate([whole.resample(signal), whole.flush()])
    chunked = StreamResampler(rate)
    sizes = [1, 7, 333, 1000, 4410]  # uneven chunk sizes, like an engine's
    pieces, pos, i = [], 0, 0
    while pos < signal.size:
        n = sizes[i % len(sizes)]
        pieces.append(chunked.resample(signal[pos : pos + n]))
        pos += n
        i += 1
    pieces.append(chunked.flush())
    got = np.concatenate(pieces)
    assert got.size == expected.size == SAMPLE_RATE_HZ
    np.testing.assert_array_equal(got, expected)
    # and it is a real 440 Hz tone at 48 kHz: the spectrum peaks at 440 Hz
    spectrum = np.abs(np.fft.rfft(got[2000:-2000].astype(np.float64)))
    peak_hz = np.argmax(spectrum) * SAMPLE_RATE_HZ / (got.size - 4000)
    assert peak_hz == pytest.approx(440, abs=2)


def test_framer_cuts_960_sample_frames_and_pads_the_last() -> None:
    framer = Framer()
    frames = framer.push(np.ones(2000, dtype=np.int16))
    assert [f.size for f in frames] == [FRAME_SAMPLES, FRAME_SAMPLES]
    assert framer.pending_samples == 80
    frames += framer.push(np.ones(900, dtype=np.int16))
    assert len(frames) == 3 and framer.pending_samples == 20
    last = framer.flush()
    assert len(last) == 1 and last[0].size == FRAME_SAMPLES
    assert last[0][:20].tolist() == [1] * 20 and not last[0][20:].any()
    assert framer.flush() == []


def test_the_libopus_pyav_ships_is_the_one_encoding() -> None:
    bundled = bundled_libopus()
    assert bundled is not None, "PyAV's wheel ships libopus in av.libs"
    _load_opuslib()
    from opuslib.api import libopus

    assert libopus._name == bundled  # preferred to any system copy
    major, minor = (int(v) for v in libopus_version().split()[1].split(".")[:2])
    assert (major, minor) >= (1, 4)


def test_encoder_applies_our_settings() -> None:
    settings = OpusSettings(bitrate_bps=24_000, complexity=5, inband_fec=True, expected_loss_pct=15)
    encoder = OpusEncoder(settings)
    assert encoder.get(encoder.ctl.get_bitrate) == 24_000
    assert encoder.get(encoder.ctl.get_complexity) == 5
    assert encoder.get(encoder.ctl.get_inband_fec) == 1
    assert encoder.get(encoder.ctl.get_packet_loss_perc) == 15
    off = OpusEncoder(OpusSettings(inband_fec=False))
    assert off.get(off.ctl.get_inband_fec) == 0


def test_a_links_target_reaches_the_encoder_from_the_next_batch() -> None:
    stream = StreamEncoder(OpusSettings())
    utterance = UtteranceEncoder(stream, 22_050)
    utterance.feed(tone(22_050, 0.1))
    encoder = utterance.encoder
    assert encoder is not None and encoder.get(encoder.ctl.get_inband_fec) == 1
    stream.target = CodingTarget(40_000, inband_fec=False, expected_loss_pct=0, dtx=True)
    utterance.feed(tone(22_050, 0.1))
    assert encoder.get(encoder.ctl.get_bitrate) == 40_000
    assert encoder.get(encoder.ctl.get_inband_fec) == 0
    assert encoder.get(encoder.ctl.get_packet_loss_perc) == 0
    assert encoder.get(encoder.ctl.get_dtx) == 1
    # a new encoder (another complexity's rate) starts with the target too
    fresh = stream.for_complexity(1)
    assert fresh is not encoder and fresh.get(fresh.ctl.get_bitrate) == 40_000


@pytest.mark.parametrize(("complexity", "input_rate_hz"), [(10, 48_000), (1, 16_000)])
def test_encoded_utterance_decodes_to_the_same_tone_and_length(
    complexity: int, input_rate_hz: int
) -> None:
    opuslib, _, _ = _load_opuslib()
    stream = StreamEncoder(OpusSettings(complexity=complexity))
    encoder = UtteranceEncoder(stream, 22_050)
    signal = tone(22_050, 1.0)
    packets = []
    for start in range(0, signal.size, 4410):
        packets += encoder.feed(signal[start : start + 4410])
    packets += encoder.finish()
    assert encoder.input_samples == signal.size
    assert encoder.encoder is stream.current
    assert stream.current is not None and stream.current.input_rate_hz == input_rate_hz
    assert len(packets) == 50  # 1 s = 50 frames of 20 ms
    decoder = opuslib.Decoder(SAMPLE_RATE_HZ, 1)
    decoded = np.concatenate(
        [np.frombuffer(decoder.decode(p, FRAME_SAMPLES), dtype=np.int16) for p in packets]
    ).astype(np.float64)
    spectrum = np.abs(np.fft.rfft(decoded[4800:-4800]))
    assert np.argmax(spectrum) * SAMPLE_RATE_HZ / (decoded.size - 9600) == pytest.approx(440, abs=3)
    rms = np.sqrt(np.mean(decoded[4800:-4800] ** 2))
    assert rms == pytest.approx(10000 / np.sqrt(2), rel=0.2)


def toc_band(packet: bytes) -> str:
    """Coding mode and audio bandwidth from an Opus packet's TOC byte (RFC 6716, 3.1)."""
    config = packet[0] >> 3
    if config < 12:
        return "SILK " + ("NB", "MB", "WB")[config // 4]
    if config < 16:
        return "hybrid " + ("SWB", "FB")[(config - 12) // 2]
    return "CELT " + ("NB", "WB", "SWB", "FB")[(config - 16) // 4]


def broadband(seconds: float) -> np.ndarray:
    """Harmonics up to 14 kHz over white noise: content in every Opus band."""
    t = np.arange(int(SAMPLE_RATE_HZ * seconds)) / SAMPLE_RATE_HZ
    harmonics = sum(
        np.sin(2 * np.pi * f * t) / k for k, f in enumerate((180, 360, 2200, 5000, 9000, 14000), 1)
    )
    noise = np.random.default_rng(1).normal(0, 1500, t.size)
    return np.clip(harmonics * 3000 + noise, -32000, 32000).astype(np.int16)


def test_low_complexity_codes_wideband_whatever_the_input_rate() -> None:
    """Why :class:`StreamEncoder` feeds 16 kHz at complexity <= 1: nothing above 8 kHz
    is coded there anyway. If a libopus release changes this, this test says so."""
    signal = broadband(1.0)
    frames = [signal[i : i + FRAME_SAMPLES] for i in range(0, signal.size, FRAME_SAMPLES)]
    for complexity in range(WIDEBAND_MAX_COMPLEXITY + 1):
        encoder = OpusEncoder(OpusSettings(complexity=complexity, min_complexity=0))
        assert {toc_band(encoder.encode(f)) for f in frames} == {"SILK WB"}
    encoder = OpusEncoder(OpusSettings(complexity=WIDEBAND_MAX_COMPLEXITY + 1))
    assert {toc_band(encoder.encode(f)).split()[1] for f in frames} <= {"SWB", "FB"}


def test_stream_encoder_switches_rate_only_between_utterances() -> None:
    stream = StreamEncoder(OpusSettings())
    assert stream.for_complexity(10).input_rate_hz == SAMPLE_RATE_HZ
    full = stream.current
    assert stream.for_complexity(5) is full  # same band: the state carries on
    assert full is not None and full.get(full.ctl.get_complexity) == 5
    wide = stream.for_complexity(1)
    assert wide.input_rate_hz == WIDEBAND_RATE_HZ and wide.frame_samples == 320
    assert stream.current is wide and stream.switches == 1
    # a budget that steps down inside an utterance keeps that utterance's encoder
    now = [0.0]
    budget = EncodeBudget(1.0, 10, 1, now=lambda: now[0])
    utterance = UtteranceEncoder(StreamEncoder(OpusSettings()), 22_050, budget)
    packets = utterance.feed(tone(22_050, 0.2))
    assert utterance.encoder is not None and utterance.encoder.input_rate_hz == SAMPLE_RATE_HZ
    while budget.complexity > 1:  # overloaded windows: one step down each
        now[0] += 1.0
        budget.record(2.0)
    packets += utterance.feed(tone(22_050, 0.2)) + utterance.finish()
    assert utterance.encoder.input_rate_hz == SAMPLE_RATE_HZ
    assert utterance.encoder.complexity == 1
    assert len(packets) == 20


def test_encoder_takes_only_rates_opus_accepts() -> None:
    with pytest.raises(ValueError, match="22050"):
        OpusEncoder(OpusSettings(), 22_050)
    with pytest.raises(ValueError, match="320"):
        OpusEncoder(OpusSettings(), WIDEBAND_RATE_HZ).encode(np.zeros(FRAME_SAMPLES, np.int16))


def test_silence_packet_decodes_to_silence() -> None:
    opuslib, _, _ = _load_opuslib()
    packet = encode_silence(OpusSettings())
    decoder = opuslib.Decoder(SAMPLE_RATE_HZ, 1)
    for _ in range(3):
        pcm = np.frombuffer(decoder.decode(packet, FRAME_SAMPLES), dtype=np.int16)
        assert pcm.size == FRAME_SAMPLES and np.abs(pcm).max() <= 1


def test_encoder_rejects_wrong_frame_size() -> None:
    with pytest.raises(ValueError, match="960"):
        OpusEncoder(OpusSettings()).encode(np.zeros(480, dtype=np.int16))


def test_opus_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="bitrate"):
        OpusSettings(bitrate_bps=1000)
    with pytest.raises(ValueError, match="complexity"):
        OpusSettings(complexity=11)


def test_leading_silence_keeps_10_ms_before_the_onset() -> None:
    pcm = np.zeros(16_000, dtype=np.int16)
    pcm[8_000:] = 5000
    assert leading_silence(pcm, 16_000) == 8_000 - 160
    pcm[100] = 20  # below -40 dBFS: still silence
    assert leading_silence(pcm, 16_000) == 8_000 - 160
    assert leading_silence(np.zeros(100, dtype=np.int16), 16_000) is None
    assert leading_silence(np.full(100, 9000, dtype=np.int16), 16_000) == 0
