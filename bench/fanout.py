"""Fan-out capacity: one bot speaking continuously to N listeners, the server on one core.

Run from the repository root::

    python -m bench.fanout            # full ramp, about 6 minutes on 2 cores
    python -m bench.fanout --quick    # a few small steps, under a minute

The server (``signaling.app.create_app``, aiohttp + aiortc on 127.0.0.1) runs in its
own process pinned to core 0. The listeners (aiortc WHEP peers that count RTP
packets and decode nothing) run in one process pinned to core 1, beside this
script and the bot. Two modes are ramped in the same run, each on a fresh server:

* ours (room fan-out): one room, one bot on the bot WebSocket saying text back to
  back; N listeners join with ``POST /rooms/{room}/whep``. One Speaker, one Opus
  encoder, one Pacer; each frame is packed once and queued on every track.
* naive (per-listener encoding): N 1:1 ``POST /whep`` sessions, each speaking the
  same text through its own Speaker, Opus encoder and Pacer: the server's own 1:1
  path, which is exactly per-listener encoding.

Synthesis is taken out of the measurement: Piper synthesises one paragraph here,
once, and the server's only engine (``ReplayEngine``, benchmark only) replays those
chunks for every ``say``. Everything after the engine is the server's real path.

For each N the listeners join, the stream settles, and a steady window is
measured: pacer lateness p50/p99/max (``PacingStats`` of every pacer), underruns
(``Speaker.underruns``), skipped and dropped frames, what the clients received,
and CPU. A step passes when pacer lateness p99 < 10 ms and there are no
underruns. Nothing here asserts on timings.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import logging
import multiprocessing
import os
import socket
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any, Final

import aiohttp
import numpy as np

from bench._client import recv_message
from bench._fanout_client import CLIENT_CORE, GAP_S, ClientStats, client_process
from bench._fanout_server import (
    MODE_AIORTC,
    MODE_NAIVE,
    MODE_ROOM,
    SERVER_CORE,
    ServerStats,
    server_process,
)
from bench._report import (
    counts,
    machine_rows,
    positive_float,
    print_table,
    process_cpu_s,
    system_busy_s,
)
from media_server.audio.opus import libopus_version
from media_server.config import Settings
from media_server.rooms.tokens import Role, TokenSigner
from synthesis import SynthesisRequest, create_engine

LOOPBACK: Final = "127.0.0.1"
ROOM: Final = "fanout"
SECRET: Final = "fanout-bench-secret-0123456789"
P99_LIMIT_MS: Final = 10.0
CLEAR_FAIL_P99_MS: Final = 20.0
"""A step this late (or with underruns or failed joins) ends the mode's ramp at once."""

DEFAULT_STEPS: Final = (*range(5, 45, 5), 50, 60, 80, 100, 120, 160, 200, 240, 280, 320)
QUICK_STEPS: Final = (10, 50, 100)


@dataclass(frozen=True, slots=True)
class Plan:
    steps: tuple[int, ...]
    settle_s: float
    hold_s: float
    mode_budget_s: float
    """Wall time after which a mode starts no further step."""
    fill_wait_s: float
    """At most this long for every speaker to be 3 s ahead before a window (see run_step)."""
    direct_rtp: bool = True
    """Our server writes RTP from the tick (``Settings.direct_rtp``), or aiortc's sender does."""


DEFAULT_PLAN: Final = Plan(
    DEFAULT_STEPS, settle_s=2.0, hold_s=10.0, mode_budget_s=270.0, fill_wait_s=15.0
)
QUICK_PLAN: Final = Plan(QUICK_STEPS, settle_s=1.0, hold_s=3.0, mode_budget_s=22.0, fill_wait_s=5.0)

START_WAIT_S: Final = 60.0
JOIN_WAIT_S: Final = 180.0
FLOWING_WAIT_S: Final = 10.0
REPLY_WAIT_S: Final = 60.0
FILLED_FRAMES: Final = 150
"""Frames (3 s) every speaker must have encoded ahead before a window starts."""
STOP_WAIT_S: Final = 45.0

