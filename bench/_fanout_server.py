"""The fan-out benchmark's server process: the real app, pinned to one core.

Started by ``bench.fanout`` (multiprocessing ``spawn``). It pins itself to
:data:`SERVER_CORE`, serves ``signaling.app.create_app`` on 127.0.0.1 and answers
the parent's commands over a pipe:

* ``("prepare",)``: get the next window ready (wrap every track to stamp its sends,
  make a fresh ``PacingStats`` for every pacer) -> ``("prepared",)``. Sent before
  the settling time: with 150 sessions this takes the loop 90 ms, a stall the
  window must not contain;
* ``("mark",)``: start a measuring window (swap the prepared ``PacingStats`` in,
  baselines for underruns and dropped frames, CPU times) -> ``("marked",)``;
* ``("collect",)``: end the window -> ``("stats", ServerStats)``;
* ``("buffered",)``: encoded frames queued in the least-fed speaker -> ``("buffered", n)``;
* ``("stop",)``: shut the app down -> ``("stopped",)``.

The only engine is :class:`ReplayEngine`, which replays speech Piper synthesised
once in the parent. Everything after the engine is the server's own media path:
Speaker (resample + Opus in the encode pool), Pacer, FanOut or the 1:1 track,
aiortc's RTP sender, SRTP, ICE.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import logging
import os
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, Final

import numpy as np
from aiohttp import web

from bench._client import recv_message
from bench._naive_aiortc import Lateness, create_naive_app, peers
from media_server.audio.frames import FRAME_SAMPLES
from media_server.audio.resampler import StreamResampler
from media_server.config import Settings
from media_server.playout.pacer import OutgoingFrame, Pacer
from media_server.playout.stats import PacingStats
from media_server.rtc.track import EncodedAudioTrack
from media_server.runtime.heap import rss_bytes
from media_server.speech.speaker import Speaker
from signaling.app import KEEPALIVE_TIMEOUT_S, create_app
from signaling.keys import MEDIA_KEY
from synthesis import (
    AudioChunk,
    Engine,
    EngineCapabilities,
    Unsupported,
    VoiceInfo,
)
from synthesis.request import Mode, ReferenceAudio, SynthesisRequest

SERVER_CORE: Final = 0
LOOPBACK: Final = "127.0.0.1"
WINDOW_FRAMES: Final = 30_000
"""Lateness samples kept per pacer during one window (10 minutes: more than a window holds)."""
COMMAND_WAIT_S: Final = 900.0
SHUTDOWN_WAIT_S: Final = 30.0

MODE_ROOM: Final = "room"
MODE_NAIVE: Final = "naive"
MODE_AIORTC: Final = "aiortc"
"""The naive aiortc baseline (``bench._naive_aiortc``), not the server."""


class ReplayEngine:
    """BENCHMARK ONLY. Replays PCM that Piper synthesised once, whatever the text.

    It yields the same chunks Piper yielded (one per sentence, at Piper's rate),
    instantly, so synthesis costs nothing in the measured process and only the
    media path is measured. Requests are checked as for Piper (``sft`` only).
    """

    def __init__(self, chunks: Sequence[np.ndarray], sample_rate_hz: int, voice_id: str) -> None:
        self._chunks = [np.ascontiguousarray(c, dtype=np.int16) for c in chunks]
        self._rate = sample_rate_hz
        self._voices = (VoiceInfo(voice_id, "en-US", sample_rate_hz),)
        self._capabilities = EngineCapabilities(
            modes=frozenset({Mode.SFT}),
            sample_rate_hz=sample_rate_hz,
            languages=("en-US",),
            native_speed=True,
        )

    @property
    def name(self) -> str:
        return "replay"

    @property
    def sample_rate_hz(self) -> int:
        return self._rate

    @property
    def capabilities(self) -> EngineCapabilities:
        return self._capabilities

    @property
    def voices(self) -> tuple[VoiceInfo, ...]:
        return self._voices

    def synthesize(
        self, request: SynthesisRequest, cancel: threading.Event
    ) -> Iterator[AudioChunk]:
        for pcm in self._chunks:
            if cancel.is_set():
                return
            yield AudioChunk(pcm, self._rate)

    def register_voice(
        self, voice_id: str, reference: ReferenceAudio, reference_text: str | None
    ) -> VoiceInfo:
        raise Unsupported("unsupported", "the replay engine cannot clone voices", "")

    def close(self) -> None:
        pass


@dataclass(frozen=True, slots=True)
class Percentiles:
    p50_ms: float
    p99_ms: float
    max_ms: float
    count: int

    @staticmethod
    def of(samples_s: np.ndarray) -> Percentiles:
        if not samples_s.size:
            return Percentiles(0.0, 0.0, 0.0, 0)
        p50, p99 = np.percentile(samples_s, [50, 99]) * 1000
        return Percentiles(float(p50), float(p99), float(samples_s.max() * 1000), samples_s.size)


@dataclass(frozen=True, slots=True)
class ServerStats:
    """One measuring window, server side."""

    wall_s: float
    streams: int
    """Pacers running: 1 for the room, one per session for the naive mode."""
    listeners: int
    """Tracks receiving frames (the room's fan-out, or 1:1 sessions)."""
    lateness: Percentiles
    """Pacer lateness: each frame's send time after its 20 ms deadline, all pacers."""
    send_lateness: Percentiles
    """Per listener and frame: when aiortc's RTP sender took the packet, after the deadline."""
    late_frames: int
    """Pacer frames later than 10 ms."""
    frames_sent: int
    speech_frames: int
    underruns: int
    skipped_frames: int
    dropped_frames: int
    cpu_s: float
    """Process CPU time, all threads."""
    thread_cpu_s: dict[str, float]
    """CPU time by thread: the event loop, the Opus encode pool, synthesis workers, others."""
    gc_collections: int
    gc_total_ms: float
    gc_max_ms: float
    """Longest garbage collection (any generation); the event loop is held for all of it."""
    gc_max_generation: int
    opus_complexity: str = "-"
    """The server's Opus complexity at the end of the window (and its encode load, cores)."""


_CLOCK_TICKS: Final = os.sysconf("SC_CLK_TCK")


def thread_cpu_s() -> dict[int, tuple[str, float]]:
    """Every thread of this process: its group and the CPU seconds it has used."""
    pid = os.getpid()
    names = {t.native_id: t.name for t in threading.enumerate()}
    threads = {}
    for entry in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{entry}/stat", encoding="ascii") as stat:
                fields = stat.read().rpartition(")")[2].split()
        except OSError:
            continue
        tid = int(entry)
        name = names.get(tid, "")
        if tid == pid:
            group = "loop"
        elif name.startswith(("opus-encode", "asyncio_")):
            # ours: the Opus encode pool; the aiortc baseline encodes in asyncio's default pool
            group = "encode"
        elif name.startswith("synthesis"):
            group = "synthesis"
        else:
            group = "other"
        threads[tid] = (group, (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS)
    return threads


class GcPauses:
    """CPython garbage collections while a window is open (each one holds the event loop)."""

    def __init__(self) -> None:
        self.count = 0
        self.total_s = 0.0
        self.max_s = 0.0
        self.max_generation = 0
        self._started = 0.0
        gc.callbacks.append(self._on_gc)

    def reset(self) -> None:
        self.count = 0
        self.total_s = 0.0
        self.max_s = 0.0
        self.max_generation = 0

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        pause = time.perf_counter() - self._started
        self.count += 1
        self.total_s += pause
        if pause > self.max_s:
            self.max_s = pause
            self.max_generation = info["generation"]


class ProcessWindow:
    """This process over one measuring window: wall time, CPU by thread group, GC pauses."""

    def __init__(self) -> None:
        self._gc = GcPauses()
        self._at = 0.0
        self._cpu_at = 0.0
        self._cpu_s = 0.0
        self._threads: dict[int, tuple[str, float]] = {}
        self._wall = 0.0
        self._by_group: dict[str, float] = {}

    def start(self) -> None:
        self._gc.reset()
        self._at = time.monotonic()
        self._cpu_at = time.process_time()
        self._threads = thread_cpu_s()

    def end(self) -> None:
        """Stop the clocks (before the figures are computed, which is not measured)."""
        self._wall = time.monotonic() - self._at
        self._cpu_s = time.process_time() - self._cpu_at
        by_group = {"loop": 0.0, "encode": 0.0, "synthesis": 0.0}
        for tid, (group, used) in thread_cpu_s().items():
            if group in by_group:
                by_group[group] += used - self._threads.get(tid, (group, 0.0))[1]
        by_group["other"] = max(0.0, self._cpu_s - sum(by_group.values()))
        self._by_group = by_group

    def stats(self, **measured: Any) -> ServerStats:
        """The ended window: ``measured`` (the media figures) plus this process's usage."""
        return ServerStats(
            wall_s=self._wall,
            cpu_s=self._cpu_s,
            thread_cpu_s=self._by_group,
            gc_collections=self._gc.count,
            gc_total_ms=self._gc.total_s * 1000,
            gc_max_ms=self._gc.max_s * 1000,
            gc_max_generation=self._gc.max_generation,
            **measured,
        )


class Probe:
    """Finds the live pacers, speakers and tracks of the app and measures one window."""

    def __init__(self, app: web.Application, mode: str) -> None:
        self._app = app
        self._mode = mode
        self._stamped: set[EncodedAudioTrack] = set()
        self._send_lateness: list[float] = []
        self._recording = False
        self._underruns: dict[int, int] = {}
        self._dropped: dict[int, int] = {}
        self._window = ProcessWindow()
        self._prepared: dict[int, PacingStats] = {}
        self._retired: list[PacingStats] = []
        """The last window's stats, freed once this window has ended (freeing 150 large
        rings costs the loop milliseconds too)."""

    def streams(self) -> list[tuple[Pacer, Speaker, list[EncodedAudioTrack]]]:
        if self._mode == MODE_ROOM:
            return [
                (room.pacer, room.speaker, [lst.track for lst in room.listeners.values()])
                for room in self._app[MEDIA_KEY].rooms.rooms.values()
            ]
        return [(s.pacer, s.speaker, [s.track]) for s in self._app[MEDIA_KEY].sessions.sessions()]

    def _complexity(self) -> str:
        budget = self._app[MEDIA_KEY]._budget
        return f"{budget.complexity} ({budget.load_cores:.2f})"

    def least_buffered(self) -> int:
        """Encoded frames waiting in the least-fed speaker (each fills up to 250 = 5 s)."""
        return min((s.buffered_frames for _, s, _ in self.streams()), default=0)

    def _stamp(self, track: EncodedAudioTrack, pacer: Pacer) -> None:
        """Note when each packet is sent: wrap the track's writer (RTP written from the
        tick) or its ``recv`` (where aiortc's sender task takes each packet)."""
        writer = track.writer
        if writer is not None:
            write = writer.write

            def write_stamped(frame: OutgoingFrame) -> None:
                write(frame)
                self._note_sent(pacer, frame.pts)

            writer.write = write_stamped  # type: ignore[method-assign]
        else:
            recv = track.recv

            async def recv_stamped() -> Any:
                packet = await recv()
                if packet.pts is not None:
                    self._note_sent(pacer, packet.pts)
                return packet

            track.recv = recv_stamped  # type: ignore[method-assign]
        self._stamped.add(track)

    def _note_sent(self, pacer: Pacer, pts: int) -> None:
        """Record how long after its tick's deadline the packet at ``pts`` went out."""
        if self._recording and pacer._start is not None:
            deadline = pacer.tick_deadline(pts // FRAME_SAMPLES)
            self._send_lateness.append(time.monotonic() - deadline)

    def _stamp_new(self, tracks: list[EncodedAudioTrack], pacer: Pacer) -> None:
        for track in tracks:
            if track not in self._stamped:
                self._stamp(track, pacer)

    def prepare(self) -> None:
        """Wrap new tracks and make the next window's stats (outside any window)."""
        self._prepared.clear()
        for pacer, _, tracks in self.streams():
            self._prepared[id(pacer)] = PacingStats(WINDOW_FRAMES)
            self._stamp_new(tracks, pacer)

    def mark(self) -> None:
        self._underruns.clear()
        self._dropped.clear()
        self._send_lateness.clear()
        for pacer, speaker, tracks in self.streams():
            self._retired.append(pacer.stats)
            fresh = self._prepared.pop(id(pacer), None)
            pacer.stats = PacingStats(WINDOW_FRAMES) if fresh is None else fresh
            self._underruns[id(speaker)] = speaker.underruns
            for track in tracks:
                self._dropped[id(track)] = track.dropped_frames
            self._stamp_new(tracks, pacer)  # joined since prepare
        self._prepared.clear()
        self._recording = True
        self._window.start()

    def collect(self) -> ServerStats:
        self._window.end()
        self._recording = False
        self._retired.clear()
        streams = self.streams()
        lateness = [p.stats.lateness_s() for p, _, _ in streams]
        samples = np.concatenate(lateness) if lateness else np.zeros(0)
        send = np.asarray(self._send_lateness, dtype=np.float64)
        self._send_lateness.clear()
        return self._window.stats(
            streams=len(streams),
            listeners=sum(len(t) for _, _, t in streams),
            lateness=Percentiles.of(samples),
            send_lateness=Percentiles.of(send),
            late_frames=int(np.count_nonzero(samples > 0.010)),
            frames_sent=sum(p.stats.frames_sent for p, _, _ in streams),
            speech_frames=sum(p.stats.speech_frames_sent for p, _, _ in streams),
            underruns=sum(s.underruns - self._underruns.get(id(s), 0) for _, s, _ in streams),
            skipped_frames=sum(p.stats.skipped_frames for p, _, _ in streams),
            dropped_frames=sum(
                t.dropped_frames - self._dropped.get(id(t), 0) for _, _, ts in streams for t in ts
            ),
            opus_complexity=self._complexity(),
        )


class BaselineProbe:
    """Measures the naive aiortc baseline: how late each track woke, CPU, GC."""

    def __init__(self, app: web.Application, lateness: Lateness) -> None:
        self._app = app
        self._lateness = lateness
        self._window = ProcessWindow()

    def least_buffered(self) -> int:
        return FILLED  # looped PCM: always ready

    def prepare(self) -> None:
        """Nothing to get ready: the baseline's tracks record into one list."""

    def mark(self) -> None:
        self._lateness.samples.clear()
        self._lateness.frames = 0
        self._lateness.recording = True
        self._window.start()

    def collect(self) -> ServerStats:
        self._window.end()
        self._lateness.recording = False
        samples = np.asarray(self._lateness.samples, dtype=np.float64)
        lateness = Percentiles.of(samples)
        count = peers(self._app)
        return self._window.stats(
            streams=count,
            listeners=count,
            lateness=lateness,
            send_lateness=lateness,
            late_frames=int(np.count_nonzero(samples > 0.010)),
            frames_sent=self._lateness.frames,
            speech_frames=self._lateness.frames,
            underruns=0,
            skipped_frames=0,
            dropped_frames=0,
        )


FILLED: Final = 1_000_000


def _session_count(app: web.Application, mode: str) -> int:
    if mode == MODE_AIORTC:
        return peers(app)
    if mode == MODE_ROOM:
        return sum(len(r.listeners) for r in app[MEDIA_KEY].rooms.rooms.values())
    return len(app[MEDIA_KEY].sessions)


def _looped_speech_48k(engine: ReplayEngine) -> np.ndarray:
    """The replayed speech at 48 kHz, resampled once, for the baseline's tracks."""
    resampler = StreamResampler(engine.sample_rate_hz)
    parts = [resampler.resample(chunk) for chunk in engine._chunks]
    parts.append(resampler.flush())
    return np.concatenate(parts).astype(np.int16)


async def _serve(
    conn: Connection, settings: Settings, engine: Engine | None, replay: ReplayEngine, mode: str
) -> None:
    probe: Probe | BaselineProbe
    if mode == MODE_AIORTC:
        lateness = Lateness()
        app = create_naive_app(_looped_speech_48k(replay), lateness)
        probe = BaselineProbe(app, lateness)
    else:
        app = create_app(settings, engine=engine)
        probe = Probe(app, mode)
    runner = web.AppRunner(app, access_log=None, keepalive_timeout=KEEPALIVE_TIMEOUT_S)
    await runner.setup()
    site = web.TCPSite(runner, LOOPBACK, settings.port)
    await site.start()
    conn.send(("ready", os.getpid()))
    try:
        while True:
            command = await recv_message(conn, COMMAND_WAIT_S)
            if command[0] == "prepare":
                probe.prepare()
                conn.send(("prepared",))
            elif command[0] == "mark":
                probe.mark()
                conn.send(("marked",))
            elif command[0] == "collect":
                conn.send(("stats", probe.collect()))
            elif command[0] == "buffered":
                conn.send(("buffered", probe.least_buffered()))
            elif command[0] == "rss":
                # after a full collection: what the process still holds, not garbage
                gc.collect()
                conn.send(("rss", rss_bytes(), _session_count(app, mode)))
            else:
                break
    finally:
        try:
            await asyncio.wait_for(runner.cleanup(), SHUTDOWN_WAIT_S)
        except TimeoutError:
            logging.getLogger(__name__).warning("server shutdown took over %s s", SHUTDOWN_WAIT_S)
    conn.send(("stopped",))


def server_process(
    conn: Connection,
    settings: Settings,
    chunks: Sequence[np.ndarray],
    sample_rate_hz: int,
    voice_id: str,
    mode: str,
    engine_name: str = "replay",
) -> None:
    """Entry point of the server process (multiprocessing ``spawn`` target).

    ``engine_name`` "piper" serves the real Piper voice (synthesis measured too);
    the default replays the parent's speech (media path only).
    """
    os.sched_setaffinity(0, {SERVER_CORE})
    logging.basicConfig(level=logging.WARNING)
    replay = ReplayEngine(chunks, sample_rate_hz, voice_id)
    # A real engine is loaded by the app itself, as the server does in production.
    engine = replay if engine_name == "replay" else None
    if engine is None:
        settings = dataclasses.replace(settings, engine=engine_name)
    asyncio.run(_serve(conn, settings, engine, replay, mode))
