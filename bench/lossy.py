"""What a listener on a lossy link hears: ``bench.browser`` through a link with loss, delay
and jitter that this bench builds, ours beside the naive aiortc baseline.

Run from the repository root, as root::

    python -m bench.lossy [--quick] [--runs N] [--conditions clean,5%,15%,burst]
                          [--servers ours,FEC-only,naive]

The link (``bench/_netem.py``): two network namespaces made for the run, the server in one
(pinned to core 0), this script, Playwright and headless Chromium in the other (core 1), and
between them a relay process holding a TUN device of each. Each way, the relay drops packets
(random, or Gilbert-Elliott bursts) and delays every packet 40 ± 20 ms (uniform). Jitter
never reorders: a packet drawn to overtake the one ahead waits for it, as in a queue.
Everything crosses the link: WHEP's HTTP, ICE, DTLS, SCTP (the say and the events) and
RTP/RTCP. The relay counts what it drops and times what it forwards: the realised link is
printed beside the figures.

Per condition and server: a fresh server and Chromium, one warm-up say, then ``--runs`` says
of the 41-word text (five Harvard sentences), each after the last one's speech.done.
Printed, median over the runs: Chromium's inbound-rtp over each say (concealed samples /
samples received, samples inserted for deceleration and removed for acceleration, packets
lost, FEC packets received/discarded, jitter buffer delay per emitted sample, bytes per
second received), say -> first audible sample (``bench.browser``'s AudioWorklet tap) and the
word error rate of what Chromium played (recorded by the same worklet) under Whisper
tiny.en (``bench.seams``' recogniser, the ``[bench]`` extra).

Servers: ours (defaults), FEC-only (ours with ``VMS_RED_MAX_DISTANCE=0
VMS_AUDIO_ADAPTATION=off``: in-band FEC at a fixed 10 % expected loss, 32 kbps, no RED;
servers that predate those settings ignore them) and the naive aiortc baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import importlib.util
import os
import shutil
import sys
from collections.abc import Sequence
from typing import Any, Final

import numpy as np

from bench import _report as report
from bench import browser, seams
from bench._netem import SERVER_ADDRESS, Condition, link_or_skip
from tests.browser_check import CHROMIUM

TEXT: Final = " ".join(browser.HARVARD[1:6])  # 41 words, about 12 s of speech
"""Whisper tiny.en hears Piper say these words right (0-1 errors in three renderings); it
hears the first Harvard sentence's "birch canoe slid" as "birch can use lid" every time."""
QUICK_TEXT: Final = browser.HARVARD[2]
BURST_LOSS: Final = 0.075
BURST_LEAVE: Final = 0.4  # mean burst 1 / 0.4 = 2.5 packets
CONDITIONS: Final = {
    "clean": Condition(),
    "5%": Condition.random_loss(0.05),
    "15%": Condition.random_loss(0.15),
    "burst": Condition(enter=BURST_LOSS * BURST_LEAVE / (1 - BURST_LOSS), leave=BURST_LEAVE),
}
QUICK_CONDITIONS: Final = ("clean", "15%", "burst")
SERVERS: Final = {  # name: (bench.browser's server, env on top of its own)
    "ours": ("ours", {}),
    "FEC-only": ("ours", {"VMS_RED_MAX_DISTANCE": "0", "VMS_AUDIO_ADAPTATION": "off"}),
    "naive": ("naive aiortc", {}),
}
QUICK_SERVERS: Final = ("ours", "naive")


def unavailable() -> str | None:
    """Why this machine cannot run the bench, or None."""
    if os.geteuid() != 0:
        return "it needs root (network namespaces, TUN devices)"
    if shutil.which("ip") is None or not os.path.exists("/dev/net/tun"):
        return "it needs iproute2's ip and /dev/net/tun"
    if importlib.util.find_spec("playwright") is None or not CHROMIUM.exists():
        return f"it needs the playwright package and {CHROMIUM}"
    return None


def choices(allowed: Sequence[str]) -> Any:
    """argparse type: a comma-separated subset of ``allowed``, in the order given."""

    def parse(text: str) -> tuple[str, ...]:
        picked = tuple(v.strip() for v in text.split(",") if v.strip())
        if not picked or set(picked) - set(allowed):
            raise argparse.ArgumentTypeError(f"expected some of {','.join(allowed)}")
        return picked

    return parse


def score(said: list[dict[str, Any]], text: str, transcribe: Any) -> None:
    """Per run: concealed %, kB/s and, with a recogniser, the word error rate of the recording."""
    words = seams.word_errors(text, "")
    for r in said:
        for key in ("concealedSamples", "silentConcealedSamples"):
            r[f"{key}%"] = 100 * r[key] / max(1, r["totalSamplesReceived"])
        r["kB/s"] = r["bytesReceived"] / r["seconds"] / 1000
        pcm = np.frombuffer(base64.b64decode(r.pop("pcm")), "<i2")
        if transcribe is not None:
            r["heard"] = transcribe(pcm, r["rate"])
            r["wer"] = seams.word_errors(text, r["heard"]) / words


COLUMNS: Final = (  # header, key, digits
    ("concealed %", "concealedSamples%", 2), ("silent %", "silentConcealedSamples%", 2),
    ("+decel", "insertedSamplesForDeceleration", 0),
    ("-accel", "removedSamplesForAcceleration", 0), ("lost", "packetsLost", 0),
    ("FEC rx", "fecPacketsReceived", 0), ("FEC disc", "fecPacketsDiscarded", 0),
    ("jb ms", "jitterBufferMs", 1), ("kB/s", "kB/s", 2), ("started", "started", 0),
    ("audible", "audible", 0), ("WER", "wer", 3),
)  # fmt: skip


