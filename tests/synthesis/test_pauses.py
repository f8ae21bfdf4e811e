from __future__ import annotations

import threading

import numpy as np

from synthesis import Engine, SynthesisRequest
from synthesis.pauses import LEAD_KEEP_MS, QUIET, TRAIL_KEEP_MS, trim_pauses

RATE_HZ = 1000  # one sample per ms keeps the arithmetic readable


def _tone_between_silences(lead_ms: int, tone_ms: int, trail_ms: int) -> np.ndarray:
    tone = 0.5 * np.sin(np.arange(tone_ms, dtype=np.float32)) + 0.25
    silence = np.full
    return np.concatenate(
        [silence(lead_ms, QUIET / 2, np.float32), tone, silence(trail_ms, 0.0, np.float32)]
    ).astype(np.float32)


def _quiet_runs_ms(pcm: np.ndarray, rate_hz: int) -> tuple[int, int]:
    loud = np.flatnonzero(np.abs(pcm.astype(np.float64)) > QUIET * 32767)
    return int(loud[0]) * 1000 // rate_hz, (pcm.size - 1 - int(loud[-1])) * 1000 // rate_hz


def test_a_piece_cut_inside_a_clause_keeps_a_word_gap() -> None:
    audio = _tone_between_silences(50, 300, 150)
    trimmed = trim_pauses(audio, RATE_HZ, "It is easy to tell")
    assert trimmed.size == LEAD_KEEP_MS + 300 + TRAIL_KEEP_MS["word"]


def test_a_comma_keeps_a_breath_and_a_sentence_end_keeps_everything() -> None:
    audio = _tone_between_silences(50, 300, 400)
    assert trim_pauses(audio, RATE_HZ, "Well then,").size == (
        LEAD_KEEP_MS + 300 + TRAIL_KEEP_MS["clause"]
    )
    assert trim_pauses(audio, RATE_HZ, "That is all.").size == LEAD_KEEP_MS + 300 + 400


def test_silence_alone_is_dropped() -> None:
    assert trim_pauses(np.zeros(500, np.float32), RATE_HZ, "...").size == 0


def test_piper_pieces_meet_with_a_word_gap_at_one_loudness(piper_engine: Engine) -> None:
    """The first piece ("It is easy to tell") ends with a word gap, not Piper's ~120 ms,
    and both pieces share one gain: their active loudness is within a few dB."""
    text = "It is easy to tell the depth of a well."
    chunks = list(piper_engine.synthesize(SynthesisRequest(text=text), threading.Event()))
    assert len(chunks) == 2
    rate = chunks[0].sample_rate_hz
    _, first_trail_ms = _quiet_runs_ms(chunks[0].pcm, rate)
    second_lead_ms, _ = _quiet_runs_ms(chunks[1].pcm, rate)
    assert first_trail_ms + second_lead_ms <= TRAIL_KEEP_MS["word"] + LEAD_KEEP_MS + 2

    def active_db(pcm: np.ndarray) -> float:
        frames = pcm[: pcm.size // 220 * 220].astype(np.float64).reshape(-1, 220)
        rms = np.sqrt((frames**2).mean(axis=1))
        return float(20 * np.log10(rms[rms > 0.01 * 32767].mean() / 32767))

    assert abs(active_db(chunks[0].pcm) - active_db(chunks[1].pcm)) < 3.0
    assert max(int(np.abs(c.pcm.astype(np.int32)).max()) for c in chunks) < 32767
