"""Voice activity: the hysteresis on scripted scores, and earshot on a real sentence,
silence and noise."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from media_server.listening.caller_audio import INPUT_FRAME_SAMPLES, INPUT_RATE_HZ, VoiceActivity
from media_server.listening.vad import EarshotScorer, VoiceActivityDetector
from synthesis import Engine
from tests.media_server.listening.speech import spoken

MS: int = INPUT_RATE_HZ // 1000
WINDOW = 256


class ScriptedScorer:
    """Speech (0.9) where the window's samples are 1, else silence (0.1): the test's
    signal scripts the scores."""

    window_samples = WINDOW

    def score(self, window: npt.NDArray[np.int16]) -> float:
        return 0.9 if int(window[0]) == 1 else 0.1


def signal(voiced: list[tuple[int, int]], total: int) -> npt.NDArray[np.int16]:
    """1 where ``voiced`` (sample ranges), else 0: the scripted scorer reads it."""
    pcm = np.zeros(total, dtype=np.int16)
    for start, end in voiced:
        pcm[start:end] = 1
    return pcm


def marks(changes: list[VoiceActivity]) -> list[tuple[bool, int]]:
    return [(c.speaking, c.position) for c in changes]


def run(
    detector: VoiceActivityDetector, pcm: npt.NDArray[np.int16], start: int = 0
) -> list[VoiceActivity]:
    changes: list[VoiceActivity] = []
    for offset in range(0, pcm.size - INPUT_FRAME_SAMPLES + 1, INPUT_FRAME_SAMPLES):
        changes += detector.push(start + offset, pcm[offset : offset + INPUT_FRAME_SAMPLES])
    return changes


def scripted(**kwargs: float) -> VoiceActivityDetector:
    return VoiceActivityDetector("caller-1", ScriptedScorer(), now_ms=lambda: 42.0, **kwargs)


def test_speech_starts_where_it_began_and_stops_where_silence_began() -> None:
    # windows are 256 samples: speech over windows 10..59, silence after
    pcm = signal([(10 * WINDOW, 60 * WINDOW)], 120 * WINDOW)
    changes = run(scripted(min_speech_ms=150, min_silence_ms=400), pcm)
    assert marks(changes) == [(True, 10 * WINDOW), (False, 60 * WINDOW)]
    assert all(c.participant == "caller-1" and c.server_ms == 42.0 for c in changes)


def test_a_click_does_not_start_and_a_pause_between_words_does_not_stop() -> None:
    click = (5 * WINDOW, 8 * WINDOW)  # 48 ms < 150 ms
    words = [(20 * WINDOW, 40 * WINDOW), (50 * WINDOW, 70 * WINDOW)]  # a 160 ms pause
    pcm = signal([click, *words], 120 * WINDOW)
    changes = run(scripted(min_speech_ms=150, min_silence_ms=400), pcm)
    assert marks(changes) == [(True, 20 * WINDOW), (False, 70 * WINDOW)]


def test_a_gap_counts_as_silence_and_finish_ends_speech() -> None:
    detector = scripted(min_speech_ms=100, min_silence_ms=400)
    speech = signal([(0, 40 * WINDOW)], 40 * WINDOW)
    assert [c.speaking for c in run(detector, speech)] == [True]
    # 200 ms missing (lost packets): not yet a stop; 600 ms: a stop where audio ended
    end = 40 * WINDOW
    assert detector.push(end + 200 * MS, speech[:INPUT_FRAME_SAMPLES]) == []
    resumed = end + 200 * MS + INPUT_FRAME_SAMPLES
    changes = detector.push(resumed + 600 * MS, speech[:INPUT_FRAME_SAMPLES])
    assert marks(changes) == [(False, resumed)]
    assert detector.finish() is None
    # speaking when the stream ends: the stop is told at its last sample
    run(detector, signal([(0, 20 * WINDOW)], 20 * WINDOW), start=100_000)
    assert detector.speaking
    stop = detector.finish()
    assert stop is not None and not stop.speaking and stop.position == 100_000 + 5120
    assert not detector.speaking


# -- earshot on real audio -------------------------------------------------------------


@pytest.fixture(scope="module")
def sentence(piper_engine: Engine) -> npt.NDArray[np.int16]:
    return spoken(piper_engine, INPUT_RATE_HZ)


def earshot(participant: str = "caller-1") -> VoiceActivityDetector:
    return VoiceActivityDetector(participant, EarshotScorer())


def test_a_sentence_gives_one_start_and_one_stop_around_it(
    sentence: npt.NDArray[np.int16],
) -> None:
    lead, tail = 500 * MS, 1000 * MS
    pcm = np.concatenate([np.zeros(lead, np.int16), sentence, np.zeros(tail, np.int16)]).astype(
        np.int16
    )
    changes = run(earshot(), pcm)
    assert [c.speaking for c in changes] == [True, False], changes
    start, stop = changes[0].position, changes[1].position
    end, middle = lead + sentence.size, lead + sentence.size // 2
    assert lead - 100 * MS <= start < middle
    assert middle < stop <= end + 300 * MS


def test_silence_gives_nothing() -> None:
    assert run(earshot(), np.zeros(3 * INPUT_RATE_HZ, np.int16)) == []


def test_steady_white_noise_gives_no_speech_once_the_model_has_heard_it() -> None:
    """White noise at a moderate level (RMS 1000, about -30 dBFS): earshot adapts to a
    steady noise floor within a few hundred ms. Its onset, from digital silence, scores
    as speech for about 200 ms (one short start and stop, over within the first
    second); after that, nothing. Quieter noise (RMS 300) never starts speech."""
    rng = np.random.default_rng(7)
    noise = np.clip(rng.normal(0, 1000, 4 * INPUT_RATE_HZ), -32768, 32767).astype(np.int16)
    changes = run(earshot(), noise)
    assert len(changes) <= 2 and all(c.position < INPUT_RATE_HZ for c in changes), changes
    assert not changes or not changes[-1].speaking
    quiet = np.clip(rng.normal(0, 300, 3 * INPUT_RATE_HZ), -32768, 32767).astype(np.int16)
    assert run(earshot(), quiet) == []


def test_speech_in_noise_is_still_found(sentence: npt.NDArray[np.int16]) -> None:
    noise = np.random.default_rng(8).normal(0, 300, sentence.size + 1000 * MS)
    pcm = noise.copy()
    pcm[500 * MS : 500 * MS + sentence.size] += sentence
    changes = run(earshot(), np.clip(pcm, -32768, 32767).astype(np.int16))
    assert changes and changes[0].speaking
    assert changes[0].position < 500 * MS + sentence.size // 2
