"""PacedSpeech: queued utterances, events at playout, cancel within one tick, limits."""

from __future__ import annotations

import asyncio
import concurrent.futures
from typing import Any

import pytest

from media_server.audio.budget import EncodeBudget
from media_server.audio.encoder import StreamEncoder
from media_server.audio.executor import DeadlineExecutor
from media_server.audio.frames import FRAME_MS
from media_server.audio.opus import OpusSettings
from media_server.speech.paced import (
    BULK_SLICE_MS,
    ENCODE_SLICE_MS,
    MAX_FRAMES_AHEAD,
    REFILL_FRAMES,
    PacedSpeech,
    monotonic_ms,
)
from media_server.speech.queue import START_FRAMES
from synthesis import SynthesisRequest, SynthesisService
from synthesis.testing import ScriptedEngine


def req(text: str, **fields: Any) -> SynthesisRequest:
    return SynthesisRequest(text=text, **fields)


def make(engine: ScriptedEngine, **kwargs: Any) -> tuple[PacedSpeech, list[dict[str, Any]]]:
    events: list[dict[str, Any]] = []
    speaker = PacedSpeech(
        SynthesisService(engine, 4),
        StreamEncoder(OpusSettings()),
        lambda event: events.append(event.as_dict()),
        **kwargs,
    )
    speaker.start()
    return speaker, events


async def play(speaker: PacedSpeech, ticks: int) -> list[bytes | None]:
    out = []
    for i in range(ticks):
        out.append(speaker.next_payload(i * 960))
        await asyncio.sleep(0.001)
    return out


async def wait_buffered(speaker: PacedSpeech, frames: int) -> None:
    for _ in range(500):
        if speaker.buffered_frames >= frames:
            return
        await asyncio.sleep(0.005)
    raise AssertionError("speaker never buffered enough frames")


async def test_utterances_play_in_order_with_events() -> None:
    engine = ScriptedEngine(chunk_s=0.2, chunks=2)  # 400 ms each
    speaker, events = make(engine)
    speaker.queue.say(req("one"), "a")
    speaker.queue.say(req("two"), "b")
    await wait_buffered(speaker, 40)
    payloads = await play(speaker, 60)
    await play(speaker, 30)
    speech = [p for p in payloads if p is not None]
    assert len(speech) >= 40
    kinds = [(e["type"], e["id"]) for e in events]
    assert kinds == [
        ("speech.started", "a"),
        ("speech.done", "a"),
        ("speech.started", "b"),
        ("speech.done", "b"),
    ]
    done_a = events[1]
    assert done_a["duration_ms"] == 400 and done_a["source_duration_ms"] == 400.0
    assert done_a["trimmed_ms"] == 0
    assert done_a["end_ts"] == done_a["stream_ts"] + 20 * 960
    assert events[2]["stream_ts"] == done_a["end_ts"]  # b starts right after a's 20 frames
    await speaker.aclose()


async def test_cancel_silences_the_next_tick_and_reports_played_time() -> None:
    engine = ScriptedEngine(chunk_s=0.5, chunks=20)
    speaker, events = make(engine)
    speaker.queue.say(req("long"), "a")
    speaker.queue.say(req("queued"), "b")
    await wait_buffered(speaker, 30)
    played = await play(speaker, 12)
    assert all(p is not None for p in played)
    cancelled = speaker.queue.cancel()
    assert [u.utterance_id for u in cancelled] == ["a", "b"]
    assert speaker.next_payload(12 * 960) is None  # silent on the very next tick
    cancel_events = [e for e in events if e["type"] == "speech.cancelled"]
    assert cancel_events == [
        {
            "type": "speech.cancelled",
            "id": "a",
            "played_ms": 12 * FRAME_MS,
            "stream_ts": 0,
            "end_ts": 12 * 960,
            "heard_text": "",  # 240 ms cannot have said the whole word "long"
        },
        {"type": "speech.cancelled", "id": "b", "played_ms": 0, "stream_ts": None, "end_ts": None},
    ]
    await asyncio.sleep(0.1)
    assert await play(speaker, 5) == [None] * 5
    assert engine.produced_chunks < 20  # synthesis stopped early
    await speaker.aclose()


