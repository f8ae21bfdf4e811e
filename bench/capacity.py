"""Capacity of 1:1 sessions on one core: the server beside the naive aiortc baseline.

Run from the repository root::

    python -m bench.capacity            # full ramp of both, about 6 minutes on 2 cores
    python -m bench.capacity --quick    # 10 and 30 sessions, under a minute

Run (1) of issue 5: sessions that all speak continuously, media path only. The
server process is pinned to core 0; the receiving peers (aiortc, nothing decoded)
run in one process pinned to core 1. Two servers are ramped in the same run, each
in a fresh process:

* **ours**: the real app (``signaling.app.create_app``), N ``POST /whep`` sessions,
  each kept speaking by its client (two ``say`` queued, one more on every
  ``speech.started``). Synthesis is replaced by ``ReplayEngine``, which yields
  speech Piper synthesised once; resampling, Opus (opuslib, 32 kbps, FEC),
  pacing and sending are the server's own.
* **baseline** (``bench/_naive_aiortc.py``, benchmark only): what aiortc's
  examples, pipecat's SmallWebRTC transport and fastrtc do: an
  ``AudioStreamTrack``-style ``recv`` that sleeps until
  ``start + timestamp / rate - time.time()`` and returns raw frames, encoded by
  aiortc (96 kbps, no FEC, one thread-pool hop per frame). It loops the same speech,
  already at 48 kHz.

A step passes when frame lateness p99 is under 10 ms (ours: each pacer tick after
its deadline; baseline: each track's wake-up after its deadline), with no underruns
and no arrival gap over 60 ms at any receiver. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import sys
from collections.abc import Sequence
from typing import Final

from bench._fanout_client import CLIENT_CORE
from bench._fanout_server import MODE_AIORTC, MODE_NAIVE
from bench.fanout import (
    DEFAULT_PLAN,
    QUICK_PLAN,
    ModeResult,
    Step,
    print_legend,
    print_machine,
    print_mode,
    print_table,
    run_all,
    synthesise_once,
)

STEPS: Final = (10, 20, 30, 40, 50, 60, 70, 80, 100, 120, 150, 200)
QUICK_STEPS: Final = (10, 30)
NAMES: Final = {MODE_NAIVE: "ours (1:1 sessions)", MODE_AIORTC: "baseline (naive aiortc)"}


def meets(step: Step) -> bool:
    """Lateness p99 < 10 ms, no underruns, every session joined, no receiver gap > 60 ms."""
    return step.passed and step.client.gaps == 0


def largest(result: ModeResult) -> int | None:
    ok = [s.n for s in result.steps if meets(s)]
    return max(ok) if ok else None


def print_summary(results: Sequence[ModeResult]) -> None:
    rows = []
    for r in results:
        best = largest(r)
        at = next((s for s in r.steps if s.n == best), None)
        first_fail = next((s for s in r.steps if not meets(s)), None)
        why = []
        if first_fail is not None:
            why = first_fail.failures()
            if first_fail.client.gaps:
                why.append(f"{first_fail.client.gaps} gaps > 60 ms")
        open_ended = bool(r.steps) and first_fail is None
        rows.append(
            (
                NAMES[r.mode],
                "-" if best is None else (f">= {best}" if open_ended else str(best)),
                "-" if at is None else f"{at.server.lateness.p99_ms:.2f}",
                "-" if at is None else f"{at.server_cpu * 100:.0f}",
                "-" if at is None else f"{at.cpu_ms_per_listener_s:.1f}",
                "-" if first_fail is None else str(first_fail.n),
                ", ".join(why) or "-",
            )
        )
    print_table(
        "Largest N with lateness p99 < 10 ms, no underruns, no receiver gap > 60 ms",
        ("server", "largest N", "p99 at N", "CPU % at N", "ms/session-s", "first failing", "why"),
        rows,
        left=(0, 6),
    )
    by_mode = {r.mode: largest(r) for r in results}
    ours, base = by_mode.get(MODE_NAIVE), by_mode.get(MODE_AIORTC)
    if ours and base:
        print(f"Ratio ours / baseline: {ours / base:.2f}x ({ours} vs {base} sessions on one core).")
    else:
        print(f"Ratio ours / baseline: not defined ({ours} vs {base}).")
    print()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.capacity",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="10 and 30 sessions, under a minute")
    parser.add_argument("--steps", type=str, default=None, help="comma-separated session counts")
    parser.add_argument("--hold", type=float, default=None, help="seconds measured per step")
    parser.add_argument("--only", choices=("ours", "baseline"), default=None)
    args = parser.parse_args(argv)
    plan = dataclasses.replace(
        QUICK_PLAN if args.quick else DEFAULT_PLAN, steps=QUICK_STEPS if args.quick else STEPS
    )
    if args.steps:
        try:
            steps = tuple(sorted({int(v) for v in args.steps.split(",") if v.strip()}))
        except ValueError:
            parser.error("--steps takes comma-separated integers")
        if not steps or steps[0] < 1:
            parser.error("--steps must be positive")
        plan = dataclasses.replace(plan, steps=steps)
    if args.hold is not None:
        if args.hold <= 0:
            parser.error("--hold must be positive")
        plan = dataclasses.replace(plan, hold_s=args.hold)
    if len(os.sched_getaffinity(0)) < 2 or (os.cpu_count() or 1) < 2:
        print("bench.capacity not run: it pins the server and the receivers to two cores.")
        return 0

    logging.basicConfig(level=logging.WARNING)
    print_machine()
    sys.stdout.flush()
    speech = synthesise_once()
    os.sched_setaffinity(0, {CLIENT_CORE})
    print(
        f"Speech: Piper synthesised {speech.duration_s:.1f} s once; both servers replay it"
        f" forever.\nSteps: {', '.join(map(str, plan.steps))}; per step: join, settle"
        f" {plan.settle_s:g} s, measure {plan.hold_s:g} s.\n"
    )
    modes = {"ours": (MODE_NAIVE,), "baseline": (MODE_AIORTC,)}.get(
        args.only or "", (MODE_NAIVE, MODE_AIORTC)
    )
    results = asyncio.run(run_all(plan, speech, modes))
    for result in results:
        print_mode(result, plan)
    print_legend()
    print(
        "Baseline rows: p50/p99/max and send p99 are each track's wake-up after its deadline;\n"
        "'enc' is asyncio's default pool, where aiortc encodes; it has no underruns by design.\n"
    )
    print_summary(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
