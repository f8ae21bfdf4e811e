"""A caller's decoded chunks → 16 kHz 20 ms frames with positions from the RTP clock."""

from __future__ import annotations

import av
import numpy as np
import numpy.typing as npt
import pytest

from media_server.listening.caller_audio import (
    INPUT_FRAME_SAMPLES,
    INPUT_RATE_HZ,
)
from media_server.listening.caller_stream import CallerStream
from media_server.listening.vad import VoiceActivityDetector
from media_server.rtc.inbound import mono_s16
from tests.media_server.listening.test_callers import Sink

RATE_48K = 48_000
CHUNK_48K = 960  # 20 ms, as Opus packets decode


class LoudIsSpeech:
    window_samples = 256

    def score(self, window: npt.NDArray[np.int16]) -> float:
        return 0.9 if np.abs(window.astype(np.int32)).mean() > 1000 else 0.1


def stream() -> tuple[CallerStream, Sink]:
    sink = Sink()
    detector = VoiceActivityDetector("m1", LoudIsSpeech(), min_speech_ms=60, min_silence_ms=200)
    return CallerStream("m1", sink, detector), sink


def tone(samples: int, rate: int = RATE_48K, level: float = 8000) -> npt.NDArray[np.int16]:
    t = np.arange(samples) / rate
    return (level * np.sin(2 * np.pi * 440 * t)).astype(np.int16)


def feed(caller: CallerStream, pcm: npt.NDArray[np.int16], pts: int = 0) -> None:
    for offset in range(0, pcm.size, CHUNK_48K):
        caller.feed(pts + offset, RATE_48K, pcm[offset : offset + CHUNK_48K])


def test_frames_are_20_ms_at_16_khz_with_contiguous_positions() -> None:
    caller, sink = stream()
    feed(caller, tone(RATE_48K))  # 1 s
    positions = [f.position for f in sink.frames]
    assert positions == list(range(0, positions[-1] + 1, INPUT_FRAME_SAMPLES))
    assert all(len(f.pcm) == 2 * INPUT_FRAME_SAMPLES and f.participant == "m1" for f in sink.frames)
    # all of the second but the resampler's few samples of delay
    assert len(sink.frames) in (49, 50)
    pcm = np.frombuffer(b"".join(f.pcm for f in sink.frames[5:]), np.int16).astype(np.float64)
    assert 0.9 * 8000 / np.sqrt(2) < np.sqrt(np.mean(pcm**2)) < 1.1 * 8000 / np.sqrt(2)


def test_a_gap_advances_the_position_without_frames() -> None:
    caller, sink = stream()
    feed(caller, tone(RATE_48K // 2))  # 500 ms
    before = len(sink.frames)
    lost_ms = 300
    resume_pts = RATE_48K // 2 + RATE_48K * lost_ms // 1000
    feed(caller, tone(RATE_48K // 2), pts=resume_pts)
    after = sink.frames[before:]
    assert after[0].position == resume_pts // 3  # the new run starts at its own time
    assert caller.gaps == 1
    assert sink.frames[before - 1].position + INPUT_FRAME_SAMPLES <= after[0].position


def test_repeats_are_dropped_and_a_restarted_clock_carries_on() -> None:
    caller, sink = stream()
    pcm = tone(RATE_48K // 2)
    feed(caller, pcm)
    count = len(sink.frames)
    caller.feed(RATE_48K // 2 - CHUNK_48K, RATE_48K, pcm[:CHUNK_48K])  # a repeat
    assert len(sink.frames) == count and caller.gaps == 0
    feed(caller, pcm, pts=0)  # the sender's clock went back to 0
    positions = [f.position for f in sink.frames]
    assert positions == sorted(set(positions)) and caller.gaps == 1
    assert positions[count] >= positions[count - 1] + INPUT_FRAME_SAMPLES


def test_voice_activity_reaches_the_sink_and_finish_stops_it() -> None:
    caller, sink = stream()
    silence = np.zeros(RATE_48K // 2, np.int16)
    feed(caller, np.concatenate([silence, tone(RATE_48K // 2)]))
    assert [(a.speaking, a.participant) for a in sink.activity] == [(True, "m1")]
    assert abs(sink.activity[0].position - INPUT_RATE_HZ // 2) <= 256
    assert caller.speaking and caller.stats()["speaking"]
    caller.finish()  # no more packets
    assert [a.speaking for a in sink.activity] == [True, False]
    assert not caller.speaking


def test_other_rates_are_resampled_too() -> None:
    caller, sink = stream()
    rate = 8000  # PCMU/PCMA
    for offset in range(0, rate, 160):
        caller.feed(offset, rate, tone(160, rate))
    assert 45 <= len(sink.frames) <= 50
    assert sink.frames[-1].position <= INPUT_RATE_HZ


@pytest.mark.parametrize(
    ("fmt", "layout"), [("s16", "stereo"), ("s16p", "stereo"), ("s16", "mono"), ("flt", "mono")]
)
def test_decoded_frames_become_mono_s16(fmt: str, layout: str) -> None:
    left = np.arange(-480, 480, dtype=np.int16) * 60
    right = np.full(960, 1000, dtype=np.int16)
    if layout == "mono":
        samples = left.reshape(1, -1) if fmt == "s16" else (left / 32768).astype(np.float32)[None]
    elif fmt == "s16":
        samples = np.stack([left, right], axis=1).reshape(1, -1)
    else:
        samples = np.stack([left, right])
    frame = av.AudioFrame.from_ndarray(samples, format=fmt, layout=layout)
    pcm = mono_s16(frame)
    if fmt == "flt":
        assert pcm is None  # no decoder of ours gives it: skipped, not misread
        return
    assert pcm is not None and pcm.dtype == np.int16 and pcm.size == 960
    expected = left if layout == "mono" else (left.astype(np.int32) + right) // 2
    assert np.abs(pcm.astype(np.int32) - expected).max() <= 1
