"""Time to first speech and pacing jitter of the real server, over loopback.

Run from the repository root::

    python -m bench.latency [--sentences N] [--quick]

The server app runs in this process (aiohttp on 127.0.0.1, the real Piper voice);
a real aiortc WHEP client runs in a second process. Each sentence is sent as one
``say``; the next one goes out after ``speech.done``. The server is instrumented
from outside, on the live objects only (no server code is changed):

* ``PeerSession._on_message`` stamps when the data channel delivers the text;
* ``Speaker.say`` ties that stamp to the utterance and swaps its packet deque for
  one that stamps when the first encoded packets are queued;
* ``EncodedAudioTrack.send`` stamps when the pacer hands over the utterance's
  first speech frame, and ``EncodedAudioTrack.recv`` when aiortc's RTP sender
  takes it;
* the engine given to the app is a thin proxy that stamps when synthesis starts
  in its worker thread and when the first chunk comes out.

Beside each sentence the engine alone is timed (same engine object, called
directly in a thread, same run), which is the baseline the pipeline adds to.
Nothing here asserts on timings.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import multiprocessing
import os
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, Final

import numpy as np
from aiohttp import web

from bench._client import AUDIBLE_RMS, ClientSummary, ClientTiming, client_process, recv_message
from bench._report import machine_rows, print_table, process_cpu_s, system_busy_s
from media_server.audio.encoder import StreamEncoder, UtteranceEncoder
from media_server.audio.opus import libopus_version
from media_server.config import Settings
from media_server.playout.pacer import OutgoingFrame
from media_server.playout.stats import PacingStats
from media_server.sessions.session import VoiceSession
from media_server.speech.speaker import ENCODE_SLICE_MS, Utterance
from signaling.app import KEEPALIVE_TIMEOUT_S, create_app
from signaling.keys import MEDIA_KEY
from synthesis import (
    AudioChunk,
    Engine,
    EngineCapabilities,
    ReferenceAudio,
    SynthesisRequest,
    VoiceInfo,
    create_engine,
    split_text,
)

LOOPBACK: Final = "127.0.0.1"
DEFAULT_SENTENCES: Final = 20
QUICK_SENTENCES: Final = 5
REPLY_TIMEOUT_S: Final = 90.0
LATENESS_WINDOW: Final = 1_000_000
"""Frames kept by the measuring PacingStats: the whole run, not just the last minute."""
JITTER_PREFETCH_FRAMES: Final = 4
"""aiortc's audio jitter buffer (capacity 16, prefetch 4) holds this many frames back."""

WARM_UP = "Warming up the voice before the measured sentences."

SENTENCES: Final = (
    "Hello there.",
    "The quick brown fox jumps over the lazy dog.",
    "Your order has shipped, and it should arrive on Thursday afternoon between two and four.",
    "Yes.",
    "Could you please repeat the last part of the address, starting with the street name?",
    "It is twenty past seven.",
    "After the storm passed, the whole neighbourhood came out to clear the fallen branches "
    "from the road. By evening the street looked almost normal again.",
    "Please hold on a moment while I look that up for you.",
    "Temperatures will drop to minus three degrees overnight, so drive carefully.",
    "Thank you!",
    "The meeting has been moved from Monday morning to Wednesday at half past ten, "
    "in the large conference room on the third floor.",
    "I did not catch that. Could you say it again?",
    "Our support line is open every day from eight in the morning until eight at night.",
    "Sure, I can help with that.",
    "Before you continue, make sure the device is plugged in and the green light is on; "
    "otherwise the update may fail halfway through.",
    "Good morning, and welcome back.",
    "The total comes to forty two dollars and fifteen cents, including tax.",
    "Is there anything else I can do for you today?",
    "Researchers measured the response time of the system under load, and found that most "
    "of the delay came from the speech model itself rather than from the network.",
    "Goodbye, and have a lovely evening.",
)

LATENESS_BUCKETS_MS: Final = ((0, 0.5), (0.5, 1), (1, 2), (2, 5), (5, 10), (10, 20), (20, None))