PARAGRAPH: Final = (
    "Good evening, and welcome to the weekly update from the operations team. "
    "The new warehouse in the north district opened on schedule, and the first "
    "deliveries left on Monday morning. Please keep your questions for the end."
)
"""Synthesised once by Piper; every ``say`` in both modes replays this speech."""

MODE_TITLES: Final = {
    MODE_ROOM: "ours: room fan-out (one Speaker + Opus encoder + Pacer, N tracks)",
    MODE_NAIVE: "naive: per-listener encoding (N 1:1 sessions, each with Speaker + Opus + Pacer)",
    MODE_AIORTC: "baseline: naive aiortc (N peers, AudioStreamTrack + aiortc's Opus encoder)",
}
MODE_SHORT: Final = {
    MODE_ROOM: "ours (room fan-out)",
    MODE_NAIVE: "1:1 (per-listener)",
    MODE_AIORTC: "baseline (aiortc)",
}


# -- speech -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Speech:
    chunks: list[np.ndarray]
    sample_rate_hz: int
    voice_id: str
    synthesis_s: float

    @property
    def duration_s(self) -> float:
        return sum(c.size for c in self.chunks) / self.sample_rate_hz


def synthesise_once() -> Speech:
    """The paragraph through the real Piper voice, once; the server only replays it."""
    started = time.monotonic()
    engine = create_engine("piper")
    try:
        chunks = [
            c.pcm.copy()
            for c in engine.synthesize(SynthesisRequest(text=PARAGRAPH), threading.Event())
        ]
        rate, voice = engine.sample_rate_hz, engine.voices[0].voice_id
    finally:
        engine.close()
    return Speech(chunks, rate, voice, time.monotonic() - started)


# -- CPU accounting -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CpuSample:
    at: float
    system_s: float
    ours_s: float
    """Server + listeners + this script."""

    @staticmethod
    def take(pids: Iterable[int]) -> CpuSample:
        return CpuSample(
            time.monotonic(),
            system_busy_s(),
            sum(process_cpu_s(pid) for pid in (os.getpid(), *pids)),
        )

    def others_until(self, end: CpuSample) -> float:
        """Average cores busy with anything but this benchmark (other processes, the kernel)."""
        wall = max(1e-9, end.at - self.at)
        return max(0.0, (end.system_s - self.system_s) - (end.ours_s - self.ours_s)) / wall


# -- one ramp -------------------------------------------------------------------------


class ChildError(RuntimeError):
    pass


async def ask(conn: Connection, command: tuple[Any, ...], timeout_s: float) -> tuple[Any, ...]:
    conn.send(command)
    reply = await recv_message(conn, timeout_s)
    if not isinstance(reply, tuple) or reply[0] == "error":
        raise ChildError(f"{command[0]!r} failed: {reply!r}")
    return reply


@dataclass(frozen=True, slots=True)
class Step:
    n: int
    joined: int
    join_failed: int
    join_s: float
    receiving: int
    server: ServerStats
    client: ClientStats
    others_cores: float
    bot_errors: int
    churn: tuple[int, int, float, float] | None = None
    """Peers that joined (and left) during the window: joined, failed, join p50 s, max s."""

    @property
    def server_cpu(self) -> float:
        return self.server.cpu_s / max(1e-9, self.server.wall_s)

    def thread_cpu(self, group: str) -> float:
        return self.server.thread_cpu_s.get(group, 0.0) / max(1e-9, self.server.wall_s)

    @property
    def cpu_ms_per_listener_s(self) -> float:
        return 1000 * self.server.cpu_s / max(1e-9, self.server.wall_s * max(1, self.joined))

    @property
    def client_cpu(self) -> float:
        return self.client.cpu_s / max(1e-9, self.client.wall_s)

    @property
    def speech_share(self) -> float:
        return self.server.speech_frames / max(1, self.server.frames_sent)

    def failures(self) -> list[str]:
        why = []
        if self.joined < self.n or self.server.listeners < self.n:
            why.append(f"only {min(self.joined, self.server.listeners)} joined")
        if self.server.lateness.p99_ms >= P99_LIMIT_MS:
            why.append(f"p99 {self.server.lateness.p99_ms:.1f} ms")
        if self.server.underruns:
            why.append(f"{self.server.underruns} underruns")
        return why

    @property
    def passed(self) -> bool:
        return not self.failures()

    def meets(self, send: bool) -> bool:
        """Passed; with ``send``, on per-listener send lateness p99 instead of the pacer's."""
        if not send:
            return self.passed
        joined = min(self.joined, self.server.listeners) >= self.n
        return (
            joined and not self.server.underruns and self.server.send_lateness.p99_ms < P99_LIMIT_MS
        )

    def clear_failures(self) -> list[str]:
        """Reasons to stop ramping at once (a worse step would only take longer to fail)."""
        why = []
        if self.joined < self.n:
            why.append(f"{self.n - self.joined} joins failed")
        if self.server.lateness.p99_ms >= CLEAR_FAIL_P99_MS:
            why.append(f"p99 {self.server.lateness.p99_ms:.1f} ms")
        if self.server.underruns:
            why.append(f"{self.server.underruns} underruns")
        return why