def median(said: list[dict[str, Any]], key: str, digits: int) -> str:
    values = [v for r in said if isinstance(v := r.get(key), int | float) and v == v]
    return report.fmt(float(np.median(values)), digits) if values else "-"


def print_results(results: dict[tuple[str, str], tuple[list[dict[str, Any]], dict[str, Any]]],
                  wer: bool) -> None:  # fmt: skip
    headers = ("condition", "server", *(h for h, _, _ in COLUMNS))
    runs = [(c, f"{s} #{i}", *(median([r], k, d) for _, k, d in COLUMNS))
            for (c, s), (said, _) in results.items() for i, r in enumerate(said, 1)]  # fmt: skip
    report.print_table("Each run", headers, runs, left=(0, 1))
    rows = []
    for (c, s), (said, _) in results.items():
        first = [r["audible"] for r in said if r.get("audible") is not None]
        spread = f" ({min(first):.0f}-{max(first):.0f})" if len(first) > 1 else ""
        cells = [median(said, k, d) + (spread if k == "audible" else "") for _, k, d in COLUMNS]
        rows.append((c, s, *cells))
    report.print_table("Median of the runs (audible: min-max)", headers, rows, left=(0, 1))
    if not wer:
        print("WER: recogniser not installed (pip install -e '.[bench]')\n")
    print(f"What Whisper tiny.en heard (the text: {TEXT!r} or, quick, {QUICK_TEXT!r})" * wer)
    for (c, s), (said, _) in results.items() if wer else ():
        for i, r in enumerate(said, 1):
            print(f"{c}, {s} #{i}: {r['heard'].strip()}")
    print()
    link = []
    for (c, s), (_, realised) in results.items():
        for way in ("up", "down"):
            r = realised.get(way, {})
            p50, p5, p95, top = r.get("delay_ms") or ["-"] * 4
            loss, burst = report.fmt(r.get("loss_pct"), 2), report.fmt(r.get("burst"), 2)
            delay = f"{p50} ({p5}-{p95}, max {top})"
            link.append((c, s, way, str(r.get("packets", "-")), loss, burst, delay))
    report.print_table(
        "The link as realised (the relay's counts; up: client -> server)",
        ("condition", "server", "way", "packets", "loss %", "mean burst", "delay ms p50 (p5-p95)"),
        link, left=(0, 1, 2),
    )  # fmt: skip


LEGEND: Final = """\
Per say, Chromium's inbound-rtp deltas: concealed % = concealedSamples / totalSamplesReceived
(silent %: silentConcealedSamples, concealment where the signal was silence); +decel / -accel =
samples inserted for deceleration / removed for acceleration; lost = packets lost; FEC rx /
disc = fecPacketsReceived / Discarded (NetEq's redundant payloads, Opus in-band FEC or RED,
received / dropped as their packet had arrived: rx - disc were used); jb ms =
jitterBufferDelay / jitterBufferEmittedCount; kB/s = bytes received per second from the say
to 600 ms after speech.done. started / audible = ms from the say to speech.started and to the
first sample above -45 dBFS as Chromium plays it. WER = Whisper tiny.en's word errors on what
Chromium played / the text's words."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = report.command_line("bench.lossy", __doc__)
    parser.add_argument("--quick", action="store_true", help="1 short run, a few conditions (CI)")
    parser.add_argument("--runs", type=report.positive(int), help="says per session (default 3)")
    parser.add_argument("--conditions", type=choices(tuple(CONDITIONS)))
    parser.add_argument("--servers", type=choices(tuple(SERVERS)))
    args = parser.parse_args(argv)
    if why := unavailable():
        print(f"bench.lossy skipped: {why}")
        return 0
    runs, text = (args.runs or 1, QUICK_TEXT) if args.quick else (args.runs or 3, TEXT)
    conditions = args.conditions or (QUICK_CONDITIONS if args.quick else tuple(CONDITIONS))
    servers = args.servers or (QUICK_SERVERS if args.quick else tuple(SERVERS))
    pinned = len(os.sched_getaffinity(0)) >= 2
    results = {}
    with contextlib.ExitStack() as stack:
        link = link_or_skip(stack, "bench.lossy")
        if link is None:
            return 0
        packages = ("playwright", "aiortc", "av", "piper-tts", "faster-whisper")
        report.print_machine(packages, browser.chromium_version())
        where = "pinned to core 0, the rest on core 1" if pinned else "not pinned"
        print(f"Server {where}; {len(text.split())} words, {runs} runs after a warm-up\n")
        for c in conditions:
            for s in servers:
                realised: dict[str, Any] = {}
                with link.relay(CONDITIONS[c], realised):
                    name, env = SERVERS[s]
                    said, where = asyncio.run(browser.measure(
                        name, pinned, [text] * runs, env, SERVER_ADDRESS, link.server_ns, True
                    ))  # fmt: skip
                results[c, s] = said, realised
                print(f"{c} ({CONDITIONS[c].describe()}), {s}: {where}\n", flush=True)
    transcribe = seams.recogniser()
    for said, _ in results.values():
        score(said, text, transcribe)
    print(LEGEND)
    print_results(results, transcribe is not None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
