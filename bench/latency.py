"""Time to first speech and pacing of the real server over loopback, from its public surface.

Run from the repository root::

    python -m bench.latency [--sentences N] [--quick]

First the baseline: the Piper voice alone, here, timed to its first chunk per sentence.
Then ``voice-media-server`` in its own process (``VMS_DEBUG_TIMINGS=1``), this process its
WHEP client: one ``say`` per sentence, the next after ``speech.done``; ``speech.started``'s
``timings`` split the server's time (one ``time.monotonic()`` for both processes), and
``POST /stats/window`` / ``GET /stats`` give the pacing.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Final

import aiohttp

from bench import _report as report
from media_server.audio.frames import FRAME_SAMPLES
from media_server.rtc.ice import restrict_host_addresses
from synthesis import Engine, SynthesisRequest, create_engine
from tests.whep_client import WhepClient

DEFAULT_SENTENCES: Final = 20
QUICK_SENTENCES: Final = 5
EVENT_WAIT_S: Final = 60.0
FRAME_WAIT_S: Final = 2.0
"""The receiver's jitter buffer holds a few frames back: how long to wait for them."""
AUDIBLE_RMS: Final = 100.0
"""A decoded frame louder than this (int16 RMS, about -50 dBFS) counts as audible."""
WARM_UP: Final = "Warming up the voice before the measured sentences."

Stamps = dict[str, float]
"""One ``say`` in monotonic ms: the server's ``timings``, the client's ``said`` ...
``first_audible``, and ``alone``: the engine-alone first chunk of the same text."""


def engine_first_chunk_ms(engine: Engine, text: str) -> float:
    """The baseline: the engine called directly, timed to its first chunk, then stopped."""
    cancel = threading.Event()
    started = time.monotonic()
    chunks = engine.synthesize(SynthesisRequest(text=text), cancel)
    try:
        next(chunks)
        return (time.monotonic() - started) * 1000
    finally:
        cancel.set()
        getattr(chunks, "close", lambda: None)()


async def say(client: WhepClient, utterance_id: str, text: str) -> Stamps:
    frames_before, events_before = len(client.frames), len(client.events)
    stamps: Stamps = {"said": time.monotonic() * 1000}
    client.say(text, utterance_id)
    while True:
        event = await client.next_event(wait_s=EVENT_WAIT_S)
        if event.get("id") == utterance_id and event["type"] in ("speech.done", "error"):
            if event["type"] == "error":
                raise RuntimeError(f"{text!r}: {event.get('error')}: {event.get('message')}")
            break
    at, started = next((at, e) for at, e in client.events[events_before:] if "timings" in e)
    stamps.update(started["timings"], started_event=at * 1000)
    deadline = time.monotonic() + FRAME_WAIT_S
    while "first_audible" not in stamps and time.monotonic() < deadline:
        for frame in client.frames[frames_before:]:
            if frame.pts >= started["stream_ts"]:
                stamps.setdefault("first_frame", frame.arrival * 1000)
                if frame.rms > AUDIBLE_RMS:
                    stamps["first_audible"] = frame.arrival * 1000
                    break
        await asyncio.sleep(0.02)
    return stamps


async def measure(sentences: Sequence[str]) -> tuple[list[Stamps], list[tuple[str, str]]]:
    """Every sentence's stamps, and the pacing rows of the measured phase."""
    server = report.ServerProcess({"VMS_DEBUG_TIMINGS": "1"})
    try:
        async with aiohttp.ClientSession() as http:
            await server.ready(http)
            client = WhepClient(server.base)
            await client.connect(http, headers=report.OPERATOR)
            try:
                await say(client, "warm-up", WARM_UP)
                await report.start_window(http, server.base)
                pids = (server.process.pid, os.getpid())
                at = [time.monotonic(), report.system_busy_s(), *map(report.process_cpu_s, pids)]
                said = [await say(client, f"s{i}", text) for i, text in enumerate(sentences)]
                end = [time.monotonic(), report.system_busy_s(), *map(report.process_cpu_s, pids)]
                (p,) = (await report.server_stats(http, server.base))["per_session"]
            finally:
                await client.close(http)
    finally:
        server.stop()
    wall, busy, server_s, client_s = (e - s for e, s in zip(end, at, strict=True))
    frames = client.frames
    gaps = sum(b.pts - a.pts != FRAME_SAMPLES for a, b in zip(frames, frames[1:], strict=False))
    lateness = " / ".join(f"{p[f'lateness_{q}_ms']:.3f}" for q in ("p50", "p99", "max"))
    others = max(0.0, busy - server_s - client_s)
    return said, [
        ("measured phase (s)", f"{wall:.1f}"),
        ("frame lateness p50 / p99 / max (ms)", lateness),
        ("frames sent (speech)", f"{p['frames_sent']} ({p['speech_frames_sent']})"),
        ("underruns / skipped frames", f"{p['underruns']} / {p['skipped_frames']}"),
        ("frames decoded by the client / pts gaps", f"{len(frames)} / {gaps}"),
        (
            "cores busy: server / client / the rest",
            " / ".join(f"{v / wall:.2f}" for v in (server_s, client_s, others)),
        ),
    ]  # report.fmt: skip