async def test_queue_limit() -> None:
    speaker, _ = make(ScriptedEngine(), max_queued=2)
    speaker.queue.say(req("1"))
    speaker.queue.say(req("2"))
    with pytest.raises(OverflowError):
        speaker.queue.say(req("3"))
    await speaker.aclose()


async def test_engine_failure_is_an_error_event_and_the_speaker_goes_on() -> None:
    engine = ScriptedEngine(chunk_s=0.1, chunks=3, fail_after=0)
    speaker, events = make(engine)
    speaker.queue.say(req("fails"), "x")
    for _ in range(100):
        if events:
            break
        await asyncio.sleep(0.01)
    assert events[0]["type"] == "error" and events[0]["id"] == "x"
    assert events[0]["error"] == "synthesis_failed" and events[0]["solution"]
    engine.fail_after = None
    speaker.queue.say(req("works"), "y")
    await wait_buffered(speaker, 15)
    await play(speaker, 20)
    assert [e["type"] for e in events[1:]] == ["speech.started", "speech.done"]
    await speaker.aclose()


async def test_underruns_are_counted_when_synthesis_is_slower_than_playout() -> None:
    engine = ScriptedEngine(chunk_s=0.02, chunks=20, delay_s=0.05)
    speaker, _ = make(engine)
    speaker.queue.say(req("slow"))
    await wait_buffered(speaker, START_FRAMES)
    await play(speaker, 20)
    assert speaker.underruns > 0
    await speaker.aclose()


async def test_speech_starts_once_three_frames_are_encoded() -> None:
    # 20 ms of audio every 50 ms: a speaker that started on its first frame
    # would open with a gap on the very next tick
    engine = ScriptedEngine(chunk_s=0.02, chunks=12, delay_s=0.05)
    speaker, events = make(engine)
    speaker.queue.say(req("slow start"), "s")
    await wait_buffered(speaker, 1)
    assert speaker.buffered_frames < START_FRAMES
    assert speaker.next_payload(0) is None
    assert events == [] and speaker.underruns == 0  # waiting to start is not an underrun
    await wait_buffered(speaker, START_FRAMES)
    first = [speaker.next_payload(pts * 960) for pts in range(1, 1 + START_FRAMES)]
    assert all(p is not None for p in first)
    assert events == [{"type": "speech.started", "id": "s", "stream_ts": 960}]
    await speaker.aclose()


async def test_an_utterance_shorter_than_the_start_buffer_still_plays() -> None:
    speaker, events = make(ScriptedEngine(chunk_s=0.03, chunks=1))
    speaker.queue.say(req("Hi"), "hi")
    for _ in range(200):
        if speaker.queue.head and speaker.queue.head.produced:
            break
        await asyncio.sleep(0.005)
    payloads = await play(speaker, 5)
    assert 1 <= sum(p is not None for p in payloads) < START_FRAMES
    done = next(e for e in events if e["type"] == "speech.done")
    assert done["end_ts"] - done["stream_ts"] == done["duration_ms"] * 48
    await speaker.aclose()


async def test_leading_silence_is_trimmed_and_reported() -> None:
    engine = ScriptedEngine(chunk_s=0.2, chunks=2, lead_in_s=0.5)
    speaker, events = make(engine)
    speaker.queue.say(req("late start"), "t")
    await wait_buffered(speaker, 20)
    payloads = await play(speaker, 25)
    assert payloads[0] is not None  # speech from the very first tick, not 500 ms later
    done = next(e for e in events if e["type"] == "speech.done")
    assert done["source_duration_ms"] == 900.0
    assert done["trimmed_ms"] == 500.0
    assert done["duration_ms"] == 400
    await speaker.aclose()


