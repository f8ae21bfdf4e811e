"""BotFeed: what a bot's writer sends, in order; caller audio bounded, oldest dropped."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from media_server.listening.bot_feed import FRAME_HEADER, BotFeed, listen_request
from media_server.listening.caller_audio import INPUT_FRAME_SAMPLES, CallerFrame, VoiceActivity
from synthesis.errors import InvalidRequest
from synthesis.testing import FakeClock


def pcm(value: int) -> bytes:
    return value.to_bytes(2, "little", signed=True) * INPUT_FRAME_SAMPLES


def frame(participant: str, n: int) -> CallerFrame:
    return CallerFrame(participant, n * INPUT_FRAME_SAMPLES, pcm(n))


def drain(feed: BotFeed) -> list[str | bytes]:
    items: list[str | bytes] = []
    while (item := feed.pop()) is not None:
        items.append(item)
    return items


def events(items: list[str | bytes]) -> list[dict[str, Any]]:
    return [json.loads(item) for item in items if isinstance(item, str)]


def listening_feed(clock: FakeClock, max_audio_ms: int = 2000) -> BotFeed:
    feed = BotFeed(clock, lambda pid: f"who-{pid}", max_audio_ms=max_audio_ms)
    feed.set_listening(True)
    return feed


def test_frames_carry_index_and_position_after_the_participant_is_announced() -> None:
    feed = listening_feed(FakeClock())
    feed.send_text('{"type":"speech.started"}')
    feed.caller_frame(frame("alice", 0))
    feed.caller_frame(frame("bob", 0))
    feed.voice_activity(VoiceActivity("alice", True, 320, 1234.56))
    feed.caller_frame(frame("alice", 1))
    items = drain(feed)
    kinds = [json.loads(i)["type"] if isinstance(i, str) else "frame" for i in items]
    assert kinds == [
        "speech.started",
        "input.participant",
        "frame",
        "input.participant",
        "frame",
        "input.speech_started",
        "frame",
    ]
    announced = events(items)
    assert announced[1] == {
        "type": "input.participant", "participant": "alice", "identity": "who-alice", "index": 0
    }  # fmt: skip
    assert announced[2]["participant"] == "bob" and announced[2]["index"] == 1
    assert announced[3] == {
        "type": "input.speech_started", "participant": "alice", "position": 320, "server_ms": 1234.6
    }  # fmt: skip
    frames = [i for i in items if isinstance(i, bytes)]
    assert [FRAME_HEADER.unpack_from(f) for f in frames] == [
        (1, 0, 0),
        (1, 1, 0),
        (1, 0, INPUT_FRAME_SAMPLES),
    ]
    assert all(len(f) == FRAME_HEADER.size + 640 for f in frames)
    assert frames[2][FRAME_HEADER.size :] == pcm(1)


def test_a_full_queue_drops_the_oldest_audio_never_events_and_reports_once_a_second() -> None:
    clock = FakeClock()
    feed = listening_feed(clock, max_audio_ms=100)  # 5 frames
    for n in range(8):
        feed.caller_frame(frame("alice", n))
        feed.voice_activity(VoiceActivity("alice", n % 2 == 0, n, 0.0))
    assert feed.dropped_frames == 3 and feed.queued_frames == 5
    items = drain(feed)
    positions = [FRAME_HEADER.unpack_from(i)[2] for i in items if isinstance(i, bytes)]
    assert positions == [n * INPUT_FRAME_SAMPLES for n in range(3, 8)]  # the newest five
    kinds = [e["type"] for e in events(items)]
    assert kinds.count("input.speech_started") + kinds.count("input.speech_stopped") == 8
    dropped = [e for e in events(items) if e["type"] == "input.audio_dropped"]
    # the first drop is told at once; the next two wait for the interval
    assert dropped == [
        {"type": "input.audio_dropped", "participant": "alice", "frames": 1, "ms": 20}
    ]
    clock.advance(1.0)
    assert events(drain(feed)) == [
        {"type": "input.audio_dropped", "participant": "alice", "frames": 2, "ms": 40}
    ]


async def test_next_waits_for_work_and_for_a_due_drop_report() -> None:
    clock = FakeClock()
    feed = listening_feed(clock, max_audio_ms=20)  # one frame
    for n in range(3):
        feed.caller_frame(frame("alice", n))
    drain(feed)  # participant, the first drop report, the newest frame
    waiting = asyncio.get_running_loop().create_task(feed.next())
    await asyncio.sleep(0.05)
    assert not waiting.done()  # the second drop is not due yet
    clock.advance(1.0)
    item = await asyncio.wait_for(waiting, 5)
    assert json.loads(item)["frames"] == 1
    waiting = asyncio.get_running_loop().create_task(feed.next())
    await asyncio.sleep(0.01)
    assert not waiting.done()
    feed.send_text("{}")
    assert await asyncio.wait_for(waiting, 5) == "{}"


def test_not_listening_queues_no_audio_and_turning_off_drops_it() -> None:
    feed = BotFeed(FakeClock(), str)
    feed.caller_frame(frame("alice", 0))
    feed.voice_activity(VoiceActivity("alice", True, 0, 0.0))
    assert drain(feed) == []
    feed.set_listening(True)
    feed.caller_frame(frame("alice", 1))
    feed.set_listening(False)
    assert [e["type"] for e in events(drain(feed))] == ["input.participant"]  # no frame
    assert feed.queued_frames == 0 and feed.dropped_frames == 0


def test_pending_events_flush_the_drop_report_and_discard_audio() -> None:
    feed = listening_feed(FakeClock(), max_audio_ms=20)
    for n in range(4):
        feed.caller_frame(frame("alice", n))
    texts = [json.loads(t) for t in feed.pending_events()]
    assert [t["type"] for t in texts] == [
        "input.participant",
        "input.audio_dropped",
        "input.audio_dropped",
    ]
    assert texts[-1]["frames"] == 2
    assert feed.pop() is None


@pytest.mark.parametrize(
    ("message", "field"),
    [
        ({"type": "input.listen"}, "'audio'"),
        ({"type": "input.listen", "audio": "yes"}, "'audio'"),
        ({"type": "input.listen", "audio": 1}, "'audio'"),
        ({"type": "input.listen", "audio": True, "rate": 8000}, "'rate'"),
    ],
)
def test_bad_listen_messages_are_refused_naming_the_field(
    message: dict[str, Any], field: str
) -> None:
    with pytest.raises(InvalidRequest, match=field):
        listen_request(message)
    assert listen_request({"type": "input.listen", "audio": False}) is False