@dataclass
class ModeResult:
    mode: str
    steps: list[Step] = field(default_factory=list)
    stopped: str = "all steps done"
    error: str | None = None
    wall_s: float = 0.0

    @property
    def never_failed(self) -> bool:
        """Every step passed: the capacity lies above the last step (a lower bound only)."""
        return bool(self.steps) and all(s.passed for s in self.steps)

    def largest_passing(self, send: bool = False) -> int | None:
        """Largest N that passed; with ``send``, judged on per-listener send lateness instead."""
        ok = [s.n for s in self.steps if s.meets(send)]
        return max(ok) if ok else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


@dataclass
class BotState:
    utterances: int = 0
    errors: int = 0
    speaking: asyncio.Event = field(default_factory=asyncio.Event)


async def run_bot(http: aiohttp.ClientSession, base_url: str, state: BotState) -> None:
    """The room's bot: keeps two utterances queued, one more on every ``speech.started``."""
    token = TokenSigner(SECRET.encode()).issue(ROOM, Role.BOT, "bench-bot")
    say = {"type": "say", "text": PARAGRAPH}
    async with http.ws_connect(f"{base_url}/rooms/{ROOM}/bot?token={token}") as ws:
        await ws.send_json(say)
        await ws.send_json(say)
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            event = json.loads(msg.data)
            if event["type"] == "speech.started":
                state.utterances += 1
                state.speaking.set()
                await ws.send_json(say)
            elif event["type"] == "error":
                state.errors += 1


def progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


@dataclass
class Harness:
    """A server process, a listeners process and (in a room) the bot, for one mode."""

    mode: str
    base_url: str
    server: Connection
    client: Connection
    pids: tuple[int, int]
    bot: BotState
    churner: Connection
    """A second peers process (core 1) for peers that join during a window: its own
    event loop, so their negotiation cannot delay the measured receivers' timestamps."""


