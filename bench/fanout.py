"""Fan-out capacity: one bot speaking continuously to N listeners, the server on one core.

Run from the repository root::

    python -m bench.fanout            # full ramp, about 6 minutes on 2 cores
    python -m bench.fanout --quick    # a few small steps, under a minute

Server on core 0, listeners (aiortc, nothing decoded), the bot and this script on core 1
(``bench._harness``); two modes, each on a fresh server: ours, one room (one bot saying
text back to back, N listeners: one PacedSpeech, Opus encoder and Pacer, each packet written
to every listener), and per-listener encoding (N 1:1 sessions speaking the same text,
each with its own). A step passes with pacer lateness p99 < 10 ms and no underruns.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import sys
from collections.abc import Sequence
from typing import Final

from bench import _harness as rig
from bench._peers import PEERS_CORE
from bench._report import command_line, counts, positive

DEFAULT_PLAN: Final = rig.Plan(
    (*range(5, 45, 5), 50, 60, 80, 100, 120, 160, 200, 240, 280, 320),
    settle_s=5.0,
    hold_s=10.0,
    mode_budget_s=270.0,
)
QUICK_PLAN: Final = rig.Plan((10, 50, 100), settle_s=2.0, hold_s=3.0, mode_budget_s=25.0)


def main(argv: Sequence[str] | None = None) -> int:
    parser = command_line("bench.fanout", __doc__)
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
    rig.print_pinned_machine()
    speech = rig.synthesise_once()
    os.sched_setaffinity(0, {PEERS_CORE})  # the bot and this script stay off the server's core
    print(
        f"Speech: Piper synthesised {speech.duration_s:.1f} s once; the server replays it for"
        f" every say.\nPer step: join, settle {plan.settle_s:g} s, measure {plan.hold_s:g} s.\n"
    )
    modes = {"ours": (rig.MODE_ROOM,), "naive": (rig.MODE_NAIVE,)}.get(
        args.only, (rig.MODE_ROOM, rig.MODE_NAIVE)
    )
    results = [asyncio.run(rig.run_mode(mode, plan, speech)) for mode in modes]
    for result in results:
        rig.print_mode(result, plan)
    print(rig.LEGEND)
    rig.print_summary(
        f"Largest N with pacer lateness p99 < {rig.P99_LIMIT_MS:g} ms and no underruns", results
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
