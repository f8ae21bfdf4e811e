"""HTTP callers may hold only part of the synthesis slots; the rest is kept for live ones."""

from __future__ import annotations

import pytest

from media_server.config import ConfigError, Settings, settings_from_env
from synthesis import EngineBusy, SynthesisRequest, SynthesisService
from synthesis.service import Caller
from synthesis.testing import ScriptedEngine

REQUEST = SynthesisRequest(text="text")


async def test_http_leaves_the_reserved_slot_to_live_callers() -> None:
    service = SynthesisService(ScriptedEngine(), 3)  # HTTP may hold 2
    http = [service.stream(REQUEST, Caller.HTTP) for _ in range(2)]
    with pytest.raises(EngineBusy) as info:
        service.stream(REQUEST, Caller.HTTP)
    assert info.value.code == "engine_busy" and info.value.retry_after_s > 0
    live = service.stream(REQUEST)  # the default caller is a live session
    with pytest.raises(EngineBusy):  # now every slot is held
        service.stream(REQUEST)
    stats = service.stats()
    assert (stats.max_concurrent, stats.running, stats.refused_total) == (3, 3, 2)
    assert (stats.http_max_concurrent, stats.http_running, stats.http_refused_total) == (2, 2, 1)
    await http[0].aclose()
    again = service.stream(REQUEST, Caller.HTTP)  # its slot is back
    for stream in (http[1], live, again):
        await stream.aclose()
    assert service.running == 0 and service.http_running == 0
    service.close()


async def test_live_callers_may_take_every_slot() -> None:
    service = SynthesisService(ScriptedEngine(), 2)
    streams = [service.stream(REQUEST), service.stream(REQUEST)]
    with pytest.raises(EngineBusy):
        service.stream(REQUEST, Caller.HTTP)
    for stream in streams:
        await stream.aclose()
    service.close()


@pytest.mark.parametrize(
    ("workers", "http_slots", "expected"), [(1, None, 1), (4, None, 3), (4, 4, 4)]
)
def test_http_slots_default_to_one_fewer_than_the_workers(
    workers: int, http_slots: int | None, expected: int
) -> None:
    service = SynthesisService(ScriptedEngine(), workers, http_slots=http_slots)
    assert service.http_slots == expected
    service.close()


def test_the_settings_are_checked() -> None:
    for bad in (
        {"http_synthesis_slots": 0},
        {"http_synthesis_slots": 5, "synthesis_workers": 4},
        {"http_write_timeout_s": 0.0},
    ):
        with pytest.raises(ConfigError):
            Settings(**bad)  # type: ignore[arg-type]
    env = {"VMS_HTTP_SYNTHESIS_SLOTS": "2", "VMS_HTTP_WRITE_TIMEOUT_S": "2.5"}
    settings = settings_from_env(env)
    assert settings.http_synthesis_slots == 2 and settings.http_write_timeout_s == 2.5
    assert Settings().http_synthesis_slots is None and Settings().http_write_timeout_s == 10.0