@contextlib.asynccontextmanager
async def open_harness(
    mode: str, speech: Speech, max_listeners: int, engine: str = "replay", direct_rtp: bool = True
) -> AsyncIterator[Harness]:
    """Start the server (pinned to core 0) and the listeners (core 1); stop both after."""
    ctx = multiprocessing.get_context("spawn")
    port = free_port()
    base_url = f"http://{LOOPBACK}:{port}"
    settings = Settings(
        port=port,
        ice_host_addresses=(LOOPBACK,),
        token_secret=SECRET,
        max_rooms=2,
        max_room_participants=max_listeners + 2,
        max_sessions=max_listeners + 200,  # room for peers joining during a window
        # Each naive session holds a synthesis slot while its replayed utterance is read.
        synthesis_workers=max_listeners + 4,
        direct_rtp=direct_rtp,
        # every listener connects from this one address: no per-client bounds
        max_pending_sessions_per_client=0,
        max_sockets_per_client=0,
        max_syntheses_per_client=0,
        client_upload_bytes_per_s=0,
    )
    server_conn, server_end = ctx.Pipe()
    server = ctx.Process(
        target=server_process,
        args=(
            server_end,
            settings,
            speech.chunks,
            speech.sample_rate_hz,
            speech.voice_id,
            mode,
            engine,
        ),
        name=f"fanout-server-{mode}",
        daemon=True,
    )

    def peers_process(role: str) -> tuple[Connection, Connection, BaseProcess]:
        conn, end = ctx.Pipe()
        process = ctx.Process(
            target=client_process,
            args=(end, base_url, mode, ROOM, SECRET, PARAGRAPH),
            name=f"fanout-{role}-{mode}",
            daemon=True,
        )
        return conn, end, process

    client_conn, client_end, client = peers_process("listeners")
    churn_conn, churn_end, churner = peers_process("joiners")
    bot_state = BotState()
    bot: asyncio.Task[None] | None = None
    try:
        async with aiohttp.ClientSession() as http:
            server.start()
            server_end.close()
            (_, server_pid) = await recv_message(server_conn, START_WAIT_S)
            if mode == MODE_ROOM:
                bot = asyncio.get_running_loop().create_task(run_bot(http, base_url, bot_state))
                await asyncio.wait_for(bot_state.speaking.wait(), START_WAIT_S)
            client.start()
            client_end.close()
            (_, client_pid) = await recv_message(client_conn, START_WAIT_S)
            churner.start()
            churn_end.close()
            await recv_message(churn_conn, START_WAIT_S)
            yield Harness(
                mode,
                base_url,
                server_conn,
                client_conn,
                (server_pid, client_pid),
                bot_state,
                churn_conn,
            )
            await ask(client_conn, ("close",), STOP_WAIT_S)
            await ask(churn_conn, ("close",), STOP_WAIT_S)
    finally:
        if bot is not None:
            bot.cancel()
            await asyncio.gather(bot, return_exceptions=True)
        for conn, process in ((churn_conn, churner), (client_conn, client), (server_conn, server)):
            if process.is_alive():
                try:
                    if process is server:
                        await ask(conn, ("stop",), STOP_WAIT_S)
                except (ChildError, TimeoutError, EOFError, OSError):
                    pass
            process.join(5)
            if process.is_alive():
                process.terminate()
                process.join(5)


HARNESS_ERRORS: Final = (ChildError, TimeoutError, EOFError, OSError, aiohttp.ClientError)


async def run_mode(
    mode: str,
    plan: Plan,
    speech: Speech,
    churn: tuple[float, float] | None = None,
    engine: str = "replay",
) -> ModeResult:
    result = ModeResult(mode)
    started = time.monotonic()
    try:
        async with open_harness(mode, speech, max(plan.steps), engine, plan.direct_rtp) as h:
            failing = 0
            for n in plan.steps:
                if time.monotonic() - started > plan.mode_budget_s:
                    result.stopped = f"time budget ({plan.mode_budget_s:.0f} s) spent before N={n}"
                    break
                step = await run_step(n, plan, h, churn)
                result.steps.append(step)
                progress(
                    f"  {MODE_SHORT[mode]:<20} N={n:<4} p99 {step.server.lateness.p99_ms:6.2f} ms"
                    f"  send p99 {step.server.send_lateness.p99_ms:6.2f} ms"
                    f"  underruns {step.server.underruns}  server CPU {step.server_cpu * 100:3.0f}%"
                    f"  client CPU {step.client_cpu * 100:3.0f}%  joins {step.join_s:.1f} s"
                    f"  {'ok' if step.passed else 'FAIL: ' + ', '.join(step.failures())}"
                )
                failing = 0 if step.passed else failing + 1
                clear = step.clear_failures()
                if clear:
                    result.stopped = f"N={n} clearly failed ({', '.join(clear)})"
                    break
                if failing >= 2:
                    result.stopped = "two failing steps in a row"
                    break
    except HARNESS_ERRORS as exc:
        result.error = f"{type(exc).__name__}: {exc}"
        result.stopped = "error"
    result.wall_s = time.monotonic() - started
    return result