# -- instrumentation ------------------------------------------------------------


@dataclass
class EngineCall:
    text: str
    started: float
    first_chunk: float | None = None
    finished: float | None = None
    chunk: AudioChunk | None = None
    """The first chunk itself, kept for analysis after the run."""


class TimedEngine:
    """Delegates to ``inner``; stamps when each synthesis starts and yields its first chunk."""

    def __init__(self, inner: Engine) -> None:
        self._inner = inner
        self.calls: list[EngineCall] = []

    @property
    def name(self) -> str:
        return self._inner.name

    @property
    def sample_rate_hz(self) -> int:
        return self._inner.sample_rate_hz

    @property
    def voices(self) -> tuple[VoiceInfo, ...]:
        return self._inner.voices

    @property
    def capabilities(self) -> EngineCapabilities:
        return self._inner.capabilities

    def register_voice(
        self, voice_id: str, reference: ReferenceAudio, reference_text: str | None
    ) -> VoiceInfo:
        return self._inner.register_voice(voice_id, reference, reference_text)

    def synthesize(
        self, request: SynthesisRequest, cancel: threading.Event
    ) -> Iterator[AudioChunk]:
        call = EngineCall(request.text, time.monotonic())
        self.calls.append(call)
        try:
            for chunk in self._inner.synthesize(request, cancel):
                if call.first_chunk is None:
                    call.first_chunk = time.monotonic()
                    call.chunk = chunk
                yield chunk
        finally:
            call.finished = time.monotonic()

    def close(self) -> None:
        pass  # the benchmark owns the real engine and closes it itself


class StampingDeque(deque[bytes]):
    """An utterance's packet queue that notes when packets first arrive in it."""

    first_ready: float | None = None

    def extend(self, items: Iterable[bytes]) -> None:
        items = list(items)
        if items and self.first_ready is None:
            self.first_ready = time.monotonic()
        super().extend(items)


@dataclass
class ServerStamps:
    """Server-side moments of one utterance (``time.monotonic()``)."""

    received: float
    utterance: Utterance
    packets: StampingDeque
    first_sent: float | None = None
    sender_took: float | None = None


class SessionProbe:
    """Wraps the live objects of one :class:`VoiceSession` to stamp each utterance."""

    def __init__(self, session: VoiceSession) -> None:
        if session.peer.channel is not None:
            raise RuntimeError("the data channel opened before the probe was installed")
        self.session = session
        self.stamps: dict[str, ServerStamps] = {}
        self._received: float | None = None
        self._first_pts: dict[int, ServerStamps] = {}

        on_message = session.peer._on_message
        say = session.speaker.say
        send = session.track.send
        recv = session.track.recv

        # PeerSession keeps the callback it was built with and registers it when the
        # channel opens, so it is the peer's copy that must be wrapped.
        def on_message_probe(raw: str | bytes) -> None:
            self._received = time.monotonic()
            on_message(raw)

        def say_probe(
            request: SynthesisRequest, utterance_id: str | None = None, owner: str | None = None
        ) -> Utterance:
            utterance = say(request, utterance_id, owner)
            packets = StampingDeque()
            utterance.packets = packets  # producer has not run yet: say() only queues
            received = self._received if self._received is not None else time.monotonic()
            self.stamps[utterance.utterance_id] = ServerStamps(received, utterance, packets)
            return utterance

        def send_probe(frame: OutgoingFrame) -> None:
            if frame.speech:
                for stamps in self.stamps.values():
                    if stamps.first_sent is None and stamps.utterance.first_pts == frame.pts:
                        stamps.first_sent = time.monotonic()
                        self._first_pts[frame.pts] = stamps
            send(frame)

        async def recv_probe() -> Any:
            packet = await recv()
            stamps = self._first_pts.pop(packet.pts, None) if packet.pts is not None else None
            if stamps is not None:
                stamps.sender_took = time.monotonic()
            return packet

        session.peer._on_message = on_message_probe
        session.speaker.say = say_probe  # type: ignore[method-assign]
        session.track.send = send_probe  # type: ignore[method-assign]
        session.track.recv = recv_probe  # type: ignore[method-assign]


