"""Time to first speech and pacing of the real server over loopback, from its public surface.

Run from the repository root::

    python -m bench.latency [--sentences N] [--quick]

1. Baseline: the Piper voice alone, in this process, called directly for every sentence
   (its first chunk), before the server starts.
2. The server: ``voice-media-server`` in its own process (real Piper voice,
   ``VMS_DEBUG_TIMINGS=1``), and this process its WHEP client (aiortc, decoding). One
   ``say`` per sentence; the next goes out after ``speech.done``. ``speech.started``'s
   ``timings`` split the server's time (both processes read the same
   ``time.monotonic()``); ``POST /stats/window`` after the warm-up and ``GET /stats`` at
   the end give the pacing. Nothing is patched and nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import aiohttp

from bench._report import (
    OPERATOR,
    ServerProcess,
    fmt,
    p50_p90_max,
    print_machine,
    print_table,
    process_cpu_s,
    server_stats,
    start_window,
    system_busy_s,
)
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
JITTER_PREFETCH_FRAMES: Final = 4
"""aiortc's audio jitter buffer (capacity 16, prefetch 4) holds this many frames back."""
WARM_UP: Final = "Warming up the voice before the measured sentences."

SENTENCES: Final = (
    "Hello there.",
    "The quick brown fox jumps over the lazy dog.",
    "Your order has shipped, and it should arrive on Thursday afternoon between two and four.",
    "Yes.",
    "Could you please repeat the last part of the address, starting with the street name?",
    "It is twenty past seven.",
    "After the storm passed, the whole neighbourhood came out to clear the fallen branches "
    "from the road. By evening the street looked almost normal again.",
    "Please hold on a moment while I look that up for you.",
    "Temperatures will drop to minus three degrees overnight, so drive carefully.",
    "Thank you!",
    "The meeting has been moved from Monday morning to Wednesday at half past ten, "
    "in the large conference room on the third floor.",
    "I did not catch that. Could you say it again?",
    "Our support line is open every day from eight in the morning until eight at night.",
    "Sure, I can help with that.",
    "Before you continue, make sure the device is plugged in and the green light is on; "
    "otherwise the update may fail halfway through.",
    "Good morning, and welcome back.",
    "The total comes to forty two dollars and fifteen cents, including tax.",
    "Is there anything else I can do for you today?",
    "Researchers measured the response time of the system under load, and found that most "
    "of the delay came from the speech model itself rather than from the network.",
    "Goodbye, and have a lovely evening.",
)


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
        close = getattr(chunks, "close", None)
        if close is not None:
            close()


@dataclass(frozen=True, slots=True)
class Said:
    """One ``say`` as the client saw it, with the server's stamps; all in monotonic ms."""

    text: str
    said_ms: float
    started_ms: float | None
    """``speech.started`` arrived here."""
    timings: dict[str, float]
    """The server's stamps from ``speech.started`` (``VMS_DEBUG_TIMINGS``)."""
    first_frame_ms: float | None
    first_audible_ms: float | None
    error: str | None


def _first_arrival(client: WhepClient, start: int, stream_ts: int, audible: bool) -> float | None:
    for frame in client.frames[start:]:
        if frame.pts >= stream_ts and (not audible or frame.rms > AUDIBLE_RMS):
            return frame.arrival * 1000
    return None


async def say(client: WhepClient, utterance_id: str, text: str) -> Said:
    frames_before, events_before = len(client.frames), len(client.events)
    said_ms = time.monotonic() * 1000
    client.say(text, utterance_id)
    error = None
    while True:
        event = await client.next_event(wait_s=EVENT_WAIT_S)
        if event.get("id") == utterance_id and event["type"] in ("speech.done", "error"):
            if event["type"] == "error":
                error = f"{event.get('error')}: {event.get('message')}"
            break
    started = next(
        ((at, e) for at, e in client.events[events_before:] if e["type"] == "speech.started"),
        None,
    )
    first_frame = first_audible = None
    if started is not None:
        deadline = time.monotonic() + FRAME_WAIT_S
        while time.monotonic() < deadline:
            stream_ts = int(started[1]["stream_ts"])
            first_frame = _first_arrival(client, frames_before, stream_ts, audible=False)
            first_audible = _first_arrival(client, frames_before, stream_ts, audible=True)
            if first_audible is not None:
                break
            await asyncio.sleep(0.02)
    return Said(
        text,
        said_ms,
        None if started is None else started[0] * 1000,
        {} if started is None else started[1].get("timings") or {},
        first_frame,
        first_audible,
        error,
    )


@dataclass(frozen=True, slots=True)
class Run:
    said: list[Said]
    pacing: dict[str, Any]
    """The session's figures from ``GET /stats`` over the measured phase."""
    measured_s: float
    cpu: tuple[float, float, float]
    """Average cores busy: the server process, this process (client), everything else."""
    frames_decoded: int
    pts_gaps: int


async def measure(sentences: Sequence[str]) -> Run:
    server = ServerProcess({"VMS_DEBUG_TIMINGS": "1"})
    try:
        async with aiohttp.ClientSession() as http:
            await server.ready(http)
            client = WhepClient(server.base)
            await client.connect(http, headers=OPERATOR)
            try:
                await say(client, "warm-up", WARM_UP)
                await start_window(http, server.base)
                pids = (server.process.pid, os.getpid())
                cpu_at = [time.monotonic(), system_busy_s(), *map(process_cpu_s, pids)]
                said = [await say(client, f"s{i}", text) for i, text in enumerate(sentences)]
                cpu_end = [time.monotonic(), system_busy_s(), *map(process_cpu_s, pids)]
                (pacing,) = (await server_stats(http, server.base))["per_session"]
            finally:
                await client.close(http)
    finally:
        server.stop()
    wall, busy, server_s, client_s = (e - s for e, s in zip(cpu_end, cpu_at, strict=True))
    frames = client.frames
    gaps = sum(
        1 for a, b in zip(frames, frames[1:], strict=False) if b.pts - a.pts != FRAME_SAMPLES
    )
    cores = (server_s / wall, client_s / wall, max(0.0, busy - server_s - client_s) / wall)
    return Run(said, pacing, wall, cores, len(frames), gaps)