async def run_step(
    n: int,
    plan: Plan,
    h: Harness,
    churn: tuple[float, float] | None = None,
) -> Step:
    """Join ``n``, let them settle, measure one window; with ``churn`` (joins per second,
    seconds each stays), other peers keep joining and leaving through the window."""
    server, client, pids, bot = h.server, h.client, h.pids, h.bot
    _, joined, failed, join_s = await ask(client, ("join", n), JOIN_WAIT_S)
    _, receiving, _ = await ask(client, ("flowing", FLOWING_WAIT_S), FLOWING_WAIT_S + REPLY_WAIT_S)
    # New 1:1 sessions first encode 5 s ahead at once: start the window once every speaker
    # is that far ahead (or give up waiting: an overloaded server never gets there).
    fill_deadline = time.monotonic() + plan.fill_wait_s
    while time.monotonic() < fill_deadline:
        (_, buffered) = await ask(server, ("buffered",), REPLY_WAIT_S)
        if buffered >= FILLED_FRAMES:
            break
        await asyncio.sleep(0.25)
    await ask(server, ("prepare",), REPLY_WAIT_S)
    await asyncio.sleep(plan.settle_s)
    bot_errors = bot.errors
    cpu_start = CpuSample.take(pids)
    await ask(server, ("mark",), REPLY_WAIT_S)
    await ask(client, ("mark",), REPLY_WAIT_S)
    churned = None
    if churn is None:
        await asyncio.sleep(plan.hold_s)
    else:
        rate, life = churn
        wait = plan.hold_s + life + JOIN_WAIT_S
        (_, *counts) = await ask(h.churner, ("churn", rate, plan.hold_s, life), wait)
        churned = (int(counts[0]), int(counts[1]), float(counts[2]), float(counts[3]))
    # The listeners' window ends first: the server's collect costs its loop tens of ms.
    (_, client_stats) = await ask(client, ("collect",), REPLY_WAIT_S)
    (_, server_stats) = await ask(server, ("collect",), REPLY_WAIT_S)
    cpu_end = CpuSample.take(pids)
    return Step(
        n=n,
        joined=joined,
        join_failed=failed,
        join_s=join_s,
        receiving=receiving,
        server=server_stats,
        client=client_stats,
        others_cores=cpu_start.others_until(cpu_end),
        bot_errors=bot.errors - bot_errors,
        churn=churned,
    )


async def run_all(
    plan: Plan,
    speech: Speech,
    modes: Sequence[str],
    churn: tuple[float, float] | None = None,
    engine: str = "replay",
) -> list[ModeResult]:
    results = []
    for mode in modes:
        progress(f"{MODE_SHORT[mode]}: ramping N over {', '.join(map(str, plan.steps))}")
        results.append(await run_mode(mode, plan, speech, churn, engine))
    return results


# -- output ---------------------------------------------------------------------------


def print_machine() -> None:
    rows = machine_rows(("aiortc", "aioice", "av", "pylibsrtp"))
    rows.append(("libopus (our encoder)", libopus_version()))
    rows += [
        ("pinning: server process", f"core {SERVER_CORE} (os.sched_setaffinity)"),
        ("pinning: listeners, bot, this script", f"core {CLIENT_CORE}"),
    ]
    print_table("Machine", ("item", "value"), rows, left=(0, 1))


def _ms(value: float) -> str:
    return f"{value:.2f}"


def _first_speech(client: ClientStats) -> str:
    """The probe's time to first speech in the window: p50/max ms (n), or '-'."""
    samples = client.first_speech_ms
    if not samples:
        return "-" if not client.first_speech_timeouts else f"{client.first_speech_timeouts} t/o"
    text = f"{np.percentile(samples, 50):.0f}/{max(samples):.0f} ({len(samples)})"
    if client.first_speech_timeouts:
        text += f" +{client.first_speech_timeouts} t/o"
    return text