class TimedPacingStats(PacingStats):
    """PacingStats that also keeps when each frame was recorded."""

    def __init__(self, window: int) -> None:
        super().__init__(window)
        self.times: list[float] = []

    def record(self, lateness_s: float, speech: bool) -> None:
        super().record(lateness_s, speech)
        self.times.append(time.monotonic())


@dataclass(frozen=True, slots=True)
class Standalone:
    """The engine called directly for one sentence (the baseline)."""

    started: float
    first_chunk_s: float
    finished: float
    chunk: AudioChunk


def engine_first_chunk(engine: Engine, text: str) -> Standalone:
    """Call the engine directly, time its first chunk, then cancel the rest."""
    cancel = threading.Event()
    started = time.monotonic()
    chunks = engine.synthesize(SynthesisRequest(text=text), cancel)
    try:
        chunk = next(chunks)
        first_chunk_s = time.monotonic() - started
    finally:
        cancel.set()
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
    return Standalone(started, first_chunk_s, time.monotonic(), chunk)


def encode_first_slice_s(encoder: StreamEncoder, chunk: AudioChunk) -> float:
    """Resample and Opus-encode the first slice of ``chunk`` as the speaker does, timed."""
    utterance_encoder = UtteranceEncoder(encoder, chunk.sample_rate_hz)
    step = max(1, chunk.sample_rate_hz * ENCODE_SLICE_MS // 1000)
    started = time.monotonic()
    utterance_encoder.feed(chunk.pcm[:step])
    return time.monotonic() - started


def leading_quiet_ms(chunk: AudioChunk) -> float:
    """Audio before the first 20 ms window louder than the client's 'audible' threshold."""
    window = max(1, chunk.sample_rate_hz * 20 // 1000)
    pcm = chunk.pcm.astype(np.float64)
    for start in range(0, pcm.size, window):
        piece = pcm[start : start + window]
        if float(np.sqrt(np.mean(piece**2))) > AUDIBLE_RMS:
            return 1000 * start / chunk.sample_rate_hz
    return 1000 * pcm.size / chunk.sample_rate_hz


# -- measurements ------------------------------------------------------------------


@dataclass
class Row:
    """One measured sentence; durations in milliseconds (None: not observed)."""

    index: int
    text: str
    first_piece_chars: int
    standalone_ms: float
    encode_alone_ms: float
    leading_quiet_ms: float | None
    server_ms: float | None
    datachannel_ms: float | None
    dispatch_ms: float | None
    engine_ms: float | None
    encode_ms: float | None
    tick_ms: float | None
    sender_ms: float | None
    client_event_ms: float | None
    client_frame_ms: float | None
    client_audible_ms: float | None
    audio_ms: float | None

    @property
    def overhead_ms(self) -> float | None:
        return None if self.server_ms is None else self.server_ms - self.standalone_ms

    @property
    def pipeline_ms(self) -> float | None:
        """Server time not spent in the engine's own first chunk, from the same synthesis."""
        if self.server_ms is None or self.engine_ms is None:
            return None
        return self.server_ms - self.engine_ms


def _ms(start: float | None, end: float | None) -> float | None:
    return None if start is None or end is None else (end - start) * 1000


@dataclass(frozen=True, slots=True)
class CpuSample:
    at: float
    system_s: float
    server_s: float
    client_s: float

    @staticmethod
    def take(client_pid: int) -> CpuSample:
        return CpuSample(
            time.monotonic(),
            system_busy_s(),
            process_cpu_s(os.getpid()),
            process_cpu_s(client_pid),
        )


@dataclass(frozen=True, slots=True)
class CpuUse:
    """Average cores kept busy during the measured phase, and by whom."""

    cores: int
    server: float
    client: float
    others: float

    @staticmethod
    def between(start: CpuSample, end: CpuSample) -> CpuUse:
        wall = max(1e-9, end.at - start.at)
        server = (end.server_s - start.server_s) / wall
        client = (end.client_s - start.client_s) / wall
        total = (end.system_s - start.system_s) / wall
        return CpuUse(os.cpu_count() or 1, server, client, max(0.0, total - server - client))


@dataclass(frozen=True, slots=True)
class LateFrames:
    """Frames later than a threshold, split by what was running when they went out."""

    threshold_ms: float
    activity: list[tuple[str, float, int]]
    """(activity, share of the measured time, late frames sent during it)."""
    excluded: str | None
    remaining_lateness_s: np.ndarray
    """Lateness of the frames sent outside the ``excluded`` activity's windows."""


@dataclass
class RunResult:
    rows: list[Row]
    lateness_s: np.ndarray
    late: LateFrames
    frames_sent: int
    speech_frames: int
    underruns: int
    skipped_frames: int
    dropped_frames: int
    client: ClientSummary | None
    warm_up_standalone_ms: float
    warm_up_server_ms: float | None
    measured_s: float
    cpu: CpuUse | None = None


class Bench:
    """The server, the client process and the measurement loop."""

    def __init__(self, engine: Engine, sentences: Sequence[str]) -> None:
        self.engine = engine
        self.timed = TimedEngine(engine)
        self.sentences = sentences
        self.probes: list[SessionProbe] = []
        self.conn: Connection | None = None
        self.settings = Settings()
        self.encoder = StreamEncoder(self.settings.opus)
        self.standalone_runs: list[Standalone] = []

    async def _standalone(self, text: str) -> tuple[Standalone, float]:
        loop = asyncio.get_running_loop()
        run = await loop.run_in_executor(None, engine_first_chunk, self.engine, text)
        self.standalone_runs.append(run)
        encode_s = await loop.run_in_executor(None, encode_first_slice_s, self.encoder, run.chunk)
        return run, encode_s

    async def _request(self, message: tuple[Any, ...], expect: str) -> Any:
        assert self.conn is not None
        self.conn.send(message)
        reply = await recv_message(self.conn, REPLY_TIMEOUT_S)
        if reply[0] == "error":
            raise RuntimeError(f"client process failed: {reply[1]}")
        if reply[0] != expect:
            raise RuntimeError(f"client process answered {reply[0]!r}, expected {expect!r}")
        return reply[1]

    async def _one(self, index: int, text: str, standalone_first: bool) -> Row:
        if standalone_first:
            standalone, encode_s = await self._standalone(text)
        utterance_id = f"b{index}"
        calls_before = len(self.timed.calls)
        timing: ClientTiming = await self._request(("say", utterance_id, text), "said")
        if not standalone_first:
            standalone, encode_s = await self._standalone(text)
        if timing.error is not None:
            raise RuntimeError(f"sentence {index}: server answered {timing.error}")
        stamps = self.probes[-1].stamps[utterance_id]
        call = next((c for c in self.timed.calls[calls_before:] if c.text == text), None)
        done = stamps.utterance
        return Row(
            index=index,
            text=text,
            first_piece_chars=len(split_text(text)[0]),
            standalone_ms=standalone.first_chunk_s * 1000,
            encode_alone_ms=encode_s * 1000,
            leading_quiet_ms=leading_quiet_ms(call.chunk) if call and call.chunk else None,
            server_ms=_ms(stamps.received, stamps.first_sent),
            datachannel_ms=_ms(timing.say_sent, stamps.received),
            dispatch_ms=_ms(stamps.received, call.started if call else None),
            engine_ms=_ms(call.started, call.first_chunk) if call else None,
            encode_ms=_ms(call.first_chunk if call else None, stamps.packets.first_ready),
            tick_ms=_ms(stamps.packets.first_ready, stamps.first_sent),
            sender_ms=_ms(stamps.first_sent, stamps.sender_took),
            client_event_ms=_ms(timing.say_sent, timing.started_event),
            client_frame_ms=_ms(timing.say_sent, timing.first_frame),
            client_audible_ms=_ms(timing.say_sent, timing.first_audible),
            audio_ms=done.source_ms or None,
        )

    async def run(self) -> RunResult:
        port = _free_port()
        settings = self.settings.with_overrides(
            host=LOOPBACK,
            port=port,
            ice_host_addresses=(LOOPBACK,),
            # every probe connects from this one address: no per-client bounds
            max_pending_sessions_per_client=0,
            max_sockets_per_client=0,
            max_syntheses_per_client=0,
            client_upload_bytes_per_s=0,
        )
        app = create_app(settings, engine=self.timed)
        runner = web.AppRunner(app, access_log=None, keepalive_timeout=KEEPALIVE_TIMEOUT_S)
        await runner.setup()
        registry = app[MEDIA_KEY].sessions
        create = registry.create

        async def create_probed(
            offer_sdp: str, voice_id: str | None = None, **access: Any
        ) -> tuple[VoiceSession, str]:
            session, answer = await create(offer_sdp, voice_id, **access)
            self.probes.append(SessionProbe(session))
            return session, answer

        registry.create = create_probed  # type: ignore[method-assign]
        site = web.TCPSite(runner, LOOPBACK, port)
        await site.start()

        ctx = multiprocessing.get_context("spawn")
        parent_conn, child_conn = ctx.Pipe()
        self.conn = parent_conn
        process = ctx.Process(
            target=client_process,
            args=(child_conn, f"http://{LOOPBACK}:{port}"),
            name="bench-whep-client",
        )
        process.start()
        child_conn.close()
        client_summary: ClientSummary | None = None
        try:
            reply = await recv_message(parent_conn, REPLY_TIMEOUT_S)
            if reply[0] != "connected":
                raise RuntimeError(f"client process failed to connect: {reply[1]}")
            session = self.probes[-1].session

            # Warm-up (not measured): first ONNX run, first encode, first tick of speech.
            warm_standalone, _ = await self._standalone(WARM_UP)
            await self._request(("say", "warm-up", WARM_UP), "said")
            warm_stamps = self.probes[-1].stamps["warm-up"]

            # Measure pacing over the whole measured phase, not only the last minute.
            stats = TimedPacingStats(window=LATENESS_WINDOW)
            calls_before = len(self.timed.calls)
            runs_before = len(self.standalone_runs)
            session.pacer.stats = stats
            underruns_before = session.speaker.underruns
            dropped_before = session.track.dropped_frames
            cpu_start = CpuSample.take(process.pid or 0)
            measured_from = time.monotonic()

            rows = [
                await self._one(i + 1, text, standalone_first=(i % 2 == 0))
                for i, text in enumerate(self.sentences)
            ]
            measured_to = time.monotonic()
            cpu_end = CpuSample.take(process.pid or 0)
            measured_s = measured_to - measured_from
            lateness = stats.lateness_s()
            late = classify_late_frames(
                lateness,
                np.array(stats.times),
                (measured_from, measured_to),
                {
                    "server synthesis (engine in the pipeline)": [
                        (c.started, c.finished or measured_to)
                        for c in self.timed.calls[calls_before:]
                    ],
                    BASELINE_ACTIVITY: [
                        (r.started, r.finished) for r in self.standalone_runs[runs_before:]
                    ],
                },
                exclude=BASELINE_ACTIVITY,
            )
            result = RunResult(
                rows=rows,
                lateness_s=lateness,
                late=late,
                frames_sent=stats.frames_sent,
                speech_frames=stats.speech_frames_sent,
                underruns=session.speaker.underruns - underruns_before,
                skipped_frames=stats.skipped_frames,
                dropped_frames=session.track.dropped_frames - dropped_before,
                client=None,
                warm_up_standalone_ms=warm_standalone.first_chunk_s * 1000,
                warm_up_server_ms=_ms(warm_stamps.received, warm_stamps.first_sent),
                measured_s=measured_s,
                cpu=CpuUse.between(cpu_start, cpu_end),
            )
            client_summary = await self._request(("close",), "closed")
            result.client = client_summary
            return result
        finally:
            process.join(10)
            if process.is_alive():
                process.terminate()
                process.join(5)
            parent_conn.close()
            await runner.cleanup()


LATE_THRESHOLD_MS: Final = 5.0
BASELINE_ACTIVITY: Final = "engine-alone baseline run"


def classify_late_frames(
    lateness_s: np.ndarray,
    times: np.ndarray,
    span: tuple[float, float],
    activities: dict[str, list[tuple[float, float]]],
    exclude: str | None = None,
) -> LateFrames:
    """Count frames later than LATE_THRESHOLD_MS by the activity running when they were sent.

    A late frame is counted under the first activity (in ``activities`` order) whose
    window holds it. Shares of time are sampled on a fine grid over ``span``.
    """
    late_times = times[lateness_s * 1000 > LATE_THRESHOLD_MS]
    outside = np.ones(times.size, dtype=bool)
    for start, end in activities.get(exclude, []) if exclude is not None else []:
        outside &= (times < start) | (times > end)
    grid = np.linspace(span[0], span[1], 20_000)
    counted = np.zeros(late_times.size, dtype=bool)
    busy = np.zeros(grid.size, dtype=bool)
    rows: list[tuple[str, float, int]] = []
    for name, windows in activities.items():
        inside = np.zeros(late_times.size, dtype=bool)
        covered = np.zeros(grid.size, dtype=bool)
        for start, end in windows:
            inside |= (late_times >= start) & (late_times <= end)
            covered |= (grid >= start) & (grid <= end)
        rows.append((name, float(covered.mean()), int(np.count_nonzero(inside & ~counted))))
        counted |= inside
        busy |= covered
    rows.append(("neither", 1.0 - float(busy.mean()), int(np.count_nonzero(~counted))))
    return LateFrames(LATE_THRESHOLD_MS, rows, exclude, lateness_s[outside])


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


# -- output -----------------------------------------------------------------------


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def print_machine() -> None:
    rows = machine_rows(("aiortc", "av", "piper-tts", "onnxruntime", "numpy"))
    rows.append(("libopus (our encoder)", libopus_version()))
    print_table("Machine", ("item", "value"), rows, left=(0, 1))


def _stats(values: Iterable[float | None]) -> tuple[str, str, str, str]:
    present = np.array([v for v in values if v is not None], dtype=np.float64)
    if not present.size:
        return ("-", "-", "-", "0")
    p50, p90 = np.percentile(present, [50, 90])
    return (_fmt(float(p50)), _fmt(float(p90)), _fmt(float(present.max())), str(present.size))


def print_latency(result: RunResult) -> None:
    rows = result.rows
    n = len(rows)

    def line(label: str, get: Callable[[Row], float | None]) -> tuple[str, ...]:
        return (label, *_stats(get(r) for r in rows))

    print_table(
        f"Time to first speech, server side ({n} sentences, ms)",
        ("measure", "p50", "p90", "max", "n"),
        [
            line("engine alone: call -> first chunk", lambda r: r.standalone_ms),
            line("server: text received -> first speech frame sent", lambda r: r.server_ms),
            line("overhead (server - engine alone)", lambda r: r.overhead_ms),
            line("server - engine's first chunk inside the pipeline", lambda r: r.pipeline_ms),
        ],
    )
    print(
        "Piper does not give the same audio twice for the same text, so 'engine alone' is another\n"
        "synthesis. The last row subtracts the first-chunk time of the synthesis actually played,\n"
        "so it is the steadier measure of what the pipeline adds.\n"
    )
    print_table(
        "Where the server time goes (ms, each stage on its own)",
        ("stage", "p50", "p90", "max", "n"),
        [
            line("dispatch: received -> engine starts (thread hop)", lambda r: r.dispatch_ms),
            line("engine in the pipeline: start -> first chunk", lambda r: r.engine_ms),
            line("encode: first chunk -> first packets queued", lambda r: r.encode_ms),
            line(
                "  of which resample+Opus of 1st slice, measured alone", lambda r: r.encode_alone_ms
            ),
            line("tick: packets queued -> pacer sends frame", lambda r: r.tick_ms),
            line("(after) pacer send -> aiortc RTP sender takes it", lambda r: r.sender_ms),
        ],
    )
    print_table(
        "Client side (separate process; includes the client's receive path, ms)",
        ("measure", "p50", "p90", "max", "n"),
        [
            line("data channel: say sent -> server received it", lambda r: r.datachannel_ms),
            line("say sent -> speech.started event received", lambda r: r.client_event_ms),
            line("say sent -> first speech frame decoded*", lambda r: r.client_frame_ms),
            line(
                f"say sent -> first audible frame (RMS>{AUDIBLE_RMS:g})*",
                lambda r: r.client_audible_ms,
            ),
            line("  (quiet lead-in of the first chunk played)", lambda r: r.leading_quiet_ms),
        ],
    )
    print(
        "* decoded frames include aiortc's jitter buffer, which holds "
        f"{JITTER_PREFETCH_FRAMES} frames ({JITTER_PREFETCH_FRAMES * 20} ms)\n"
        "  before releasing audio, plus its decoder thread; a browser's jitter buffer differs.\n"
        "  The first audible frame also waits out the voice's own quiet lead-in: the time before\n"
        f"  the first 20 ms window of the engine's first chunk with RMS > {AUDIBLE_RMS:g}.\n"
    )
    print_table(
        "Per sentence (ms; 'piece' = characters in the first piece split_text gives the engine)",
        (
            "#",
            "chars",
            "piece",
            "audio",
            "alone",
            "server",
            "ovh",
            "disp",
            "engine",
            "enc",
            "tick",
            "dc",
            "client",
            "audible",
            "lead",
            "text",
        ),
        [
            (
                str(r.index),
                str(len(r.text)),
                str(r.first_piece_chars),
                _fmt(r.audio_ms, 0),
                _fmt(r.standalone_ms),
                _fmt(r.server_ms),
                _fmt(r.overhead_ms),
                _fmt(r.dispatch_ms),
                _fmt(r.engine_ms),
                _fmt(r.encode_ms),
                _fmt(r.tick_ms),
                _fmt(r.datachannel_ms),
                _fmt(r.client_frame_ms),
                _fmt(r.client_audible_ms),
                _fmt(r.leading_quiet_ms, 0),
                r.text if len(r.text) <= 40 else r.text[:37] + "...",
            )
            for r in rows
        ],
        left=(0, 15),
    )
    print(
        "Columns: chars/piece = text length and first piece length; audio = speech duration;\n"
        "alone = engine-alone first chunk; server = text received -> first speech frame sent;\n"
        "ovh = server - alone; disp/engine/enc/tick = the stages above; dc = data channel;\n"
        "client/audible = say sent -> first speech / first audible frame decoded by the client;\n"
        "lead = quiet lead-in of the first chunk the server played (Piper varies run to run).\n"
    )
    print(
        f"Warm-up sentence (not in the tables): engine alone {result.warm_up_standalone_ms:.1f} ms,"
        f" server {_fmt(result.warm_up_server_ms)} ms.\n"
        "Engine-alone runs alternate before/after the server run of the same sentence.\n"
    )


def print_pacing(result: RunResult) -> None:
    lateness_ms = result.lateness_s * 1000
    if lateness_ms.size:
        p50, p90, p99, p999 = np.percentile(lateness_ms, [50, 90, 99, 99.9])
        peak = float(lateness_ms.max())
    else:
        p50 = p90 = p99 = p999 = peak = 0.0
    client = result.client
    remaining = result.late.remaining_lateness_s * 1000
    if remaining.size:
        q50, q90, q99, q999 = np.percentile(remaining, [50, 90, 99, 99.9])
        top = float(remaining.max())
    else:
        q50 = q90 = q99 = q999 = top = 0.0
    print_table(
        f"Pacing over the measured phase ({result.measured_s:.1f} s)",
        ("frame lateness (ms)", "all frames", "baseline runs left out"),
        [
            ("p50", f"{p50:.3f}", f"{q50:.3f}"),
            ("p90", f"{p90:.3f}", f"{q90:.3f}"),
            ("p99", f"{p99:.3f}", f"{q99:.3f}"),
            ("p99.9", f"{p999:.3f}", f"{q999:.3f}"),
            ("max", f"{peak:.3f}", f"{top:.3f}"),
            ("frames", str(lateness_ms.size), str(remaining.size)),
        ],
    )
    print(
        "'baseline runs left out': frames sent while this script ran the engine alone for the\n"
        "baseline column (load a real server would not have) are dropped from that column.\n"
    )
    print_table(
        "Counters over the measured phase",
        ("counter", "value"),
        [
            ("frames sent", str(result.frames_sent)),
            ("speech frames sent", str(result.speech_frames)),
            ("underruns (speaker)", str(result.underruns)),
            ("skipped frames (pacer)", str(result.skipped_frames)),
            ("dropped frames (track queue)", str(result.dropped_frames)),
            (
                "frames decoded by client (whole session)",
                str(client.frames_received if client else "-"),
            ),
            ("pts gaps seen by the client", str(client.pts_gaps if client else "-")),
        ],
    )
    total = max(1, lateness_ms.size)
    hist_rows = []
    for low, high in LATENESS_BUCKETS_MS:
        if high is None:
            count = int(np.count_nonzero(lateness_ms >= low))
            label = f">={low} ms"
        elif low == 0:
            count = int(np.count_nonzero(lateness_ms < high))
            label = f"<{high} ms"
        else:
            count = int(np.count_nonzero((lateness_ms >= low) & (lateness_ms < high)))
            label = f"{low}-{high} ms"
        share = count / total
        bar = "#" * round(share * 50) or ("." if count else "")
        hist_rows.append((label, str(count), f"{share * 100:.2f}%", bar))
    print_table(
        "Frame lateness histogram (all frames)",
        ("lateness", "frames", "share", ""),
        hist_rows,
        left=(0, 3),
    )
    cpu = result.cpu
    if cpu is not None:
        print_table(
            f"CPU during the measured phase (average cores busy, of {cpu.cores})",
            ("who", "cores"),
            [
                ("server process (loop, synthesis, Opus, aiortc)", f"{cpu.server:.2f}"),
                ("client process (aiortc receive + Opus decode)", f"{cpu.client:.2f}"),
                ("everything else on the machine", f"{cpu.others:.2f}"),
            ],
        )
    late = result.late
    print_table(
        f"Frames later than {late.threshold_ms:g} ms, by what was running when they were sent",
        ("activity", "share of time", "late frames"),
        [(name, f"{share * 100:.1f}%", str(count)) for name, share, count in late.activity],
    )
    print(
        "Lateness = how long after its 20 ms deadline the pacer sent each frame (event-loop\n"
        "wake-up error plus whatever else held the loop). The server (event loop, synthesis and\n"
        "Opus worker threads, ONNX Runtime's own threads) and the client process share this\n"
        "machine's cores, so client work shows up here too.\n"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.latency",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--sentences",
        type=int,
        default=None,
        help=f"how many sentences to measure (default {DEFAULT_SENTENCES}, at most {len(SENTENCES)}"
        " before the list repeats)",
    )
    parser.add_argument(
        "--quick", action="store_true", help=f"measure {QUICK_SENTENCES} sentences only"
    )
    args = parser.parse_args(argv)
    if args.sentences is not None:
        count = args.sentences
    else:
        count = QUICK_SENTENCES if args.quick else DEFAULT_SENTENCES
    if count < 1:
        parser.error("--sentences must be at least 1")
    sentences = [SENTENCES[i % len(SENTENCES)] for i in range(count)]

    logging.basicConfig(level=logging.WARNING)
    print_machine()
    print(
        "Setup: server app in this process (aiohttp + aiortc on 127.0.0.1, real Piper voice);\n"
        f"WHEP client (aiortc) in a separate process; {count} sentences, one at a time.\n"
    )
    sys.stdout.flush()
    loaded = time.monotonic()
    engine = create_engine("piper")
    print(f"Piper voice loaded in {time.monotonic() - loaded:.2f} s.\n")
    try:
        result = asyncio.run(Bench(engine, sentences).run())
    finally:
        engine.close()
    print_latency(result)
    print_pacing(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
