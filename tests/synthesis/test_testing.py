"""The shipped test doubles: ScriptedEngine is an Engine, FakeClock is a Clock."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from media_server.clock import Clock
from synthesis import ClientError, Engine, ReferenceAudio, SynthesisRequest
from synthesis.testing import FakeClock, ScriptedEngine


def test_scripted_engine_is_an_engine() -> None:
    engine = ScriptedEngine(chunk_s=0.1, chunks=3, sample_rate_hz=8000, lead_in_s=0.05)
    assert isinstance(engine, Engine)
    chunks = list(engine.synthesize(SynthesisRequest("hi"), threading.Event()))
    assert [len(c.pcm) for c in chunks] == [400, 800, 800, 800]
    assert all(c.sample_rate_hz == 8000 for c in chunks)
    assert engine.produced_chunks == 3 and engine.requests == [SynthesisRequest("hi")]
    with pytest.raises(ClientError):
        engine.register_voice("v", ReferenceAudio(np.zeros(16_000, np.float32)), None)


def test_scripted_engine_stops_on_cancel_and_fails_on_cue() -> None:
    engine = ScriptedEngine(chunks=4, fail_after=2)
    cancel = threading.Event()
    cancel.set()
    assert list(engine.synthesize(SynthesisRequest("x"), cancel)) == []
    assert engine.cancel_seen.is_set()
    with pytest.raises(RuntimeError, match="injected"):
        list(engine.synthesize(SynthesisRequest("x"), threading.Event()))
    assert engine.produced_chunks == 2


async def test_fake_clock_advances_and_jumps_to_deadlines() -> None:
    fake = FakeClock(start=10.0, oversleep_s=0.5)
    clock: Clock = fake  # satisfies media_server.clock.Clock structurally
    assert clock.now() == 10.0
    fake.advance(2.0)
    assert clock.now() == 12.0
    await clock.sleep_until(13.0)
    assert clock.now() == 13.5  # late by oversleep_s
    await clock.sleep_until(1.0)  # a deadline already past: no time passes
    assert clock.now() == 13.5
    assert fake.sleeps == [13.0, 1.0]