def print_mode(result: ModeResult, plan: Plan) -> None:
    rows = []
    for s in result.steps:
        rows.append(
            (
                str(s.n),
                f"{s.join_s:.1f}",
                _ms(s.server.lateness.p50_ms),
                _ms(s.server.lateness.p99_ms),
                _ms(s.server.lateness.max_ms),
                str(s.server.late_frames),
                _ms(s.server.send_lateness.p99_ms),
                str(s.server.underruns),
                str(s.server.skipped_frames),
                str(s.server.dropped_frames),
                str(s.client.missing_frames),
                str(s.client.gaps),
                _first_speech(s.client),
                f"{s.speech_share * 100:.0f}",
                f"{s.server.gc_max_ms:.0f}",
                s.server.opus_complexity,
                f"{s.server_cpu * 100:.0f}",
                "/".join(
                    f"{s.thread_cpu(g) * 100:.0f}" for g in ("loop", "encode", "synthesis", "other")
                ),
                f"{s.cpu_ms_per_listener_s:.2f}",
                f"{s.client_cpu * 100:.0f}",
                f"{s.others_cores * 100:.0f}",
                "ok" if s.passed else "FAIL",
            )
        )
    if not rows:
        print(f"{MODE_TITLES[result.mode]}: no step completed\n")
    else:
        print_table(
            f"{MODE_TITLES[result.mode]}; {plan.hold_s:g} s window per step",
            (
                "N",
                "join s",
                "p50",
                "p99",
                "max",
                f">{P99_LIMIT_MS:g}ms",
                "send p99",
                "underruns",
                "skipped",
                "dropped",
                "missing",
                f"gaps>{GAP_S * 1000:.0f}ms",
                "1st speech p50/max",
                "speech %",
                "gc max",
                "opus cx (load)",
                "server CPU %",
                "loop/enc/syn/oth",
                "ms/listener-s",
                "client CPU %",
                "other %",
                "result",
            ),
            rows,
        )
    for s in result.steps:
        notes = []
        if s.join_failed:
            notes.append(f"{s.join_failed} joins failed")
        if s.receiving < s.joined:
            notes.append(
                f"only {s.receiving} of {s.joined} listeners were receiving before the window"
            )
        if s.bot_errors or s.client.say_errors:
            notes.append(f"{s.bot_errors + s.client.say_errors} 'error' events answered a say")
        if notes:
            print(f"N={s.n}: {'; '.join(notes)}.")
    print(f"Ramp ended: {result.stopped} (mode took {result.wall_s:.0f} s).")
    if result.error:
        print(f"Error: {result.error}")
    print()


def marginal_cpu_ms(steps: Sequence[Step]) -> float | None:
    """Server CPU added per extra listener (ms per second), a line fitted over passing steps."""
    points = [(s.n, s.server_cpu * 1000) for s in steps if s.passed]
    if len(points) < 2 or len({n for n, _ in points}) < 2:
        return None
    slope, _ = np.polyfit([n for n, _ in points], [c for _, c in points], 1)
    return float(slope)


def print_summary(results: Sequence[ModeResult]) -> None:
    by_mode = {r.mode: r for r in results}
    rows = []
    for r in results:
        best = r.largest_passing()
        first_fail = next((s for s in r.steps if not s.passed), None)
        at_best = next((s for s in r.steps if s.n == best), None)
        by_send = r.largest_passing(send=True)
        marginal = marginal_cpu_ms(r.steps)
        rows.append(
            (
                MODE_SHORT[r.mode],
                "-" if best is None else (f">= {best}" if r.never_failed else str(best)),
                "-" if first_fail is None else str(first_fail.n),
                "-" if first_fail is None else ", ".join(first_fail.failures()),
                "-" if at_best is None else f"{at_best.server_cpu * 100:.0f}",
                "-" if marginal is None else f"{marginal:.1f}",
                "-" if by_send is None else str(by_send),
            )
        )
    print_table(
        f"Largest N with pacer lateness p99 < {P99_LIMIT_MS:g} ms and no underruns",
        (
            "mode",
            "largest N",
            "first failing N",
            "why",
            "server CPU % at N",
            "ms/s per added listener",
            f"N by send p99 < {P99_LIMIT_MS:g} ms",
        ),
        rows,
        left=(0, 3),
    )
    print(
        "'ms/s per added listener': slope of server CPU over the passing steps (a least-squares\n"
        "line), so the fixed cost of the room (its one encoder and pacer) is left out.\n"
    )
    ours = by_mode.get(MODE_ROOM)
    naive = by_mode.get(MODE_NAIVE)
    if ours and naive:
        a, b = ours.largest_passing(), naive.largest_passing()
        if a is None or not b:
            print(f"Ratio ours / naive: not defined ({a} vs {b}).")
        elif ours.never_failed and naive.never_failed:
            print(f"Ratio ours / naive: not determined: neither mode failed ({a} vs {b}).")
        elif ours.never_failed:
            print(f"Ratio ours / naive: at least {a / b:.1f}x ({a}+ vs {b} on one core).")
        elif naive.never_failed:
            print(f"Ratio ours / naive: at most {a / b:.1f}x ({a} vs {b}+ on one core).")
        else:
            print(f"Ratio ours / naive: {a / b:.1f}x ({a} vs {b} listeners on one core).")
    print()


