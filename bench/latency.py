"""Time to first speech and pacing of the real server over loopback, from its public surface.

Run from the repository root::

    python -m bench.latency [--sentences N] [--quick]
    python -m bench.latency --load [--sessions N] [--every S] [--duration D] [--quick]

First the baseline: the Piper voice alone, here, timed to its first chunk per sentence.
Then ``voice-media-server`` in its own process (``VMS_DEBUG_TIMINGS=1``), this process its
WHEP client: one ``say`` per sentence, the next after ``speech.done``; ``speech.started``'s
``timings`` split the server's time (one ``time.monotonic()`` for both processes), and
``POST /stats/window`` / ``GET /stats`` give the pacing.

``--load``: the server on core 0, N clients here on core 1, each saying a Harvard sentence
every S s (+- 20 %) for D s, timed by ``speech.started``; then again with 4 synthesis slots
(the default is one per core the server may use: here one).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import random
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from typing import Any, Final

import aiohttp
import numpy as np

from bench import _report as report
from bench._harness import SERVER_CORE, ServerWindow, cpu_clocks
from bench._peers import PEERS_CORE
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
HARVARD: Final = (
    "It's easy to tell the depth of a well.",
    "Help the woman get back to her feet.",
    "Oak is strong and also gives shade.",
    "Cats and dogs each hate the other.",
    "The pipe began to rust while new.",
    "Thieves who rob friends deserve jail.",
    "Four hours of steady work faced us.",
    "Smoky fires lack flame and heat.",
    "The juice of lemons makes fine punch.",
    "Rice is often served in round bowls.",
)
"""Harvard sentences (IEEE, 1969), 2.0-2.3 s each in the Piper voice: the ``--load`` says."""
DRAIN_S: Final = 15.0  # --load: waiting for the last says' answers (queue timeout: 10 s)
TARGET_MS: Final = 400.0

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


def p50_p95_max(values: list[float], digits: int = 0) -> str:
    if not values:
        return "-"
    return " / ".join(f"{v:.{digits}f}" for v in (*np.percentile(values, [50, 95]), max(values)))


LOAD_ROWS: Final = (
    f"says: sent / queued for a slot / refused / unanswered {DRAIN_S:g} s after the last",
    "say -> first speech packet: server, received -> sent",
    "say -> first speech packet: client, say -> speech.started",
    "  server: received -> synthesis slot held",
    "  server: received -> engine's first chunk",
    "speech per say (s)",
    "frame lateness: p50 (median session) / p99 / max (worst)",
    "underruns / skipped frames",
    "cores busy: server (its loop) / clients / the rest",
    f"target: client p95 <= {TARGET_MS:.0f} ms, no refusal",
)


async def load_run(env: dict[str, str], args: argparse.Namespace) -> tuple[str, list[str]]:
    """One server under the load: its column of the table (a title, cells as in LOAD_ROWS)."""
    server = report.ServerProcess({"VMS_DEBUG_TIMINGS": "1", **env}, cores={SERVER_CORE})
    clients = [WhepClient(server.base) for _ in range(args.sessions)]
    said: dict[str, float] = {}  # utterance id -> say sent, monotonic ms

    def answers() -> dict[str, dict[str, tuple[float, dict[str, Any]]]]:
        got: dict[str, dict[str, tuple[float, dict[str, Any]]]] = {}
        for client in clients:
            for at, event in client.events:
                got.setdefault(str(event.get("id")), {}).setdefault(event["type"], (at, event))
        return got

    async def speak(i: int, client: WhepClient, t0: float) -> None:
        """Staggered starts, then a say every ``args.every`` s +- 20 % (seeded)."""
        rng, at, k = random.Random(i), i * args.every / args.sessions, 0
        while at < args.duration:
            await asyncio.sleep(t0 + at - time.monotonic())
            said[f"c{i}-{k}"] = time.monotonic() * 1000
            client.say(HARVARD[(i + k) % len(HARVARD)], f"c{i}-{k}")
            at, k = at + args.every * rng.uniform(0.8, 1.2), k + 1

    try:
        async with aiohttp.ClientSession() as http:
            await server.ready(http)
            for client in clients:
                await client.connect(http, headers=report.OPERATOR)
            await say(clients[0], "warm-up", WARM_UP)
            await report.start_window(http, server.base)
            at, t0 = cpu_clocks(server.process.pid), time.monotonic()
            await asyncio.gather(*(speak(i, client, t0) for i, client in enumerate(clients)))
            for _ in range(int(DRAIN_S * 10)):  # until every say has its answer
                got = answers()
                if all({"speech.started", "error"} & got.get(u, {}).keys() for u in said):
                    break
                await asyncio.sleep(0.1)
            stats = await report.server_stats(http, server.base)
            end = cpu_clocks(server.process.pid)
            await asyncio.gather(*(client.close(http) for client in clients))
    finally:
        server.stop()
    got, ms, queued = answers(), defaultdict[str, list[float]](list), 0
    refused: Counter[str] = Counter()
    for u, said_ms in said.items():
        if "speech.started" in (r := got.get(u, {})):
            ms["client"].append(r["speech.started"][0] * 1000 - said_ms)
            for name, value in r["speech.started"][1]["server_ms"].items():
                ms[name].append(value)
        if "speech.done" in r:
            ms["spoken"].append(r["speech.done"][1]["duration_ms"] / 1000)
        refused.update([r["error"][1]["error"]] if "error" in r else [])
        queued += "speech.queued" in r
    wall, busy, both, server_s, loop_s = (e - s for e, s in zip(end, at, strict=True))
    w = ServerWindow.of(stats, wall, server_s, loop_s)
    p95 = float(np.percentile(ms["client"], 95)) if ms["client"] else float("inf")
    met = p95 <= TARGET_MS and not refused and len(ms["client"]) == len(said)
    return f"synthesis slots: {stats['synthesis']['max_concurrent']}", [
        f"{len(said)} / {queued} / {refused.total()} / {len(said) - len(ms['client'])}"
        + "".join(f", {n} {code}" for code, n in refused.items()),
        *(p50_p95_max(ms[k]) for k in ("sent", "client", "synthesis", "first_chunk")),
        p50_p95_max(ms["spoken"], 1),
        f"{w.p50_ms:.2f} / {w.p99_ms:.2f} / {w.max_ms:.1f}",
        f"{w.underruns} / {w.skipped_frames}",
        f"{server_s / wall:.2f} ({loop_s / wall:.2f}) / {(both - server_s) / wall:.2f}"
        f" / {max(0.0, busy - both) / wall:.2f}",
        f"{'met' if met else 'not met'} (p95 {p95:.0f} ms)",
    ]


def main_load(args: argparse.Namespace) -> int:
    if len(os.sched_getaffinity(0)) < 2:
        print("bench.latency --load not run: it pins the server and the clients to two cores.")
        return 0
    args.sessions = args.sessions or (4 if args.quick else 8)
    args.duration = args.duration or (15.0 if args.quick else 60.0)
    pinning = f"server on core {SERVER_CORE}; the clients, this script on {PEERS_CORE}"
    report.print_machine(("aiortc", "av", "piper-tts", "onnxruntime"), (("pinning", pinning),))
    os.sched_setaffinity(0, {PEERS_CORE})
    restrict_host_addresses(("127.0.0.1",))  # the clients offer loopback only
    runs = [asyncio.run(load_run(env, args)) for env in ({}, {"VMS_SYNTHESIS_WORKERS": "4"})]
    report.print_table(
        f"{args.sessions} sessions, a Harvard sentence each every {args.every:g} s +- 20 % for"
        f" {args.duration:g} s (ms; p50 / p95 / max)",
        ("", *(title for title, _ in runs)),
        [(label, *cells) for label, *cells in zip(LOAD_ROWS, *(c for _, c in runs), strict=True)],
    )
    print("server: speech.started's server_ms, after the say reached it. Lateness: GET /stats.\n")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = report.command_line("bench.latency", __doc__)
    parser.add_argument("--sentences", type=int, default=None, help="sentences to measure")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_SENTENCES} sentences")
    parser.add_argument("--load", action="store_true", help="first speech under a steady load")
    parser.add_argument("--sessions", type=report.positive(int), help="--load: 8 (quick 4)")
    parser.add_argument("--every", type=report.positive(float), default=3.0, help="--load: s")
    parser.add_argument("--duration", type=report.positive(float), help="--load: 60 s (quick 15)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.load:
        return main_load(args)
    count = args.sentences or (QUICK_SENTENCES if args.quick else DEFAULT_SENTENCES)
    sentences = [report.SENTENCES[i % len(report.SENTENCES)] for i in range(max(1, count))]
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
