"""Fan-out capacity: one bot speaking continuously to N listeners, the server on one core.

Run from the repository root::

    python -m bench.fanout            # full ramp, about 6 minutes on 2 cores
    python -m bench.fanout --quick    # a few small steps, under a minute

The server (``signaling.app.create_app`` with the replayed speech of
``bench._harness``) runs in its own process pinned to core 0; the listeners (aiortc
peers that count RTP packets and decode nothing), the bot and this script on core 1.
Two modes, each on a fresh server:

* ours (room fan-out): one room, one bot on ``/rooms/{room}/bot`` saying text back to
  back, N listeners on ``POST /rooms/{room}/whep``: one Speaker, one Opus encoder, one
  Pacer, each packet written to every listener;
* per-listener (1:1): N ``POST /whep`` sessions speaking the same text, each with its
  own Speaker, Opus encoder and Pacer.

Per step: join N, settle, ``POST /stats/window``, hold, ``GET /stats``. A step passes when
the pacer's lateness p99 is under 10 ms with no underruns. Nothing is asserted.
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

import numpy as np

from bench._harness import (
    LEGEND,
    MODE_NAIVE,
    MODE_NAMES,
    MODE_ROOM,
    P99_LIMIT_MS,
    ModeResult,
    Plan,
    print_mode,
    print_pinned_machine,
    run_mode,
    synthesise_once,
)
from bench._peers import PEERS_CORE
from bench._report import counts, positive, print_table

DEFAULT_PLAN: Final = Plan(
    (*range(5, 45, 5), 50, 60, 80, 100, 120, 160, 200, 240, 280, 320),
    settle_s=5.0,
    hold_s=10.0,
    mode_budget_s=270.0,
)
QUICK_PLAN: Final = Plan((10, 50, 100), settle_s=2.0, hold_s=3.0, mode_budget_s=25.0)


def cpu_per_listener_ms(result: ModeResult) -> float | None:
    """Server CPU added per listener (ms per second): a line fitted over passing steps,
    so the room's fixed cost (its one encoder and pacer) is left out."""
    points = [(s.n, s.cpu() * 1000) for s in result.steps if not s.failures()]
    if len({n for n, _ in points}) < 2:
        return None
    ns, cpu_ms = zip(*points, strict=True)
    return float(np.polyfit(np.array(ns, float), np.array(cpu_ms), 1)[0])


def print_summary(results: Sequence[ModeResult]) -> None:
    rows = []
    for r in results:
        first_fail = next((s for s in r.steps if s.failures()), None)
        slope = cpu_per_listener_ms(r)
        rows.append((
            MODE_NAMES[r.mode], r.largest(),
            "-" if first_fail is None else f"{first_fail.n}: {', '.join(first_fail.failures())}",
            "-" if slope is None else f"{slope:.1f}",
        ))  # fmt: skip
    print_table(
        f"Largest N with pacer lateness p99 < {P99_LIMIT_MS:g} ms and no underruns",
        ("mode", "largest N", "first failing N: why", "server CPU ms/s per added listener"),
        rows,
        left=(0, 2),
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.fanout",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="a few small steps, under a minute")
    parser.add_argument("--steps", type=counts, help="listener counts to ramp through")
    parser.add_argument("--hold", type=positive(float), help="seconds measured per step")
    parser.add_argument("--only", choices=("ours", "naive"), help="ramp one mode only")
    args = parser.parse_args(argv)
    plan = QUICK_PLAN if args.quick else DEFAULT_PLAN
    plan = dataclasses.replace(
        plan, steps=args.steps or plan.steps, hold_s=args.hold or plan.hold_s
    )
    if len(os.sched_getaffinity(0)) < 2:
        print("bench.fanout not run: it pins the server and the listeners to two cores.")
        return 0
    logging.basicConfig(level=logging.WARNING)
    print_pinned_machine()
    speech = synthesise_once()
    os.sched_setaffinity(0, {PEERS_CORE})  # the bot and this script stay off the server's core
    print(
        f"Speech: Piper synthesised {speech.duration_s:.1f} s once; the server replays it for"
        f" every say.\nPer step: join, settle {plan.settle_s:g} s, measure {plan.hold_s:g} s.\n"
    )
    modes = {"ours": (MODE_ROOM,), "naive": (MODE_NAIVE,)}.get(args.only, (MODE_ROOM, MODE_NAIVE))
    results = [asyncio.run(run_mode(mode, plan, speech)) for mode in modes]
    for result in results:
        print_mode(result, plan)
    print(LEGEND)
    print_summary(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
