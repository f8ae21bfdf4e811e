"""Capacity and pacing of 1:1 sessions on one core: the server beside the naive aiortc baseline.

Run from the repository root::

    python -m bench.capacity                 # every run, about 20 minutes on 2 cores
    python -m bench.capacity --quick         # every run, small, under a minute (CI)
    python -m bench.capacity --run speaking  # one run: speaking, joining, pacing, memory, piper

The server process is pinned to core 0; the receiving peers (aiortc, nothing decoded)
run in one process pinned to core 1. Every run measures two servers, each in a
fresh process, in the same session:

* **ours**: the real app (``signaling.app.create_app``), ``POST /whep`` sessions,
  each kept speaking by its client (two ``say`` queued, one more on every
  ``speech.started``). Except in the ``piper`` run, synthesis is replaced by
  ``ReplayEngine``, which yields speech Piper synthesised once; resampling, Opus,
  pacing and sending are the server's own.
* **baseline** (``bench/_naive_aiortc.py``, benchmark only): what aiortc's examples,
  pipecat's SmallWebRTC transport and fastrtc do: an ``AudioStreamTrack``-style
  ``recv`` that sleeps until ``start + timestamp / rate - time.time()`` and returns
  raw frames, encoded by aiortc (96 kbps, no FEC, one thread-pool hop per frame).
  It loops the same speech, already at 48 kHz.

Runs (issue 5):

1. ``speaking``: N sessions all speaking, media path only; the largest N with frame
   lateness p99 < 10 ms, no underruns and no receiver gap over 60 ms.
2. ``joining``: the same while new peers join at 20 per second (each stays 1 s):
   does negotiating new peers stall the audio of sessions already speaking?
3. ``pacing``: N sessions (half load) for a long window: lateness percentiles and
   the drift between RTP time and arrival time at the receivers.
4. ``memory``: resident memory per idle session, and after 1000 sessions have come
   and gone (after a full garbage collection in the server).
5. ``piper``: like ``speaking``, with the real Piper voice synthesising every
   utterance in the server (ours only: the naive baseline has no synthesis path).

Nothing is asserted; the tables carry the machine and both servers' figures.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from bench._fanout_client import CLIENT_CORE
from bench._fanout_server import MODE_AIORTC, MODE_NAIVE
from bench._report import counts, positive_float, positive_int, print_table
from bench.fanout import (
    DEFAULT_PLAN,
    HARNESS_ERRORS,
    JOIN_WAIT_S,
    QUICK_PLAN,
    REPLY_WAIT_S,
    ModeResult,
    Plan,
    Speech,
    Step,
    ask,
    open_harness,
    print_legend,
    print_machine,
    print_mode,
    progress,
    run_all,
    synthesise_once,
)

NAMES: Final = {MODE_NAIVE: "ours (1:1 sessions)", MODE_AIORTC: "baseline (naive aiortc)"}
MODES: Final = (MODE_NAIVE, MODE_AIORTC)
RUNS: Final = ("speaking", "joining", "pacing", "memory", "piper")
JOIN_RATE_PER_S: Final = 20.0
JOIN_LIFE_S: Final = 1.0
MB: Final = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Config:
    speaking: tuple[int, ...]
    joining: tuple[int, ...]
    piper: tuple[int, ...]
    pacing_sessions: int
    pacing_s: float
    memory_sessions: int
    memory_cycled: int
    """Sessions opened and closed (in batches of ``memory_sessions``) per round."""
    memory_rounds: int
    """Rounds of ``memory_cycled``, with an RSS reading after each: a flat series is a
    high-water mark left by the peak, a rising one a leak."""
    memory_settle_s: float
    """Pause before each memory reading (closing peers finish in the background)."""
    plan: Plan


FULL: Final = Config(
    speaking=(10, 20, 30, 40, 50, 60, 70, 80, 100, 120, 150, 200),
    joining=(10, 20, 30, 40, 60, 80, 100, 120, 150),
    piper=(1, 2, 4, 6, 8, 10, 12, 16),
    pacing_sessions=75,
    pacing_s=600.0,
    memory_sessions=100,
    memory_cycled=1000,
    memory_rounds=1,
    memory_settle_s=4.0,  # > VMS_HEAP_TRIM_IDLE_S (2 s) + its 1 s check: idle readings are trimmed
    plan=DEFAULT_PLAN,
)
QUICK: Final = Config(
    speaking=(20,),
    joining=(10,),
    piper=(2,),
    pacing_sessions=10,
    pacing_s=3.0,
    memory_sessions=10,
    memory_cycled=30,
    memory_rounds=2,
    memory_settle_s=0.3,
    plan=dataclasses.replace(QUICK_PLAN, settle_s=0.5, hold_s=2.0, fill_wait_s=3.0),
)


# -- judging and ratios -----------------------------------------------------------------


def meets(step: Step) -> bool:
    """Lateness p99 < 10 ms, no underruns, every session joined, no receiver gap > 60 ms."""
    return step.passed and step.client.gaps == 0


def largest(result: ModeResult) -> int | None:
    ok = [s.n for s in result.steps if meets(s)]
    return max(ok) if ok else None


def ratio(ours: float | None, base: float | None, higher_is_better: bool = True) -> str:
    if not ours or not base:
        return "-"
    return f"{(ours / base) if higher_is_better else (base / ours):.2f}x"


def print_capacity(title: str, results: Sequence[ModeResult]) -> None:
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
        churn = "-"
        if at is not None and at.churn is not None:
            joined, failed, p50, worst = at.churn
            churn = f"{joined} ok, {failed} failed, p50 {p50 * 1000:.0f} ms, max {worst * 1000:.0f}"
        rows.append(
            (
                NAMES[r.mode],
                "-" if best is None else (f">= {best}" if open_ended else str(best)),
                "-" if at is None else f"{at.server.lateness.p99_ms:.2f}",
                "-" if at is None else f"{at.server.lateness.max_ms:.1f}",
                "-" if at is None else f"{at.server_cpu * 100:.0f}",
                "-" if at is None else f"{at.cpu_ms_per_listener_s:.1f}",
                churn,
                "-" if first_fail is None else str(first_fail.n),
                ", ".join(why) or "-",
            )
        )
    print_table(
        title,
        (
            "server",
            "largest N",
            "p99 at N",
            "max at N",
            "CPU % at N",
            "ms/session-s",
            "joins during the window at N",
            "first failing",
            "why",
        ),
        rows,
        left=(0, 6, 8),
    )
    by_mode = {r.mode: largest(r) for r in results}
    ours, base = by_mode.get(MODE_NAIVE), by_mode.get(MODE_AIORTC)
    if MODE_AIORTC in by_mode:
        print(f"Ratio ours / baseline: {ratio(ours, base)} ({ours} vs {base} sessions).")
    print()


# -- runs -------------------------------------------------------------------------------


async def run_speaking(config: Config, speech: Speech) -> None:
    progress("run 1: speaking")
    plan = dataclasses.replace(config.plan, steps=config.speaking)
    results = await run_all(plan, speech, MODES)
    for result in results:
        print_mode(result, plan)
    print_capacity(
        "Run 1 (speaking): largest N with lateness p99 < 10 ms, no underruns, no gap > 60 ms",
        results,
    )


async def run_joining(config: Config, speech: Speech) -> None:
    progress(f"run 2: joining at {JOIN_RATE_PER_S:g}/s")
    plan = dataclasses.replace(config.plan, steps=config.joining)
    results = await run_all(plan, speech, MODES, churn=(JOIN_RATE_PER_S, JOIN_LIFE_S))
    for result in results:
        print_mode(result, plan)
    print_capacity(
        f"Run 2 (joining): as run 1 while new peers join at {JOIN_RATE_PER_S:g}/s"
        f" (each stays {JOIN_LIFE_S:g} s)",
        results,
    )


async def run_piper(config: Config, speech: Speech) -> None:
    progress("run 5: piper")
    plan = dataclasses.replace(config.plan, steps=config.piper)
    results = await run_all(plan, speech, (MODE_NAIVE,), engine="piper")
    for result in results:
        print_mode(result, plan)
    print_capacity(
        "Run 5 (piper): as run 1, the real Piper voice synthesising in the server",
        results,
    )
    print("The naive baseline has no synthesis path, so it is not measured in this run.\n")


async def run_pacing(config: Config, speech: Speech) -> None:
    progress(f"run 3: pacing, {config.pacing_sessions} sessions for {config.pacing_s:g} s")
    plan = dataclasses.replace(config.plan, steps=(config.pacing_sessions,), hold_s=config.pacing_s)
    results = await run_all(plan, speech, MODES)
    rows = []
    for r in results:
        if not r.steps:
            rows.append((NAMES[r.mode], *["-"] * 8, r.error or r.stopped))
            continue
        s = r.steps[0]
        rows.append(
            (
                NAMES[r.mode],
                str(s.n),
                f"{s.server.wall_s:.0f}",
                f"{s.server.lateness.p50_ms:.2f}",
                f"{s.server.lateness.p99_ms:.2f}",
                f"{s.server.lateness.max_ms:.1f}",
                f"{s.server.send_lateness.p99_ms:.2f}",
                f"{s.client.drift_ms:.2f}",
                f"{s.client.gaps}",
                f"{s.server_cpu * 100:.0f}",
            )
        )
    print_table(
        "Run 3 (pacing): lateness at about half load, and RTP-vs-arrival drift",
        (
            "server",
            "N",
            "window s",
            "p50 ms",
            "p99 ms",
            "max ms",
            "send p99 ms",
            "drift ms",
            "gaps > 60 ms",
            "CPU %",
        ),
        rows,
        left=(0,),
    )
    print(
        "drift: how far RTP time ran ahead of arrival time over the window, the largest |drift|\n"
        "of any receiver. Per 5 s block of packets the least (arrival - RTP time) offset is\n"
        "kept, which strips queueing and scheduling delay; drift = first block's least offset\n"
        "minus the last block's (0 when the window is shorter than two blocks).\n"
    )


@dataclass(frozen=True, slots=True)
class Memory:
    start_mb: float
    idle_mb: float
    per_session_mb: float
    after_close_mb: float
    cycled: int
    failed: int
    rounds_mb: tuple[float, ...]
    """RSS after each round of cycling."""

    @property
    def after_cycled_mb(self) -> float:
        return self.rounds_mb[-1]


async def measure_memory(mode: str, config: Config, speech: Speech) -> Memory:
    n = config.memory_sessions
    async with open_harness(mode, speech, n, direct_rtp=config.plan.direct_rtp) as h:
        # warm-up: the first sessions load code paths and caches once
        await ask(h.client, ("idle", min(5, n)), JOIN_WAIT_S)
        await ask(h.client, ("close_idle",), JOIN_WAIT_S)
        await asyncio.sleep(config.memory_settle_s)
        (_, base, _) = await ask(h.server, ("rss",), REPLY_WAIT_S)
        (_, opened, failed) = await ask(h.client, ("idle", n), JOIN_WAIT_S)
        await asyncio.sleep(config.memory_settle_s)
        (_, idle, sessions) = await ask(h.server, ("rss",), REPLY_WAIT_S)
        await ask(h.client, ("close_idle",), JOIN_WAIT_S)
        await asyncio.sleep(config.memory_settle_s)
        (_, after_close, _) = await ask(h.server, ("rss",), REPLY_WAIT_S)
        cycled = 0
        rounds: list[float] = []
        for round_no in range(1, config.memory_rounds + 1):
            target = round_no * config.memory_cycled
            while cycled < target:
                batch = min(n, target - cycled)
                (_, opened_batch, failed_batch) = await ask(h.client, ("idle", batch), JOIN_WAIT_S)
                failed += failed_batch
                await ask(h.client, ("close_idle",), JOIN_WAIT_S)
                cycled += opened_batch
                if not opened_batch:
                    break
            await asyncio.sleep(config.memory_settle_s)
            (_, rss, _) = await ask(h.server, ("rss",), REPLY_WAIT_S)
            rounds.append(rss / MB)
            if cycled < target:
                break  # nothing joins any more: the failed count says why
    return Memory(
        start_mb=base / MB,
        idle_mb=idle / MB,
        per_session_mb=(idle - base) / MB / max(1, sessions),
        after_close_mb=after_close / MB,
        cycled=cycled,
        failed=failed + (n - opened),
        rounds_mb=tuple(rounds),
    )


def rounds_line(m: Memory, per_round: int) -> str:
    """RSS after each round and the growth per round once the peak has been reached."""
    readings = ", ".join(f"{mb:.1f} ({(i + 1) * per_round})" for i, mb in enumerate(m.rounds_mb))
    # the peak of N idle precedes the first round: the rounds after it show what remains
    growth = (m.rounds_mb[-1] - m.rounds_mb[0]) / max(1, len(m.rounds_mb) - 1)
    return (
        f"RSS after each round (sessions): {readings}; {growth:+.2f} MB per round after the first"
    )


async def run_memory(config: Config, speech: Speech) -> None:
    progress(f"run 4: memory, {config.memory_sessions} idle, {config.memory_cycled} cycled")
    measured: dict[str, Memory | str] = {}
    for mode in MODES:
        try:
            measured[mode] = await measure_memory(mode, config, speech)
        except HARNESS_ERRORS as exc:
            measured[mode] = f"{type(exc).__name__}: {exc}"
    rows = []
    for mode in MODES:
        m = measured[mode]
        if isinstance(m, str):
            rows.append((NAMES[mode], *["-"] * 6, m))
            continue
        rows.append(
            (
                NAMES[mode],
                f"{m.start_mb:.1f}",
                f"{m.idle_mb:.1f}",
                f"{m.per_session_mb:.3f}",
                f"{m.after_close_mb:.1f}",
                f"{m.after_cycled_mb:.1f} ({m.cycled})",
                f"{m.after_cycled_mb - m.start_mb:+.1f}",
                f"{m.failed} failed joins" if m.failed else "-",
            )
        )
    print_table(
        f"Run 4 (memory): RSS of the server process, MB; {config.memory_sessions} idle sessions",
        (
            "server",
            "start",
            "with N idle",
            "per session",
            "after closing",
            "after cycling (sessions)",
            "growth",
            "notes",
        ),
        rows,
        left=(0, 7),
    )
    if config.memory_rounds > 1:
        for mode in MODES:
            m = measured[mode]
            if isinstance(m, Memory):
                print(f"{NAMES[mode]}, {rounds_line(m, config.memory_cycled)}")
    ours, base = measured.get(MODE_NAIVE), measured.get(MODE_AIORTC)
    if isinstance(ours, Memory) and isinstance(base, Memory):
        print(
            "Memory per idle session, baseline / ours:"
            f" {ratio(ours.per_session_mb, base.per_session_mb, higher_is_better=False)}."
        )
    print(
        "start = after a warm-up of 5 sessions; every figure is taken after gc.collect()\n"
        "in the server; cycling opens and closes sessions in batches of N.\n"
    )


# -- main -------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.capacity",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="every run, small (CI)")
    parser.add_argument("--run", choices=RUNS, action="append", help="only these runs")
    parser.add_argument("--steps", type=counts, default=None, help="session counts for run 1/2/5")
    parser.add_argument("--hold", type=positive_float, default=None, help="seconds per step")
    parser.add_argument(
        "--pacing-minutes", type=positive_float, default=None, help="run 3's window"
    )
    parser.add_argument(
        "--pacing-sessions", type=positive_int, default=None, help="run 3's session count"
    )
    parser.add_argument(
        "--memory-rounds",
        type=positive_int,
        default=None,
        help="run 4: rounds of 1000 sessions, with a reading after each (default 1)",
    )
    parser.add_argument(
        "--sender",
        choices=("direct", "aiortc"),
        default="direct",
        help="how our server sends RTP: from the tick (default) or aiortc's sender task",
    )
    args = parser.parse_args(argv)
    config = QUICK if args.quick else FULL
    if args.steps:
        config = dataclasses.replace(
            config, speaking=args.steps, joining=args.steps, piper=args.steps
        )
    if args.hold is not None:
        config = dataclasses.replace(
            config, plan=dataclasses.replace(config.plan, hold_s=args.hold)
        )
    if args.pacing_minutes is not None:
        config = dataclasses.replace(config, pacing_s=args.pacing_minutes * 60)
    if args.pacing_sessions is not None:
        config = dataclasses.replace(config, pacing_sessions=args.pacing_sessions)
    if args.memory_rounds is not None:
        config = dataclasses.replace(config, memory_rounds=args.memory_rounds)
    if args.sender == "aiortc":
        config = dataclasses.replace(
            config, plan=dataclasses.replace(config.plan, direct_rtp=False)
        )
    if len(os.sched_getaffinity(0)) < 2 or (os.cpu_count() or 1) < 2:
        print("bench.capacity not run: it pins the server and the receivers to two cores.")
        return 0

    logging.basicConfig(level=logging.WARNING)
    print_machine()
    sys.stdout.flush()
    speech = synthesise_once()
    os.sched_setaffinity(0, {CLIENT_CORE})
    sender = "from the tick (RtpWriter)" if config.plan.direct_rtp else "aiortc's sender task"
    print(
        f"Speech: Piper synthesised {speech.duration_s:.1f} s once; outside run 5 both servers"
        f" replay it.\nPer step: join, settle {config.plan.settle_s:g} s, measure"
        f" {config.plan.hold_s:g} s.\nOur RTP: {sender}.\n"
    )
    runs = {
        "speaking": run_speaking,
        "joining": run_joining,
        "pacing": run_pacing,
        "memory": run_memory,
        "piper": run_piper,
    }
    for name in args.run or RUNS:
        asyncio.run(runs[name](config, speech))
        sys.stdout.flush()
    print_legend()
    print(
        "Baseline rows: p50/p99/max and send p99 are each track's wake-up after its deadline;\n"
        "'enc' is asyncio's default pool, where aiortc encodes; it has no underruns by design.\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
