"""The capacity bench's time-to-first-speech probe tells speech from the idle silence."""

from __future__ import annotations

from bench._fanout_client import SpeechOnset
from media_server.audio.opus import OpusSettings, encode_silence

SILENCE = encode_silence(OpusSettings())


def test_the_first_packet_that_is_not_the_idle_silence_is_speech() -> None:
    onset = SpeechOnset()
    for at in (0.00, 0.02, 0.04):
        assert onset.packet(SILENCE, at) is None
    assert onset.silence == SILENCE
    onset.said(0.05)
    # the server's silence is as big as a small speech packet: size tells nothing
    assert len(SILENCE) > 20
    assert onset.packet(SILENCE, 0.06) is None
    assert onset.packet(SILENCE, 0.08) is None
    assert onset.packet(b"\x0b" * 80, 0.10) == 0.10 - 0.05
    assert onset.packet(b"\x0c" * 81, 0.12) is None  # one sample per say


def test_the_tail_of_a_cancelled_utterance_is_not_taken_for_silence() -> None:
    onset = SpeechOnset()
    for i in range(5):  # speech still arriving, each packet different
        assert onset.packet(bytes([i]) * 60, i * 0.02) is None
    assert onset.silence is None
    onset.said(0.2)
    assert onset.packet(b"\x07" * 60, 0.22) is None  # no silence known yet: nothing to tell
    onset.gave_up()
    onset.packet(SILENCE, 0.24)
    onset.packet(SILENCE, 0.26)
    onset.said(0.27)
    assert onset.packet(b"\x07" * 60, 0.30) == 0.30 - 0.27
