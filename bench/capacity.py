"""Capacity and pacing of 1:1 sessions on one core: the server beside the naive aiortc baseline.

Run from the repository root::

    python -m bench.capacity                 # every run, about 20 minutes on 2 cores
    python -m bench.capacity --quick         # every run, small, about 2 minutes (CI)
    python -m bench.capacity --run speaking  # one run: speaking, joining, pacing, memory, piper

Server on core 0, peers (aiortc, nothing decoded) on core 1 (``bench._harness``); ours (1:1
``POST /whep`` sessions kept speaking, replayed speech outside run 5) beside the naive
aiortc baseline (``bench/_naive_aiortc.py``), each on a fresh server. Runs: 1 ``speaking``
(largest N with lateness p99 < 10 ms, no underruns, no gap > 60 ms); 2 ``joining`` (the
same while peers join at 20/s, each staying 1 s); 3 ``pacing`` (half load, a long window);
4 ``memory`` (RSS per idle session, after closing, after 1000 more came and went);
5 ``piper`` (run 1 with the real voice synthesising in the server; ours only).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import aiohttp

from bench import _harness as rig
from bench._peers import PEERS_CORE
from bench._report import command_line, counts, positive, print_table, rss_mb, server_stats

MODES: Final = (rig.MODE_NAIVE, rig.MODE_AIORTC)
RUNS: Final = ("speaking", "joining", "pacing", "memory", "piper")
JOIN_RATE_PER_S: Final = 20.0
JOIN_LIFE_S: Final = 1.0


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
    """Rounds of ``memory_cycled``, a reading after each: flat is a high-water mark, rising
    a leak."""
    memory_settle_s: float
    """Pause before each reading: past the server's idle heap trim (2 s + its 1 s check)."""
    plan: rig.Plan


FULL: Final = Config(
    speaking=(10, 20, 30, 40, 50, 60, 70, 80, 100, 120, 150, 200),
    joining=(10, 20, 30, 40, 60, 80, 100, 120, 150),
    piper=(1, 2, 4, 6, 8, 10, 12, 16),
    pacing_sessions=75, pacing_s=600.0,
    memory_sessions=100, memory_cycled=1000, memory_rounds=1, memory_settle_s=4.0,
    plan=rig.Plan((), settle_s=5.0, hold_s=10.0, mode_budget_s=270.0),
)  # fmt: skip
QUICK: Final = Config(
    speaking=(20,), joining=(10,), piper=(2,), pacing_sessions=10, pacing_s=3.0,
    memory_sessions=10, memory_cycled=30, memory_rounds=2, memory_settle_s=0.3,
    plan=rig.Plan((), settle_s=1.5, hold_s=2.0, mode_budget_s=25.0),
)  # fmt: skip


TITLES: Final = {
    "speaking": "Run 1 (speaking): largest N with p99 < 10 ms, no underruns, no gap > 60 ms",
    "joining": f"Run 2 (joining): as run 1 while peers join at {JOIN_RATE_PER_S:g}/s",
    "pacing": "Run 3 (pacing): half load, one long window (percentiles: last 3000 frames)",
    "piper": "Run 5 (piper): as run 1 with the real Piper voice synthesising in the server",
}


async def run_steps(name: str, config: Config, speech: rig.ReplayEngine) -> None:
    """Runs 1, 2, 3 and 5: each mode on a fresh server, ramping N (run 3: one long step)."""
    churn = (JOIN_RATE_PER_S, JOIN_LIFE_S) if name == "joining" else None
    engine, modes = ("piper", (rig.MODE_NAIVE,)) if name == "piper" else ("replay", MODES)
    plan = dataclasses.replace(config.plan, steps=getattr(config, name, ()))
    if name == "pacing":
        plan = dataclasses.replace(plan, steps=(config.pacing_sessions,), hold_s=config.pacing_s)
    results = [await rig.run_mode(m, plan, speech, churn, engine, gaps=True) for m in modes]
    for result in results:
        rig.print_mode(result, plan, gaps=True)
    rig.print_summary(TITLES[name], results, gaps=True)


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


async def measure_memory(mode: str, config: Config, speech: rig.ReplayEngine) -> Memory:
    """RSS of the server (``/proc``) at rest, with N idle sessions, after closing them and
    after each round of sessions coming and going; sessions counted by ``GET /stats``."""
    n = config.memory_sessions
    async with (
        rig.open_harness(mode, speech, n) as h,
        aiohttp.ClientSession() as http,
    ):

        async def cycle(count: int) -> tuple[int, int]:
            (_, opened, failed) = await rig.ask(h.peers, ("idle", count), rig.JOIN_WAIT_S)
            await rig.ask(h.peers, ("close_idle",), rig.JOIN_WAIT_S)
            return opened, failed

        async def reading() -> float:
            await asyncio.sleep(config.memory_settle_s)
            return rss_mb(h.server_pid)

        await cycle(min(5, n))  # warm-up: code paths and caches, once
        base = await reading()
        (_, opened, failed) = await rig.ask(h.peers, ("idle", n), rig.JOIN_WAIT_S)
        idle = await reading()
        sessions = (await server_stats(http, h.base_url))["sessions"]
        await rig.ask(h.peers, ("close_idle",), rig.JOIN_WAIT_S)
        after_close = await reading()
        cycled, rounds = 0, []
        for round_no in range(1, config.memory_rounds + 1):
            while cycled < round_no * config.memory_cycled:
                got, lost = await cycle(min(n, round_no * config.memory_cycled - cycled))
                cycled, failed = cycled + got, failed + lost
                if not got:
                    break
            rounds.append(await reading())
    per_session = (idle - base) / max(1, sessions)
    return Memory(base, idle, per_session, after_close, cycled, failed + n - opened, tuple(rounds))