def span(start: str, end: str, minus: tuple[str, str] | None = None) -> Callable[[Stamps], Any]:
    """``end - start`` in ms (less the span ``minus``); None when a stamp is missing."""

    def get(s: Stamps) -> float | None:
        if start not in s or end not in s:
            return None
        inner = 0.0 if minus is None else span(*minus)(s)
        return None if inner is None else s[end] - s[start] - inner

    return get


ROWS: Final = (
    ("engine alone (baseline): call -> first chunk", lambda s: s["alone"]),
    ("server: text received -> first speech frame sent", span("received_ms", "first_sent_ms")),
    ("  received -> synthesis started", span("received_ms", "synthesis_started_ms")),
    (
        "  engine in the server: started -> first chunk",
        span("synthesis_started_ms", "first_chunk_ms"),
    ),
    ("  first chunk -> first Opus packets", span("first_chunk_ms", "first_packets_ms")),
    ("  first packets -> pacer sends them", span("first_packets_ms", "first_sent_ms")),
    (
        "server - its engine's first chunk (pipeline)",
        span("received_ms", "first_sent_ms", ("synthesis_started_ms", "first_chunk_ms")),
    ),
    (
        "server - engine alone, same sentence",
        lambda s: s["first_sent_ms"] - s["received_ms"] - s["alone"],
    ),
    ("client: say sent -> server received it", span("said", "received_ms")),
    ("client: say sent -> speech.started received", span("said", "started_event")),
    ("client: say sent -> first speech frame decoded*", span("said", "first_frame")),
    ("client: say sent -> first audible frame decoded*", span("said", "first_audible")),
)  # report.fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    parser = report.command_line("bench.latency", __doc__)
    parser.add_argument("--sentences", type=int, default=None, help="sentences to measure")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_SENTENCES} sentences")
    args = parser.parse_args(argv)
    count = args.sentences or (QUICK_SENTENCES if args.quick else DEFAULT_SENTENCES)
    sentences = [report.SENTENCES[i % len(report.SENTENCES)] for i in range(max(1, count))]
    logging.basicConfig(level=logging.WARNING)
    report.print_machine(("aiortc", "av", "piper-tts", "onnxruntime"))
    engine = create_engine("piper")
    try:
        engine_first_chunk_ms(engine, WARM_UP)
        alone = {text: engine_first_chunk_ms(engine, text) for text in dict.fromkeys(sentences)}
    finally:
        engine.close()
    restrict_host_addresses(("127.0.0.1",))  # the client offers loopback only
    said, pacing = asyncio.run(measure(sentences))
    for stamps, text in zip(said, sentences, strict=True):
        stamps["alone"] = alone[text]
    rows = [
        (label, *map(report.fmt, report.p50_p90_max(map(get, said)) or (None,) * 3))
        for label, get in ROWS
    ]
    report.print_table(
        f"Time to first speech ({len(said)} sentences, ms)", ("", "p50", "p90", "max"), rows
    )
    print(
        f"* includes aiortc's jitter buffer (80 ms) and the voice's quiet lead-in; audible ="
        f" RMS > {AUDIBLE_RMS:g}.\nPiper's audio differs from call to call: 'engine alone' is"
        " another synthesis of the text.\n"
    )
    report.print_table(
        "Pacing of the session over the measured phase (GET /stats)", ("figure", "value"), pacing
    )
    print(
        "Lateness: how long after its 20 ms deadline the pacer sent each frame (percentiles:\n"
        "the last 3000 frames). Server and client share this machine's cores.\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