def _between(start: str, end: str) -> Callable[[Said], float | None]:
    def get(s: Said) -> float | None:
        a, b = s.timings.get(start), s.timings.get(end)
        return None if a is None or b is None else b - a

    return get


def _client(end: Callable[[Said], float | None]) -> Callable[[Said], float | None]:
    def get(s: Said) -> float | None:
        at = end(s)
        return None if at is None else at - s.said_ms

    return get


def _client_to(stamp: str) -> Callable[[Said], float | None]:
    """From the client's ``say`` to a server stamp (the same clock)."""

    def get(s: Said) -> float | None:
        at = s.timings.get(stamp)
        return None if at is None else at - s.said_ms

    return get


def print_latency(run: Run, alone: dict[str, float]) -> None:
    said = [s for s in run.said if s.error is None]
    server = _between("received_ms", "first_sent_ms")
    engine = _between("synthesis_started_ms", "first_chunk_ms")

    def vs_alone(s: Said) -> float | None:
        total = server(s)
        return None if total is None else total - alone[s.text]

    def vs_engine(s: Said) -> float | None:
        total, inner = server(s), engine(s)
        return None if total is None or inner is None else total - inner

    def row(label: str, get: Callable[[Said], float | None]) -> tuple[str, ...]:
        values = [get(s) for s in said]
        stats = p50_p90_max(values)
        n = str(sum(v is not None for v in values))
        return (label, *(fmt(v) for v in (stats or (None, None, None))), n)

    rows = [
        ("engine alone (baseline): call -> first chunk", lambda s: alone[s.text]),
        ("server: text received -> first speech frame sent", server),
        ("  received -> synthesis started", _between("received_ms", "synthesis_started_ms")),
        ("  engine in the server: started -> first chunk", engine),
        ("  first chunk -> first Opus packets", _between("first_chunk_ms", "first_packets_ms")),
        ("  first packets -> pacer sends them", _between("first_packets_ms", "first_sent_ms")),
        ("server - its engine's first chunk (pipeline)", vs_engine),
        ("server - engine alone, same sentence", vs_alone),
        ("client: say sent -> server received it", _client_to("received_ms")),
        ("client: say sent -> speech.started received", _client(lambda s: s.started_ms)),
        ("client: say sent -> first speech frame*", _client(lambda s: s.first_frame_ms)),
        ("client: say sent -> first audible frame*", _client(lambda s: s.first_audible_ms)),
    ]
    print_table(
        f"Time to first speech ({len(said)} sentences, ms)",
        ("measure", "p50", "p90", "max", "n"),
        [row(label, get) for label, get in rows],
    )
    failed = [s for s in run.said if s.error is not None]
    if failed:
        print(f"{len(failed)} sentences failed: {failed[0].error}\n")
    print(
        f"* decoded (audible: RMS > {AUDIBLE_RMS:g}); includes aiortc's jitter buffer"
        f" ({JITTER_PREFETCH_FRAMES * 20} ms) and the voice's quiet lead-in.\n"
        "Piper gives different audio for the same text from call to call, so 'engine alone' is\n"
        "another synthesis; 'server - its engine's first chunk' uses the one actually played.\n"
    )


def print_pacing(run: Run) -> None:
    p = run.pacing
    server, client, others = run.cpu
    print_table(
        f"Pacing over the measured phase ({run.measured_s:.1f} s; GET /stats after"
        " POST /stats/window; percentiles over its last 3000 frames)",
        ("figure", "value"),
        [
            ("frame lateness p50 / p99 / max (ms)", " / ".join(
                f"{p[f'lateness_{q}_ms']:.3f}" for q in ("p50", "p99", "max"))),
            ("frames sent (speech)", f"{p['frames_sent']} ({p['speech_frames_sent']})"),
            ("underruns / skipped frames", f"{p['underruns']} / {p['skipped_frames']}"),
            ("dropped frames (track queue, whole session)", str(p["dropped_frames"])),
            ("frames decoded by the client / pts gaps", f"{run.frames_decoded} / {run.pts_gaps}"),
            ("cores busy: server / client / everything else",
             f"{server:.2f} / {client:.2f} / {others:.2f}"),
        ],
    )  # fmt: skip
    print(
        "Lateness = how long after its 20 ms deadline the pacer sent each frame. The server\n"
        "(event loop, synthesis and Opus threads) and the client share this machine's cores.\n"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.latency",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--sentences", type=int, default=None, help="sentences to measure")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_SENTENCES} sentences")
    args = parser.parse_args(argv)
    count = args.sentences or (QUICK_SENTENCES if args.quick else DEFAULT_SENTENCES)
    sentences = [SENTENCES[i % len(SENTENCES)] for i in range(max(1, count))]
    logging.basicConfig(level=logging.WARNING)
    print_machine(("aiortc", "av", "piper-tts", "onnxruntime"))
    engine = create_engine("piper")
    try:
        engine_first_chunk_ms(engine, WARM_UP)
        alone = {text: engine_first_chunk_ms(engine, text) for text in dict.fromkeys(sentences)}
    finally:
        engine.close()
    restrict_host_addresses(("127.0.0.1",))  # the client offers loopback only
    run = asyncio.run(measure(sentences))
    print_latency(run, alone)
    print_pacing(run)
    return 0


if __name__ == "__main__":
    sys.exit(main())