def print_notes(speech: Speech, plan: Plan) -> None:
    print(
        f"Speech: Piper synthesised the paragraph once ({speech.duration_s:.1f} s of audio in"
        f" {len(speech.chunks)} chunks at {speech.sample_rate_hz} Hz,\n"
        f"{speech.synthesis_s:.1f} s including loading the voice). The server's engine is"
        " ReplayEngine (benchmark only):\nit yields those chunks for every 'say'. Both modes"
        " keep 2-3 utterances queued, so speech never\nstops. Each mode runs on a fresh"
        f" server. Steps: {', '.join(map(str, plan.steps))}.\nPer step: join, wait until"
        f" every speaker is 3 s ahead, settle {plan.settle_s:g} s, measure"
        f" {plan.hold_s:g} s.\n"
    )


def print_legend() -> None:
    print(
        "Columns (ms unless named): p50/p99/max = pacer lateness, how long after its 20 ms\n"
        "deadline each pacer tick ran (all pacers: 1 in ours, N in naive); >10ms = frames later\n"
        "than that (in ours a 10 s window holds 500 frames and p99 is the 5th-worst, so two or\n"
        "three stalls decide it). send p99 = per listener and frame, how long after the deadline\n"
        "aiortc's RTP sender took the packet from the track (in a fan-out tick the last listener\n"
        "waits for all the others). underruns = Speaker.underruns; skipped = pacer ticks skipped\n"
        "after a stall; dropped = track queue overflows; missing = RTP timestamps the listeners\n"
        "never got; gaps = arrivals more than 60 ms after the previous one (the listeners' own\n"
        "stalls count too); 1st speech = in ours one more 1:1 session says a short text, times\n"
        "the first packet that is not silence, cancels and says it again (p50/max ms, samples);\n"
        "speech % = frames carrying speech; gc max = longest CPython garbage\n"
        "collection in the server (it holds the event loop); opus cx (load) = the server's Opus\n"
        "complexity at the end of the window, and the encode load in cores that chose it (see\n"
        "media_server/audio/budget.py); server CPU % of its one core, split\n"
        "loop/enc/syn/oth = event-loop thread, Opus encode pool, synthesis workers (the replay\n"
        "engine), anything else; ms/listener-s = server CPU per listener per second; client CPU %\n"
        "of core 1 (the listeners); other % = CPU used by anything else on the machine (about 0\n"
        "for a clean run).\n"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.fanout",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="a few small steps, under a minute")
    parser.add_argument(
        "--steps", type=counts, default=None, help="comma-separated listener counts to ramp through"
    )
    parser.add_argument(
        "--hold", type=positive_float, default=None, help="seconds measured per step"
    )
    parser.add_argument(
        "--only", choices=("ours", "naive"), default=None, help="ramp one mode only"
    )
    args = parser.parse_args(argv)
    plan = QUICK_PLAN if args.quick else DEFAULT_PLAN
    if args.steps:
        plan = dataclasses.replace(plan, steps=args.steps)
    if args.hold is not None:
        plan = dataclasses.replace(plan, hold_s=args.hold)
    if len(os.sched_getaffinity(0)) < 2 or (os.cpu_count() or 1) < 2:
        # Not an error: CI on a one-core runner keeps going, with the reason printed.
        print("bench.fanout not run: it pins the server and the listeners to two cores.")
        return 0

    logging.basicConfig(level=logging.WARNING)
    print_machine()
    sys.stdout.flush()
    speech = synthesise_once()
    # The bot and this script stay off the server's core, with the listeners.
    os.sched_setaffinity(0, {CLIENT_CORE})
    print_notes(speech, plan)
    sys.stdout.flush()
    modes = {"ours": (MODE_ROOM,), "naive": (MODE_NAIVE,)}.get(
        args.only or "", (MODE_ROOM, MODE_NAIVE)
    )
    results = asyncio.run(run_all(plan, speech, modes))
    for result in results:
        print_mode(result, plan)
    print_legend()
    print_summary(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
