"""A room's caller-audio sinks: each told in turn; a broken one is removed, not fatal."""

from __future__ import annotations

import logging

import pytest

from media_server.listening.caller_audio import CallerFrame, VoiceActivity
from media_server.listening.sinks import CallerSinks

FRAME = CallerFrame("m1", 0, bytes(640))
START = VoiceActivity("m1", True, 0, 1.0)


class Recorder:
    def __init__(self) -> None:
        self.told: list[object] = []

    def caller_frame(self, frame: CallerFrame) -> None:
        self.told.append(frame)

    def voice_activity(self, activity: VoiceActivity) -> None:
        self.told.append(activity)


class Broken(Recorder):
    def caller_frame(self, frame: CallerFrame) -> None:
        raise RuntimeError("consumer bug")


def test_each_sink_is_told_in_order_and_a_broken_one_is_dropped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sinks = CallerSinks()
    first, broken, last = Recorder(), Broken(), Recorder()
    for sink in (first, broken, last, first):  # added twice: told once
        sinks.add(sink)
    assert len(sinks) == 3
    with caplog.at_level(logging.ERROR):
        sinks.caller_frame(FRAME)
    assert "consumer bug" in caplog.text
    sinks.voice_activity(START)
    assert first.told == [FRAME, START] == last.told
    assert broken.told == [] and len(sinks) == 2
    sinks.remove(first)
    sinks.remove(first)  # not there: nothing
    sinks.caller_frame(FRAME)
    assert first.told == [FRAME, START] and last.told == [FRAME, START, FRAME]