async def test_streamed_text_is_spoken_clause_by_clause_as_one_utterance() -> None:
    engine = ScriptedEngine(chunk_s=0.1, chunks=2)
    speaker, events = make(engine)
    base = req(" ")
    speaker.queue.text_delta("Hello there, my fri", base, "s")
    speaker.queue.text_delta("end. How are", base, "s")
    # 200 ms of speech; the last partial frame waits in the framer for more text
    await wait_buffered(speaker, 9)
    # the first clause, then the rest of the sentence, before the text is finished (the
    # second request is made once the first piece is encoded: on a busy machine, later)
    async with asyncio.timeout(5):
        while len(engine.requests) < 2:
            await asyncio.sleep(0.005)
    assert [r.text for r in engine.requests] == ["Hello there,", "my friend."]
    await play(speaker, 15)  # plays it, then waits for text without counting underruns
    assert speaker.underruns == 0
    assert [e["type"] for e in events] == ["speech.started"]
    speaker.queue.text_delta(" you today? Fine", base, "s")
    speaker.queue.text_done("s")
    await wait_buffered(speaker, 15)
    await play(speaker, 40)
    assert [r.text for r in engine.requests] == [
        "Hello there,",
        "my friend.",
        "How are you today?",
        "Fine",
    ]
    assert [(e["type"], e["id"]) for e in events] == [
        ("speech.started", "s"),
        ("speech.done", "s"),
    ]
    assert events[1]["duration_ms"] == 800
    await speaker.aclose()


async def test_text_done_without_open_text_and_cancel_of_open_text() -> None:
    speaker, events = make(ScriptedEngine(chunk_s=0.1, chunks=2))
    assert speaker.queue.text_done("nothing") is None
    speaker.queue.text_delta("Never finished", req(" "), "open")
    speaker.queue.cancel()
    never_started = {"played_ms": 0, "stream_ts": None, "end_ts": None}
    assert events == [{"type": "speech.cancelled", "id": "open", **never_started}]
    await asyncio.sleep(0.05)
    await speaker.aclose()


class CountingExecutor(concurrent.futures.ThreadPoolExecutor):
    """An encode pool that counts its round trips (one per slice)."""

    def __init__(self) -> None:
        super().__init__(1)
        self.hops = 0

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        self.hops += 1
        return super().submit(fn, *args, **kwargs)


async def test_a_full_buffer_is_refilled_a_second_at_a_time() -> None:
    engine = ScriptedEngine(chunk_s=2.0, chunks=6)  # 12 s, more than the buffer holds
    pool = CountingExecutor()
    speaker, _ = make(engine, encode_executor=pool)
    speaker.queue.say(req("long"))
    await wait_buffered(speaker, MAX_FRAMES_AHEAD)
    await asyncio.sleep(0.05)
    # the buffer stops growing within one bulk slice of its limit
    full = speaker.buffered_frames
    assert MAX_FRAMES_AHEAD <= full < MAX_FRAMES_AHEAD + BULK_SLICE_MS // FRAME_MS
    # after the first second, slices were a second each: few hops for 5 s of audio
    assert pool.hops <= 1 + 1000 // ENCODE_SLICE_MS + MAX_FRAMES_AHEAD * FRAME_MS // BULK_SLICE_MS
    # playing less than a refill's worth wakes nobody
    hops = pool.hops
    await play(speaker, full - MAX_FRAMES_AHEAD + REFILL_FRAMES - 1)
    assert pool.hops == hops and speaker.buffered_frames == MAX_FRAMES_AHEAD - REFILL_FRAMES + 1
    # one more frame: the next second is encoded in one round trip
    await play(speaker, 1)
    await wait_buffered(speaker, MAX_FRAMES_AHEAD)
    await asyncio.sleep(0.05)
    assert pool.hops == hops + 1
    assert speaker.underruns == 0
    await speaker.aclose()
    assert speaker.buffered_frames == 0
    pool.shutdown()


