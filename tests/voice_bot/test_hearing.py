"""The bot client's side of caller audio: frames parsed, participants mapped, slow reading."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from voice_bot.hearing import (
    FRAME_HEADER,
    CallerAudio,
    CallerAudioDropped,
    CallerSpeechStarted,
    Heard,
    Hearing,
)


def wire(index: int, position: int, fill: int, version: int = 1) -> bytes:
    return FRAME_HEADER.pack(version, index, position) + bytes([fill]) * 640


async def test_frames_map_to_participants_in_order() -> None:
    hearing = Hearing()
    hearing.event({"type": "input.participant", "participant": "p1", "identity": "ann", "index": 7})
    hearing.frame(wire(7, 0, 1))
    hearing.frame(wire(8, 0, 2))  # no input.participant for index 8: ignored
    hearing.frame(wire(7, 320, 3, version=2))  # an unknown version: ignored
    hearing.event(
        {"type": "input.speech_started", "participant": "p1", "position": 320, "server_ms": 5.0}
    )
    hearing.frame(wire(7, 320, 4))
    hearing.close()
    heard = [item async for item in drain(hearing)]
    assert heard == [
        CallerAudio("p1", 0, bytes([1]) * 640),
        CallerSpeechStarted("p1", 320, 5.0),
        CallerAudio("p1", 320, bytes([4]) * 640),
    ]
    assert hearing.identities == {"p1": "ann"}


async def test_a_slow_reader_loses_the_oldest_audio_and_is_told() -> None:
    hearing = Hearing(max_audio_ms=60)  # three frames
    hearing.event({"type": "input.participant", "participant": "p1", "identity": "ann", "index": 0})
    hearing.event({"type": "input.audio_dropped", "participant": "p1", "frames": 4, "ms": 80})
    for n in range(5):
        hearing.frame(wire(0, n * 320, n))
    hearing.close()
    heard = [item async for item in drain(hearing)]
    assert heard[0] == CallerAudioDropped("p1", 2, 40, server=False)
    assert heard[1] == CallerAudioDropped("p1", 4, 80)  # the server's, kept
    assert [item.position for item in heard[2:] if isinstance(item, CallerAudio)] == [
        640,
        960,
        1280,
    ]


async def test_the_reader_waits_and_ends_on_close() -> None:
    hearing = Hearing()
    waiting = asyncio.get_running_loop().create_task(hearing.get())
    await asyncio.sleep(0.01)
    assert not waiting.done()
    hearing.close()
    assert await asyncio.wait_for(waiting, 5) is None


async def drain(hearing: Hearing) -> AsyncIterator[Heard]:
    while (item := await hearing.get()) is not None:
        yield item