def rounds_line(m: Memory, per_round: int) -> str:
    """RSS after each round and the growth per round once the peak has been reached."""
    readings = ", ".join(f"{mb:.1f} ({(i + 1) * per_round})" for i, mb in enumerate(m.rounds_mb))
    growth = (m.rounds_mb[-1] - m.rounds_mb[0]) / max(1, len(m.rounds_mb) - 1)
    return (
        f"RSS after each round (sessions): {readings}; {growth:+.2f} MB per round after the first"
    )


async def run_memory(config: Config, speech: rig.ReplayEngine) -> None:
    rows = []
    for mode in MODES:
        try:
            m = await measure_memory(mode, config, speech)
        except (RuntimeError, TimeoutError, EOFError, OSError) as exc:
            rows.append((rig.MODE_NAMES[mode], *["-"] * 6, f"{type(exc).__name__}: {exc}"))
            continue
        rows.append((
            rig.MODE_NAMES[mode], f"{m.start_mb:.1f}", f"{m.idle_mb:.1f}",
            f"{m.per_session_mb:.3f}",
            f"{m.after_close_mb:.1f}", f"{m.rounds_mb[-1]:.1f} ({m.cycled})",
            f"{m.rounds_mb[-1] - m.start_mb:+.1f}", f"{m.failed} failed joins" if m.failed else "-",
        ))  # fmt: skip
        if config.memory_rounds > 1:
            print(f"{rig.MODE_NAMES[mode]}, {rounds_line(m, config.memory_cycled)}")
    print_table(
        f"Run 4 (memory): server RSS, MB; {config.memory_sessions} idle sessions",
        ("server", "start", "with N idle", "per session", "after closing",
         "after cycling (sessions)", "growth", "notes"),
        rows,
        left=(0, 7),
    )  # fmt: skip
    print(
        f"start = after 5 sessions came and went; each reading {config.memory_settle_s:g} s after"
        " the last change\n(past the server's idle heap trim); cycling: batches of N.\n"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = command_line("bench.capacity", __doc__)
    add = parser.add_argument
    add("--quick", action="store_true", help="every run, small (CI)")
    add("--run", choices=RUNS, action="append", help="only these runs")
    add("--steps", type=counts, help="session counts for runs 1, 2 and 5")
    add("--hold", type=positive(float), help="seconds measured per step")
    add("--pacing-minutes", type=positive(float), help="run 3's window")
    add("--pacing-sessions", type=positive(int), help="run 3's session count")
    add("--memory-rounds", type=positive(int), help="run 4: rounds of 1000 sessions")
    args = parser.parse_args(argv)
    config = QUICK if args.quick else FULL
    if args.steps:
        config = dataclasses.replace(
            config, speaking=args.steps, joining=args.steps, piper=args.steps
        )
    config = dataclasses.replace(
        config,
        pacing_s=args.pacing_minutes * 60 if args.pacing_minutes else config.pacing_s,
        pacing_sessions=args.pacing_sessions or config.pacing_sessions,
        memory_rounds=args.memory_rounds or config.memory_rounds,
        plan=dataclasses.replace(config.plan, hold_s=args.hold or config.plan.hold_s),
    )
    if len(os.sched_getaffinity(0)) < 2:
        print("bench.capacity not run: it pins the server and the receivers to two cores.")
        return 0
    logging.basicConfig(level=logging.WARNING)
    rig.print_pinned_machine()
    speech = rig.synthesise_once()
    os.sched_setaffinity(0, {PEERS_CORE})
    print(
        f"Speech: Piper synthesised {speech.duration_s:.1f} s once; outside run 5 both servers"
        f" replay it.\nPer step: join, settle {config.plan.settle_s:g} s, measure"
        f" {config.plan.hold_s:g} s.\n"
    )
    for name in args.run or RUNS:
        if name == "memory":
            asyncio.run(run_memory(config, speech))
        else:
            asyncio.run(run_steps(name, config, speech))
        sys.stdout.flush()
    print(rig.LEGEND)
    print("Baseline rows: lateness is each track's wake-up after its deadline; no underruns.\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
