"""The drain on its own: its setting, what it refuses, what it waits for and for how long."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from media_server.clock import MonotonicClock
from media_server.config import ConfigError, Settings, settings_from_env
from media_server.drain import DRAIN_POLL_S, DRAIN_SETTLE_S, Drain, DrainSummary, ServerDraining
from media_server.speech.protocol import SayMessage, TextDeltaMessage, TextDoneMessage
from media_server.speech.queue import UtteranceQueue
from media_server.speech.talker import Talker
from synthesis import ServerBusy, SynthesisRequest
from synthesis.testing import FakeClock, ScriptedEngine


def counting_down(start: int) -> Callable[[], int]:
    """Utterances left: one fewer each time the drain looks, then none."""
    left = [start]

    def utterances() -> int:
        now, left[0] = left[0], max(0, left[0] - 1)
        return now

    return utterances


def test_drain_timeout_defaults_to_8_s_and_reads_the_environment() -> None:
    assert settings_from_env({}).drain_timeout_s == 8.0
    assert settings_from_env({"VMS_DRAIN_TIMEOUT_S": "25.5"}).drain_timeout_s == 25.5
    assert settings_from_env({"VMS_DRAIN_TIMEOUT_S": "0"}).drain_timeout_s == 0.0


@pytest.mark.parametrize("raw", ["-1", "nan", "inf", "soon"])
def test_a_drain_timeout_that_is_not_a_finite_duration_is_refused(raw: str) -> None:
    with pytest.raises(ConfigError, match="(?i)drain_timeout_s"):
        settings_from_env({"VMS_DRAIN_TIMEOUT_S": raw})


def test_draining_is_a_503_with_retry_after() -> None:
    exc = ServerDraining()
    assert isinstance(exc, ServerBusy)
    assert exc.code == "draining" and exc.retry_after_s is not None and exc.retry_after_s >= 1
    assert "shutting down" in exc.message and "retry" in exc.solution


async def test_admit_and_requests_refuse_only_once_draining() -> None:
    drain = Drain(MonotonicClock())
    drain.admit()
    with drain.request():
        assert drain.requests == 1
    assert drain.requests == 0
    await drain.wait(0, lambda: 0, 0)
    with pytest.raises(ServerDraining):
        drain.admit()
    with pytest.raises(ServerDraining), drain.request():
        pytest.fail("admitted while draining")
    assert drain.requests == 0


async def test_wait_returns_once_the_utterances_are_played_and_settled() -> None:
    drain = Drain(FakeClock())
    summary = await drain.wait(5.0, counting_down(2), sessions=1)
    assert summary.clean and summary.sessions == 1
    assert summary.waited_s == pytest.approx(2 * DRAIN_POLL_S + DRAIN_SETTLE_S)


async def test_an_idle_server_drains_at_once() -> None:
    drain = Drain(FakeClock())
    assert await drain.wait(5.0, lambda: 0, sessions=0) == DrainSummary(0.0, 0, 0, 0)


async def test_wait_gives_up_at_the_timeout_and_says_what_it_cut() -> None:
    drain = Drain(FakeClock())
    with drain.request():
        summary = await drain.wait(0.3, lambda: 3, sessions=2)
    assert summary == DrainSummary(0.3, 2, 3, 1)
    assert not summary.clean


def test_a_talker_refuses_new_utterances_but_finishes_streamed_text() -> None:
    draining = [False]

    def admit() -> None:
        if draining[0]:
            raise ServerDraining()

    engine = ScriptedEngine()
    queue = UtteranceQueue(lambda event: None)
    talker = Talker(None, None, Settings(), MonotonicClock(), admit=admit)
    talker.apply(TextDeltaMessage("Hello there", "t1"), queue, engine, cancel_everyone=True)
    draining[0] = True
    with pytest.raises(ServerDraining):
        talker.apply(SayMessage(SynthesisRequest(text="No.")), queue, engine, cancel_everyone=True)
    with pytest.raises(ServerDraining):
        talker.apply(TextDeltaMessage("New", "t2"), queue, engine, cancel_everyone=True)
    # the open streamed utterance takes its rest and its end
    talker.apply(TextDeltaMessage(", friend.", "t1"), queue, engine, cancel_everyone=True)
    talker.apply(TextDoneMessage("t1"), queue, engine, cancel_everyone=True)
    assert [u.utterance_id for u in queue] == ["t1"]
    assert queue.head is not None and queue.head.text_closed