class SlackRecordingExecutor(DeadlineExecutor):
    """A deadline pool that keeps the slack each encode slice was submitted with."""

    def __init__(self) -> None:
        super().__init__(1)
        self.slacks: list[float] = []

    def submit_within(
        self, slack_s: float, fn: Any, /, *args: Any, **kwargs: Any
    ) -> concurrent.futures.Future[Any]:
        self.slacks.append(slack_s)
        return super().submit_within(slack_s, fn, *args, **kwargs)


async def test_encode_slices_are_due_when_the_streams_audio_runs_out() -> None:
    engine = ScriptedEngine(chunk_s=1.0, chunks=2)  # 2 s, less than the buffer holds
    pool = SlackRecordingExecutor()
    speaker, _ = make(engine, encode_executor=pool)
    speaker.queue.say(req("two seconds"))
    await wait_buffered(speaker, 2000 // FRAME_MS)
    await asyncio.sleep(0.05)
    # nothing encoded yet: the first slice is due now, ahead of any stream with audio left
    assert pool.slacks[0] == 0.0
    # each later slice is due when what is already encoded has played (nothing plays here)
    assert pool.slacks == sorted(pool.slacks) and len(set(pool.slacks)) == len(pool.slacks)
    assert pool.slacks[1] == pytest.approx((START_FRAMES + 1) * FRAME_MS / 1000, abs=0.021)
    assert pool.slacks[-1] == pytest.approx(speaker.buffered_frames * FRAME_MS / 1000, abs=0.021)
    # the next utterance's first slice is due when the first one has finished playing
    await play(speaker, 60)
    left = speaker.buffered_frames
    submitted = len(pool.slacks)
    speaker.queue.say(req("more"))
    await wait_buffered(speaker, left + START_FRAMES)
    assert pool.slacks[submitted] == pytest.approx(left * FRAME_MS / 1000)
    assert pool.slacks[submitted] < pool.slacks[submitted - 1]
    await speaker.aclose()
    pool.shutdown()


async def test_cancel_takes_its_frames_out_of_the_buffer() -> None:
    engine = ScriptedEngine(chunk_s=0.5, chunks=2)
    speaker, _ = make(engine)
    speaker.queue.say(req("one"), "a", owner="bot1")
    speaker.queue.say(req("two"), "b", owner="bot2")
    await wait_buffered(speaker, 100)
    await asyncio.sleep(0.05)
    assert speaker.buffered_frames == 100
    speaker.queue.cancel("bot1", everyone=False)
    assert speaker.buffered_frames == 50
    assert sum(p is not None for p in await play(speaker, 60)) == 50
    assert speaker.buffered_frames == 0
    await speaker.aclose()


async def test_the_encode_budget_counts_speaking_streams() -> None:
    """A stream counts from its first queued utterance until its queue is empty again,
    however it empties: played out, cancelled or closed; and never twice."""
    budget = EncodeBudget(0.5, now=lambda: 0.0)
    engine = ScriptedEngine(chunk_s=0.1, chunks=1)
    first, _ = make(engine, encode_budget=budget)
    second, _ = make(engine, encode_budget=budget)
    assert budget.active_streams == 0
    first.queue.say(req("one"))
    first.queue.say(req("two"))
    second.queue.say(req("three"))
    assert budget.active_streams == 2
    await wait_buffered(first, 10)
    await play(first, 5)
    assert budget.active_streams == 2  # still speaking its first utterance
    await play(first, 30)
    assert not first.speaking and budget.active_streams == 1  # both played out
    first.queue.say(req("four"))
    assert budget.active_streams == 2
    first.queue.cancel()
    assert budget.active_streams == 1
    await second.aclose()
    assert budget.active_streams == 0
    await first.aclose()
    assert budget.active_streams == 0


async def test_speech_started_carries_the_timings_only_when_asked() -> None:
    for debug in (False, True):
        speaker, events = make(ScriptedEngine(chunk_s=0.2, chunks=2), debug_timings=debug)
        utterance = speaker.queue.say(req("one"), "a")
        utterance.timings.received_ms = received = monotonic_ms()
        await wait_buffered(speaker, START_FRAMES)
        await play(speaker, 2)
        started = events[0]
        assert started["type"] == "speech.started"
        if not debug:
            assert "timings" not in started
        else:
            timings = started["timings"]
            stamps = [
                timings[key]
                for key in (
                    "received_ms",
                    "synthesis_started_ms",
                    "first_chunk_ms",
                    "first_packets_ms",
                    "first_sent_ms",
                )
            ]
            assert stamps == sorted(stamps) and stamps[0] == round(received, 3)
            assert stamps[-1] <= monotonic_ms()
        await speaker.aclose()


async def test_a_say_that_finds_the_engine_busy_is_queued_then_spoken() -> None:
    engine = ScriptedEngine(chunk_s=0.1, chunks=2, delay_s=0.05)
    service = SynthesisService(engine, 1)
    streams = []
    for _ in range(2):
        events: list[dict[str, Any]] = []
        speaker = PacedSpeech(
            service, StreamEncoder(OpusSettings()), lambda e, out=events: out.append(e.as_dict())
        )
        speaker.start()
        streams.append((speaker, events))
    for number, (speaker, _) in enumerate(streams):
        speaker.queue.say(req("hello"), f"s{number}")
    for speaker, _ in streams:
        await wait_buffered(speaker, 9)
        await play(speaker, 15)
    first, second = (events for _, events in streams)
    assert [e["type"] for e in first] == ["speech.started", "speech.done"]
    assert [e["type"] for e in second] == ["speech.queued", "speech.started", "speech.done"]
    assert second[0] == {"type": "speech.queued", "id": "s1", "position": 1}
    for speaker, _ in streams:
        await speaker.aclose()
    assert service.stats().refused_total == 0
    service.close()


async def test_speech_started_carries_server_times_since_the_message_arrived() -> None:
    speaker, events = make(ScriptedEngine(chunk_s=0.1, chunks=2))
    utterance = speaker.queue.say(req("hello"), "a")
    utterance.timings.received_ms = monotonic_ms()
    await wait_buffered(speaker, 9)
    await play(speaker, 2)
    server_ms = events[0]["server_ms"]
    assert list(server_ms) == ["synthesis", "first_chunk", "first_packet", "sent"]
    assert 0 <= server_ms["synthesis"] <= server_ms["first_chunk"] <= server_ms["first_packet"]
    assert server_ms["first_packet"] <= server_ms["sent"]
    assert "timings" not in events[0]  # the absolute stamps stay behind VMS_DEBUG_TIMINGS
    await speaker.aclose()


async def test_hold_replays_what_a_dead_path_swallowed_and_plays_nothing_meanwhile() -> None:
    engine = ScriptedEngine(chunk_s=0.2, chunks=5)  # 1 s: 50 frames
    speaker, events = make(engine)
    speaker.queue.say(req("one"), "a")
    await wait_buffered(speaker, 50)
    played = await play(speaker, 30)
    sent = [p for p in played if p is not None]
    speaker.hold(rewind_frames=10)  # the last 10 frames never arrived
    assert speaker.held and speaker.rewound_frames == 10
    assert await play(speaker, 5) == [None] * 5  # silence while the path is checked
    speaker.release()
    rest = [p for p in await play(speaker, 60) if p is not None]
    assert rest[:10] == sent[-10:]  # sent again, in order, then the rest
    assert len(sent) + len(rest) == 50 + 10
    done = [e for e in events if e["type"] == "speech.done"]
    assert done and done[0]["duration_ms"] == 1000  # the whole utterance, once
    assert speaker.underruns == 0
    # nothing to rewind between utterances: an utterance done is not played again
    speaker.hold(rewind_frames=10)
    assert speaker.rewound_frames == 10
    speaker.release()
    await speaker.aclose()
