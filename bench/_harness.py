"""What ``bench.fanout`` and ``bench.capacity`` share: the server on core 0, peers on core 1,
one window per step from ``POST /stats/window``, ``GET /stats`` and ``/proc``."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import multiprocessing
import os
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any, Final

import aiohttp
import numpy as np
from aiohttp import web

from bench._naive_aiortc import create_naive_app
from bench._peers import GAP_S, PEERS_CORE, PeerStats, peers_process
from bench._report import (
    LOOPBACK,
    OPERATOR_TOKEN,
    free_port,
    loop_thread_cpu_s,
    print_machine,
    print_table,
    process_cpu_s,
    recv_message,
    server_stats,
    start_window,
    system_busy_s,
)
from media_server.audio.opus import libopus_version
from media_server.audio.resampler import StreamResampler
from media_server.config import Settings
from media_server.rooms.tokens import Role, TokenSigner
from signaling.app import KEEPALIVE_TIMEOUT_S, create_app
from synthesis import AudioChunk, EngineCapabilities, Unsupported, VoiceInfo, create_engine
from synthesis.request import Mode, ReferenceAudio, SynthesisRequest

SERVER_CORE: Final = 0
ROOM: Final = "fanout"
SECRET: Final = "fanout-bench-secret-0123456789"
P99_LIMIT_MS: Final = 10.0
CLEAR_FAIL_P99_MS: Final = 20.0
"""A step this late (or with underruns or failed joins) ends the ramp at once."""
START_WAIT_S: Final = 60.0
JOIN_WAIT_S: Final = 180.0
REPLY_WAIT_S: Final = 60.0
STOP_WAIT_S: Final = 45.0

MODE_ROOM: Final = "room"
MODE_NAIVE: Final = "naive"
MODE_AIORTC: Final = "aiortc"
MODE_NAMES: Final = {
    MODE_ROOM: "ours (room fan-out)",
    MODE_NAIVE: "ours, 1:1 sessions",
    MODE_AIORTC: "baseline (naive aiortc)",
}

PARAGRAPH: Final = (
    "Good evening, and welcome to the weekly update from the operations team. "
    "The new warehouse in the north district opened on schedule, and the first "
    "deliveries left on Monday morning. Please keep your questions for the end."
)
"""Synthesised once by Piper; every ``say`` replays this speech."""


class ReplayEngine:
    """BENCHMARK ONLY. Yields the chunks Piper yielded for :data:`PARAGRAPH`, instantly,
    whatever the text: synthesis costs the server nothing, the media path is all there is.
    Given to ``create_app`` as its engine (a whole engine, not a proxy of one)."""

    name = "replay"

    def __init__(self, chunks: Sequence[np.ndarray], sample_rate_hz: int, voice_id: str) -> None:
        self.chunks = [np.ascontiguousarray(c, dtype=np.int16) for c in chunks]
        self.sample_rate_hz = sample_rate_hz
        self.voices = (VoiceInfo(voice_id, "en-US", sample_rate_hz),)
        self.capabilities = EngineCapabilities(
            frozenset({Mode.SFT}), sample_rate_hz, ("en-US",), native_speed=True
        )

    def synthesize(
        self, request: SynthesisRequest, cancel: threading.Event
    ) -> Iterator[AudioChunk]:
        for pcm in self.chunks:
            if cancel.is_set():
                return
            yield AudioChunk(pcm, self.sample_rate_hz)

    def register_voice(
        self, voice_id: str, reference: ReferenceAudio, reference_text: str | None
    ) -> VoiceInfo:
        raise Unsupported(None, "the replay engine cannot clone voices", "use piper or cosyvoice")

    def close(self) -> None:
        pass

    @property
    def duration_s(self) -> float:
        return sum(c.size for c in self.chunks) / self.sample_rate_hz


def synthesise_once() -> ReplayEngine:
    """:data:`PARAGRAPH` through the real Piper voice, once, here; the servers replay it."""
    engine = create_engine("piper")
    try:
        request = SynthesisRequest(text=PARAGRAPH)
        chunks = [c.pcm.copy() for c in engine.synthesize(request, threading.Event())]
        return ReplayEngine(chunks, engine.sample_rate_hz, engine.voices[0].voice_id)
    finally:
        engine.close()


async def _serve(
    conn: Connection, settings: Settings, replay: ReplayEngine, mode: str, engine: str
) -> None:
    if mode == MODE_AIORTC:
        resampler = StreamResampler(replay.sample_rate_hz)
        pcm = [*(resampler.resample(c) for c in replay.chunks), resampler.flush()]
        app = create_naive_app(np.concatenate(pcm).astype(np.int16))
    elif engine == "replay":
        app = create_app(settings, engine=replay)
    else:  # the real voice, loaded by the app as in production
        app = create_app(dataclasses.replace(settings, engine=engine))
    runner = web.AppRunner(app, access_log=None, keepalive_timeout=KEEPALIVE_TIMEOUT_S)
    await runner.setup()
    await web.TCPSite(runner, LOOPBACK, settings.port).start()
    conn.send(("ready", os.getpid()))
    await recv_message(conn, None)  # anything, or the parent gone, stops it
    try:
        await asyncio.wait_for(runner.cleanup(), STOP_WAIT_S)
    finally:
        conn.send(("stopped",))


def server_process(
    conn: Connection, settings: Settings, speech: ReplayEngine, mode: str, engine: str
) -> None:
    """Entry point of the server process (multiprocessing ``spawn`` target)."""
    os.sched_setaffinity(0, {SERVER_CORE})
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(_serve(conn, settings, speech, mode, engine))


@dataclass(frozen=True, slots=True)
class Plan:
    steps: tuple[int, ...]
    settle_s: float
    hold_s: float
    mode_budget_s: float
    """Wall time after which a mode starts no further step."""


@dataclass(frozen=True, slots=True)
class ServerWindow:
    """One window of the server: its ``GET /stats`` and its CPU from ``/proc``. Lateness from
    the pacers' own figures (1 room, or N 1:1 sessions, each with 500 frames in 10 s): p50 the
    median pacer's; p99 and max the worst pacer's (judged), ``p99_median_ms`` the median's."""

    wall_s: float
    cpu_s: float
    loop_cpu_s: float  # the event loop's thread; the others encode, synthesise
    p50_ms: float
    p99_ms: float
    p99_median_ms: float
    max_ms: float
    send_p99_ms: float | None
    """Rooms: when the last listener's packet was written, after the deadline."""
    underruns: int
    skipped_frames: int
    opus_complexity: str

    @staticmethod
    def of(stats: dict[str, Any], wall_s: float, cpu_s: float, loop_cpu_s: float) -> ServerWindow:
        pacers = stats.get("rooms") or stats.get("per_session") or []

        def worst(key: str) -> float:
            return max((float(p[key]) for p in pacers), default=0.0)

        def median(key: str) -> float:
            return float(np.median([p[key] for p in pacers])) if pacers else 0.0

        send = [float(p["send_lateness_p99_ms"]) for p in pacers if "send_lateness_p99_ms" in p]
        opus = stats.get("opus")
        return ServerWindow(
            wall_s, cpu_s, loop_cpu_s,
            median("lateness_p50_ms"), worst("lateness_p99_ms"), median("lateness_p99_ms"),
            worst("lateness_max_ms"), max(send) if send else None,
            sum(int(p["underruns"]) for p in pacers), sum(int(p["skipped_frames"]) for p in pacers),
            "-" if opus is None else f"{opus['complexity']} ({opus['encode_load_cores']:.2f})",
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class Step:
    n: int
    joined: int
    join_s: float
    server: ServerWindow
    peers: PeerStats
    others_cores: float
    """Average cores busy with anything but this benchmark (about 0 on a clean run)."""
    churn: tuple[int, int, float, float] | None = None
    """Peers that joined (and left) during the window: joined, failed, join p50 s, max s."""

    def cpu(self, of: float | None = None) -> float:
        return (self.server.cpu_s if of is None else of) / max(1e-9, self.server.wall_s)

    def failures(self, gaps: bool = False) -> list[str]:
        """Why the step fails: not all joined, p99 >= 10 ms, underruns (, gaps > 60 ms)."""
        why = [f"only {self.joined} joined"] if self.joined < self.n else []
        if self.server.p99_ms >= P99_LIMIT_MS:
            why.append(f"p99 {self.server.p99_ms:.1f} ms")
        if self.server.underruns:
            why.append(f"{self.server.underruns} underruns")
        if gaps and self.peers.gaps:
            why.append(f"{self.peers.gaps} gaps > {GAP_S * 1000:.0f} ms")
        return why

    def clearly_failed(self) -> bool:
        """Stop ramping: a worse step would only take longer to fail."""
        return bool(
            self.joined < self.n or self.server.underruns or self.server.p99_ms >= CLEAR_FAIL_P99_MS
        )


@dataclass
class ModeResult:
    mode: str
    steps: list[Step] = field(default_factory=list)
    stopped: str = "all steps done"

    def largest(self, gaps: bool = False) -> str:
        """The largest passing N (">= N" when no step failed), or "-"."""
        ok = [s.n for s in self.steps if not s.failures(gaps)]
        return "-" if not ok else f"{'>= ' * (len(ok) == len(self.steps))}{max(ok)}"


@dataclass
class Harness:
    """``churner``: peers joining during a window, on their own loop (so as not to delay the
    measured peers')."""

    base_url: str
    server_pid: int
    peers: Connection
    churner: Connection


async def ask(conn: Connection, command: tuple[Any, ...], timeout_s: float) -> tuple[Any, ...]:
    conn.send(command)
    reply = await recv_message(conn, timeout_s)
    if not isinstance(reply, tuple) or reply[0] == "error":
        raise RuntimeError(f"{command[0]!r} failed: {reply!r}")
    return reply


async def run_bot(http: aiohttp.ClientSession, base_url: str, speaking: asyncio.Event) -> None:
    """The room's bot: keeps two utterances queued, one more on every ``speech.started``."""
    token = TokenSigner(SECRET.encode()).issue(ROOM, Role.BOT, "bench-bot")
    say = {"type": "say", "text": PARAGRAPH}
    async with http.ws_connect(f"{base_url}/rooms/{ROOM}/bot?token={token}") as ws:
        await ws.send_json(say)
        await ws.send_json(say)
        async for msg in ws:
            event = json.loads(msg.data) if msg.type == aiohttp.WSMsgType.TEXT else {}
            if event.get("type") == "speech.started":
                speaking.set()
                await ws.send_json(say)


@contextlib.asynccontextmanager
async def open_harness(
    mode: str, speech: ReplayEngine, max_peers: int, engine: str = "replay"
) -> AsyncIterator[Harness]:
    """Start the server (core 0), the peers and the joiners (core 1); stop all after."""
    ctx = multiprocessing.get_context("spawn")
    port = free_port()
    base_url = f"http://{LOOPBACK}:{port}"
    settings = Settings(
        port=port, ice_host_addresses=(LOOPBACK,), token_secret=SECRET,
        api_token=OPERATOR_TOKEN, debug_timings=True, max_rooms=2,
        max_room_participants=max_peers + 2,
        max_sessions=max_peers + 200,  # room for peers joining during a window
        synthesis_workers=max_peers + 4,  # each speaking 1:1 session holds a slot
        # room listeners show join tokens, not the operator's: no per-client bounds
        max_pending_sessions_per_client=0, max_sockets_per_client=0,
        max_syntheses_per_client=0, client_upload_bytes_per_s=0,
    )  # fmt: skip
    children: list[tuple[Connection, BaseProcess]] = []

    async def start(target: Any, *args: Any) -> tuple[Connection, int]:
        conn, end = ctx.Pipe()
        process = ctx.Process(target=target, args=(end, *args), daemon=True)
        process.start()
        end.close()
        children.append((conn, process))
        (_, pid) = await recv_message(conn, START_WAIT_S)
        return conn, pid

    bot: asyncio.Task[None] | None = None
    try:
        async with aiohttp.ClientSession() as http:
            _, server_pid = await start(server_process, settings, speech, mode, engine)
            if mode == MODE_ROOM:
                speaking = asyncio.Event()
                bot = asyncio.create_task(run_bot(http, base_url, speaking))
                await asyncio.wait_for(speaking.wait(), START_WAIT_S)
            args = (base_url, mode, ROOM, SECRET, PARAGRAPH)
            peers, _ = await start(peers_process, *args)
            churner, _ = await start(peers_process, *args)
            yield Harness(base_url, server_pid, peers, churner)
    finally:
        if bot is not None:
            bot.cancel()
            await asyncio.gather(bot, return_exceptions=True)
        for conn, process in reversed(children):  # peers first, the server last
            with contextlib.suppress(Exception):
                await ask(conn, ("close",), STOP_WAIT_S)
            process.join(5)
            if process.is_alive():
                process.terminate()
                process.join(5)
            conn.close()


def cpu_clocks(server_pid: int) -> tuple[float, ...]:
    """Wall, the machine's busy CPU, ours + the server's, the server's, its loop thread's."""
    ours = process_cpu_s(os.getpid())
    server = process_cpu_s(server_pid)
    return (time.monotonic(), system_busy_s(), ours + server, server,
            loop_thread_cpu_s(server_pid))  # fmt: skip


async def run_step(
    n: int, plan: Plan, h: Harness, churn: tuple[float, float] | None = None
) -> Step:
    """Join ``n``, let them settle, measure one window; with ``churn`` (joins per second,
    seconds each stays), other peers keep joining and leaving through the window."""
    _, joined, _, join_s = await ask(h.peers, ("join", n), JOIN_WAIT_S)
    await asyncio.sleep(plan.settle_s)
    async with aiohttp.ClientSession() as http:
        at = cpu_clocks(h.server_pid)
        await start_window(http, h.base_url)
        await ask(h.peers, ("mark",), REPLY_WAIT_S)
        churned = None
        if churn is None:
            await asyncio.sleep(plan.hold_s)
        else:
            wait = plan.hold_s + churn[1] + JOIN_WAIT_S
            (_, *got) = await ask(h.churner, ("churn", churn[0], plan.hold_s, churn[1]), wait)
            churned = (int(got[0]), int(got[1]), float(got[2]), float(got[3]))
        # the peers' window ends first: /stats costs the server's loop a few ms
        (_, peer_stats) = await ask(h.peers, ("collect",), REPLY_WAIT_S)
        stats = await server_stats(http, h.base_url)
        end = cpu_clocks(h.server_pid)
    wall, busy, ours, server, loop = (e - s for e, s in zip(end, at, strict=True))
    others = max(0.0, busy - ours - peer_stats.cpu_s) / wall  # the peers count their own
    window = ServerWindow.of(stats, wall, server, loop)
    return Step(n, joined, join_s, window, peer_stats, others, churned)


async def run_mode(
    mode: str, plan: Plan, speech: ReplayEngine, churn: tuple[float, float] | None = None,
    engine: str = "replay", gaps: bool = False,
) -> ModeResult:  # fmt: skip
    result = ModeResult(mode)
    started = time.monotonic()
    try:
        async with open_harness(mode, speech, max(plan.steps), engine) as h:
            for n in plan.steps:
                if time.monotonic() - started > plan.mode_budget_s:
                    result.stopped = f"time budget ({plan.mode_budget_s:.0f} s) spent before N={n}"
                    break
                step = await run_step(n, plan, h, churn)
                result.steps.append(step)
                why = step.failures(gaps)
                verdict = "FAIL: " + ", ".join(why) if why else "ok"
                print(f"  {MODE_NAMES[mode]:<24} N={n:<4} p99 {step.server.p99_ms:6.2f} ms"
                      f"  server CPU {step.cpu() * 100:3.0f}%  {verdict}",
                      file=sys.stderr, flush=True)  # fmt: skip
                if step.clearly_failed():
                    result.stopped = f"N={n} clearly failed ({', '.join(why)})"
                    break
    except (RuntimeError, TimeoutError, EOFError, OSError) as exc:
        result.stopped = f"error: {type(exc).__name__}: {exc}"
    return result


def print_pinned_machine() -> None:
    print_machine(
        ("aiortc", "aioice", "av", "pylibsrtp"),
        (("libopus (our encoder)", libopus_version()),
         ("pinning", f"server on core {SERVER_CORE}; peers, bot, this script on {PEERS_CORE}")),
    )  # fmt: skip


def _first_speech(peers: PeerStats) -> str:
    ms, timeouts = peers.first_speech_ms, peers.first_speech_timeouts
    text = f"{np.percentile(ms, 50):.0f}/{max(ms):.0f} ({len(ms)})" if ms else "-"
    return text + (f" +{timeouts} t/o" if timeouts else "")


def print_mode(result: ModeResult, plan: Plan, gaps: bool = False) -> None:
    rows = [
        (str(s.n), f"{s.join_s:.1f}", f"{s.server.p50_ms:.2f}",
         f"{s.server.p99_median_ms:.2f}/{s.server.p99_ms:.2f}",
         f"{s.server.max_ms:.1f}",
         "-" if s.server.send_p99_ms is None else f"{s.server.send_p99_ms:.2f}",
         str(s.server.underruns), str(s.server.skipped_frames), str(s.peers.missing_frames),
         str(s.peers.gaps), _first_speech(s.peers), s.server.opus_complexity,
         f"{s.cpu() * 100:.0f} ({s.cpu(s.server.loop_cpu_s) * 100:.0f})",
         f"{1000 * s.server.cpu_s / max(1e-9, s.server.wall_s * s.n):.2f}",
         f"{s.cpu(s.peers.cpu_s) * 100:.0f}", f"{s.others_cores * 100:.0f}",
         "FAIL" if s.failures(gaps) else "ok")
        for s in result.steps
    ]  # fmt: skip
    if rows:
        print_table(
            f"{MODE_NAMES[result.mode]}; {plan.hold_s:g} s window per step",
            ("N", "join s", "p50", "p99 med/worst", "max", "send p99", "underruns", "skipped",
             "missing", f"gaps>{GAP_S * 1000:.0f}ms", "1st speech p50/max", "opus cx (load)",
             "CPU % (loop)", "ms/peer-s", "peers CPU %", "other %", "result"),
            rows,
        )  # fmt: skip
    print(f"{MODE_NAMES[result.mode]}: {result.stopped}.\n")


def cpu_per_peer_ms(result: ModeResult, gaps: bool) -> float | None:
    """Server CPU added per peer (ms per second): a line fitted over the passing steps, so
    fixed costs (a room's one encoder and pacer) are left out."""
    points = [(s.n, s.cpu() * 1000) for s in result.steps if not s.failures(gaps)]
    if len({n for n, _ in points}) < 2:
        return None
    ns, cpu_ms = zip(*points, strict=True)
    return float(np.polyfit(np.array(ns, float), np.array(cpu_ms), 1)[0])


def print_summary(title: str, results: Sequence[ModeResult], gaps: bool = False) -> None:
    """Per mode: the largest passing N, figures at it, and why the first failing N failed."""
    rows = []
    for r in results:
        at = max((s for s in r.steps if not s.failures(gaps)), key=lambda s: s.n, default=None)
        fail = next((s for s in r.steps if s.failures(gaps)), None)
        slope = cpu_per_peer_ms(r, gaps)
        churn = (
            "-"
            if at is None or at.churn is None
            else (
                "{} ok, {} failed, p50 {:.0f} ms, max {:.0f}".format(
                    *at.churn[:2], *(v * 1000 for v in at.churn[2:])
                )
            )
        )
        rows.append((
            MODE_NAMES[r.mode], r.largest(gaps),
            "-" if at is None else f"{at.server.p99_ms:.2f} / {at.server.max_ms:.1f}",
            "-" if at is None else f"{at.cpu() * 100:.0f}",
            "-" if at is None else f"{1000 * at.server.cpu_s / (at.server.wall_s * at.n):.1f}",
            "-" if slope is None else f"{slope:.1f}", churn,
            "-" if fail is None else f"{fail.n}: {', '.join(fail.failures(gaps))}",
        ))  # fmt: skip
    print_table(
        title,
        ("server", "largest N", "p99 / max at N", "CPU % at N", "ms/peer-s at N",
         "CPU ms/s per added peer", "joins during the window at N", "first failing: why"),
        rows,
        left=(0, 6, 7),
    )  # fmt: skip


LEGEND: Final = """\
Columns (ms unless named; the server's GET /stats over a window opened by POST /stats/window):
p50, p99, max = how late each pacer sent its frames after their 20 ms deadlines (the median
pacer's, the median and worst pacer's, the worst's); send p99 = rooms: when the last
listener's packet was written; underruns, skipped = silent ticks inside speech, ticks skipped
after a stall; missing, gaps = RTP timestamps the peers never got, arrivals > 60 ms apart;
1st speech = a 1:1 probe's say -> speech.started on an idle speaker (p50/max, samples);
opus cx (load) = complexity, encode load in cores; CPU % of the server's core (its loop
thread); ms/peer-s = server CPU per peer per second; other % = the rest of the machine.
"""
