"""EncodeBudget: Opus complexity follows the measured encode load, on a fake clock."""

from __future__ import annotations

import numpy as np
import pytest

from media_server.audio.budget import (
    FRAMES_PER_S,
    MIN_FRAMES_TO_LEARN,
    PRIOR_FRAME_COST_S,
    EncodeBudget,
)
from media_server.audio.encoder import StreamEncoder, UtteranceEncoder
from media_server.audio.frames import FRAME_SAMPLES
from media_server.audio.opus import OpusSettings


class FakeTime:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def run_window(
    budget: EncodeBudget, clock: FakeTime, load_cores: float, frames: int = 0, complexity: int = 10
) -> int:
    """One second in which encoders used ``load_cores`` of CPU, reported in 8 parts."""
    for _ in range(8):
        clock.t += 0.125
        budget.record(load_cores * 0.125, frames // 8, complexity)
    return budget.complexity


def test_steps_down_under_load_and_back_up_when_there_is_room() -> None:
    clock = FakeTime()
    budget = EncodeBudget(0.5, 10, 1, now=clock)
    assert budget.complexity == 10
    assert run_window(budget, clock, 0.3) == 10  # within budget
    assert run_window(budget, clock, 0.55) == 7  # 0.55 * 0.87 = 0.48 fits the budget
    assert run_window(budget, clock, 0.6) == 3  # 0.6 * 0.65/0.87 = 0.45 (5 would be 0.54)
    assert run_window(budget, clock, 0.9) == 1  # the floor: nothing better fits
    assert run_window(budget, clock, 0.9) == 1  # the floor holds
    assert budget.load_cores == pytest.approx(0.9)
    # load falls: step up one level a window, while it is projected to fit with a margin
    assert run_window(budget, clock, 0.2) == 1  # 0.2 * 0.65/0.24 = 0.54 > 0.4
    assert run_window(budget, clock, 0.14) == 3  # 0.14 * 0.65/0.24 = 0.38 fits
    assert run_window(budget, clock, 0.05) == 5
    assert run_window(budget, clock, 0.0) == 7
    assert run_window(budget, clock, 0.0) == 10
    assert budget.changes == 7


def test_far_over_budget_goes_to_the_floor_in_one_window() -> None:
    clock = FakeTime()
    budget = EncodeBudget(0.5, 10, 1, now=clock)
    assert run_window(budget, clock, 1.2) == 1  # even complexity 3 would be 0.78


def test_underruns_while_over_budget_go_straight_to_the_floor() -> None:
    """Saturated encoders cannot show the demand (measured load stops at what they get):
    streams running dry say it. Many sessions starting at once at complexity 10 do this."""
    clock = FakeTime()
    budget = EncodeBudget(0.5, 10, 1, now=clock)
    budget.record_underrun()
    assert run_window(budget, clock, 0.55) == 1  # without the underrun: 7
    # and no step up in a window where a stream ran dry
    budget.record_underrun()
    assert run_window(budget, clock, 0.05) == 1
    assert run_window(budget, clock, 0.05) == 3


def test_underruns_within_budget_change_nothing() -> None:
    clock = FakeTime()
    budget = EncodeBudget(0.5, 10, 1, now=clock)
    budget.record_underrun()  # e.g. a slow engine: encoding is not the cause
    assert run_window(budget, clock, 0.2) == 10


def test_min_equal_to_max_never_changes() -> None:
    clock = FakeTime()
    budget = EncodeBudget(0.1, 6, 6, now=clock)
    for _ in range(3):
        assert run_window(budget, clock, 5.0) == 6
    assert budget.changes == 0


def test_many_streams_starting_at_once_start_at_a_level_they_fit() -> None:
    """Before any window is measured, the speaking streams' steady demand caps the level:
    150 sessions starting together begin at the floor instead of at complexity 10."""
    budget = EncodeBudget(0.5, 10, 1, now=FakeTime())
    per_stream_cores = FRAMES_PER_S * PRIOR_FRAME_COST_S  # at complexity 10
    fits_at_10 = int(0.5 / per_stream_cores)
    for _ in range(fits_at_10):
        budget.stream_started()
    assert budget.complexity == 10
    budget.stream_started()  # one more: 10 no longer fits, 7 (0.87 of the cost) does
    assert budget.complexity == 7
    for _ in range(150 - budget.active_streams):
        budget.stream_started()
    assert budget.complexity == 1
    for _ in range(150 - fits_at_10):
        budget.stream_stopped()
    assert budget.complexity == 10  # the cap goes as the streams stop
    assert budget.changes == 0  # nothing measured moved
    for _ in range(fits_at_10 + 5):
        budget.stream_stopped()
    assert budget.active_streams == 0


def test_the_cost_of_a_frame_is_measured() -> None:
    clock = FakeTime()
    budget = EncodeBudget(0.5, 10, 1, now=clock)
    for _ in range(100):
        budget.stream_started()
    assert budget.complexity == 1  # 100 streams at the prior's 250 µs a frame
    # a machine twice as fast: 5000 frames at complexity 1 took 0.24 * 125 µs each
    run_window(budget, clock, 5000 * 0.24 * 125e-6, frames=5000, complexity=1)
    assert budget.frame_cost_s == pytest.approx(125e-6)
    assert budget.complexity == 5  # 100 * 50 * 125 µs * 0.79 = 0.49 cores
    # a window with too few frames to tell keeps the last measurement
    run_window(budget, clock, 0.001, frames=MIN_FRAMES_TO_LEARN - 8)
    assert budget.frame_cost_s == pytest.approx(125e-6)


def test_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="budget_cores"):
        EncodeBudget(0, now=FakeTime())
    with pytest.raises(ValueError, match="min_complexity"):
        EncodeBudget(0.5, 5, 7, now=FakeTime())
    with pytest.raises(ValueError, match="min_complexity"):
        OpusSettings(complexity=5, min_complexity=7)


def test_utterance_encoder_uses_the_budgets_complexity_and_reports_its_cpu() -> None:
    clock = FakeTime()
    budget = EncodeBudget(1e-6, 10, 3, now=clock)  # any real encoding is over budget
    stream = StreamEncoder(OpusSettings())
    utterance = UtteranceEncoder(stream, 48_000, budget)
    t = np.arange(48_000 * 2) / 48_000
    pcm = (8000 * np.sin(2 * np.pi * 220 * t)).astype(np.int16)
    for second in range(3):
        clock.t += 1.0
        packets = utterance.feed(pcm[second * 9600 : (second + 1) * 9600])
        assert len(packets) == 9600 // FRAME_SAMPLES
    assert budget.load_cores > 0
    assert budget.complexity < 10
    utterance.feed(pcm[:9600])  # the next slice is encoded at the budget's level
    encoder = utterance.encoder
    assert encoder is not None
    assert encoder.get(encoder.ctl.get_complexity) == encoder.complexity == budget.complexity
