"""Barge-in from outside: how fast a caller's voice stops the room, and what hearing costs.

Run from the repository root::

    python -m bench.barge_in [--quick] [--runs N]

``voice-media-server`` in its own process (``VMS_TOKEN_SECRET``); one room with a bot (a
plain WebSocket that listens: ``input.listen``), a listener (aiortc, this process; its
RTP packets are timed as they arrive and decoded afterwards) and a caller whose
microphone plays silence, then, at a random point of the bot's long sentence, a Piper
sentence. The onset is the first mic frame with speech energy, timed when the track
handed it to aiortc. Per run and mode (``pause``, ``cancel``: the bot's ``barge_in``):
onset -> ``input.speech_started`` at the bot (and the server's ``server_ms``), onset and
the server's decisions -> the room's audio stops at the listener, and for every caller
frame the bot gets, its arrival minus the time its mic frame was handed to aiortc.
Then the server's CPU over a steady window with K callers talking (barge-in off, the
bot listening) beside K 1:1 sessions speaking (the baseline). Nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fractions
import json
import logging
import random
import struct
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import aiohttp
import av
import numpy as np
import numpy.typing as npt
from aiortc import RTCConfiguration, RTCPeerConnection
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from bench import _report as report
from media_server.rooms.tokens import Role, TokenSigner
from media_server.rtc.ice import restrict_host_addresses
from synthesis import create_engine
from tests.media_server.listening.speech import spoken
from tests.whep_client import WhepClient

SECRET: Final = "bench-barge-in-secret-0123456789abcdef"
ROOM: Final = "bench"
MIC_RATE_HZ: Final = 48_000
MIC_FRAME: Final = 960
FRAME_S: Final = 0.020
INPUT_FRAME_SAMPLES: Final = 320
"""A caller frame at the bot: 20 ms at 16 kHz; position // 320 is the mic frame's index."""
HEADER: Final = struct.Struct("<BHQ")
"""A caller frame's header on the bot's socket: version, participant index, position."""
RTP_WRAP: Final = 1 << 32
LOUD_RMS: Final = 300.0
"""A 20 ms frame louder than this (int16 RMS, about -40 dBFS) carries speech."""
CALLER_TEXT: Final = "Sorry to interrupt, but can I ask something about my order?"
ROOM_TEXT: Final = (
    "After the storm passed, the whole neighbourhood came out to clear the fallen branches "
    "from the road. By evening the street looked almost normal again, and the children were "
    "back outside, playing in the puddles until it was dark."
)
ONSET_AFTER_S: Final = (0.8, 2.5)
"""The caller starts this long (uniform, seeded) after the room's ``speech.started``."""
EVENT_WAIT_S: Final = 20.0
SETTLE_S: Final = 0.6
"""After the cancel: the listener's last packets and the VAD's stop arrive."""
PAUSE_TARGET_MS: Final = 100.0
CANCEL_TARGET_MS: Final = 150.0
DELIVERY_TARGET_MS: Final = 60.0
WARM_S: Final = 1.5
"""Before a CPU window: the callers' streams and the sessions' speech are under way."""


class TimedMicrophone(MediaStreamTrack):
    """A caller's microphone in real time: silence until :meth:`play`, then the clip from
    the next frame on (``loop``: over and over). ``handed[i]`` is when frame ``i`` went to
    aiortc (monotonic s)."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self.handed: list[float] = []
        self._clip: npt.NDArray[np.int16] | None = None
        self._clip_frame: int | None = None
        self._looping = False
        self._start: float | None = None

    def play(self, clip: npt.NDArray[np.int16], loop: bool = False) -> None:
        self._clip, self._clip_frame, self._looping = clip, None, loop

    def clip_start(self) -> int | None:
        """The index of the clip's first frame, once it was handed."""
        return self._clip_frame

    async def recv(self) -> av.AudioFrame:
        index = len(self.handed)
        if self._start is None:
            self._start = time.monotonic()
        else:
            await asyncio.sleep(max(0.0, self._start + index * FRAME_S - time.monotonic()))
        chunk = np.zeros(MIC_FRAME, np.int16)
        if self._clip is not None:
            if self._clip_frame is None:
                self._clip_frame = index
            at = (index - self._clip_frame) * MIC_FRAME
            if self._looping:
                at %= self._clip.size - self._clip.size % MIC_FRAME
            piece = self._clip[at : at + MIC_FRAME]
            chunk[: piece.size] = piece
        frame = av.AudioFrame.from_ndarray(chunk.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = MIC_RATE_HZ
        frame.pts = index * MIC_FRAME
        frame.time_base = fractions.Fraction(1, MIC_RATE_HZ)
        self.handed.append(time.monotonic())
        return frame

    def late_ms(self, index: int) -> float:
        """How long after its real-time slot frame ``index`` was handed (a stalled loop
        hands the frames it owes in a burst, which the receivers' buffers pass on faster)."""
        start = self._start if self._start is not None else self.handed[0]
        return (self.handed[index] - start - index * FRAME_S) * 1000


def install_packet_clock() -> None:
    """Time every RTP packet this process's receivers get, as it arrives (this process's
    own aiortc, never the server): ``receiver.bench_packets`` holds (arrival, timestamp,
    payload)."""
    import aiortc.rtcrtpreceiver as receiver_module

    receiver_class = receiver_module.RTCRtpReceiver
    handle = receiver_class._handle_rtp_packet

    async def handle_timed(self: Any, packet: Any, arrival_time_ms: int) -> None:
        packets = self.__dict__.setdefault("bench_packets", [])
        packets.append((time.monotonic(), packet.timestamp, bytes(packet.payload)))
        await handle(self, packet, arrival_time_ms)

    receiver_class._handle_rtp_packet = handle_timed  # type: ignore[method-assign]


@dataclass(frozen=True)
class Packet:
    arrival: float
    position: int
    """The room's stream position (48 kHz samples) of the packet's first sample."""
    rms: float


def listener_packets(listener: WhepClient, joined_ts: int) -> list[Packet]:
    """The listener's packets in arrival order, decoded, on the room's stream positions
    (``room.joined``'s ``stream_ts`` is its first packet's)."""
    from aiortc.codecs.opus import OpusDecoder
    from aiortc.jitterbuffer import JitterFrame

    raw = listener.pc.getReceivers()[0].__dict__.get("bench_packets", [])
    if not raw:
        return []
    decoder, first_ts, out = OpusDecoder(), raw[0][1], []
    for arrival, timestamp, payload in raw:
        frames = decoder.decode(JitterFrame(payload, timestamp))
        pcm = np.concatenate(
            [f.to_ndarray().ravel() for f in frames if isinstance(f, av.AudioFrame)]
        ).astype(np.float64)
        rms = float(np.sqrt(np.mean(pcm**2))) if pcm.size else 0.0
        out.append(Packet(arrival, joined_ts + (timestamp - first_ts) % RTP_WRAP, rms))
    return out


@dataclass
class Bot:
    """The room's bot on a plain WebSocket: every message kept with its arrival time."""

    ws: aiohttp.ClientWebSocketResponse
    events: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    frames: list[tuple[float, int, int, float]] = field(default_factory=list)
    """(arrival, participant index, position, RMS) of each caller frame."""
    queue: asyncio.Queue[tuple[float, dict[str, Any]]] = field(default_factory=asyncio.Queue)

    async def read(self) -> None:
        async for message in self.ws:
            at = time.monotonic()
            if message.type == aiohttp.WSMsgType.BINARY:
                _version, index, position = HEADER.unpack_from(message.data)
                pcm = np.frombuffer(message.data, np.int16, offset=HEADER.size)
                rms = float(np.sqrt(np.mean(pcm.astype(np.float64) ** 2))) if pcm.size else 0.0
                self.frames.append((at, index, position, rms))
            elif message.type == aiohttp.WSMsgType.TEXT:
                event = json.loads(message.data)
                self.events.append((at, event))
                self.queue.put_nowait((at, event))

    async def send(self, message: dict[str, Any]) -> None:
        await self.ws.send_json(message)

    async def next(self, kind: str, **match: Any) -> tuple[float, dict[str, Any]]:
        async with asyncio.timeout(EVENT_WAIT_S):
            while True:
                at, event = await self.queue.get()
                if event["type"] == "error":
                    raise RuntimeError(f"the bot got an error: {event}")
                if event["type"] == kind and all(event.get(k) == v for k, v in match.items()):
                    return at, event

    def drain(self) -> None:
        while not self.queue.empty():
            self.queue.get_nowait()


@dataclass
class Run:
    mode: str
    onset: float
    """When the mic frame where the caller's speech starts was handed to aiortc (s)."""
    started_at: float | None = None
    started_server_ms: float | None = None
    paused_at: float | None = None
    paused_end_ts: int | None = None
    cancelled_at: float | None = None
    cancelled_end_ts: int | None = None
    stop_loud: float | None = None
    """Arrival at the listener of the room's last loud packet."""
    stop_last: float | None = None
    """Arrival at the listener of the last frame sent before the cut (the event's end_ts)."""
    vad_offset_ms: float | None = None
    """The VAD's start position minus the onset's (16 kHz positions, ms)."""
    mic_late_ms: float = 0.0
    """How late the onset's mic frame was handed, after its real-time slot."""
    heard_offset_ms: float | None = None
    """The first loud frame the bot got minus the onset's position (ms): 0 when the bot's
    positions line up with the mic's frames, as the delivery delays assume."""


async def member(
    http: aiohttp.ClientSession, base: str, signer: TokenSigner, role: Role, name: str,
    mic: MediaStreamTrack | None = None,
) -> WhepClient:  # fmt: skip
    client = WhepClient(base)
    token = signer.issue(ROOM, role, name)
    await client.connect(
        http, path=f"/rooms/{ROOM}/whep", headers={"Authorization": f"Bearer {token}"},
        microphone=mic,
    )  # fmt: skip
    return client


async def one_run(
    bot: Bot, mic: TimedMicrophone, speech: npt.NDArray[np.int16], onset_frames: int,
    mode: str, n: int, rng: random.Random,
) -> Run:  # fmt: skip
    bot.drain()
    await bot.send({"type": "say", "text": ROOM_TEXT, "id": f"{mode}-{n}"})
    await bot.next("speech.started", id=f"{mode}-{n}")
    await asyncio.sleep(rng.uniform(*ONSET_AFTER_S))
    mic.play(speech)
    cancelled_at, cancelled = await bot.next("speech.cancelled", id=f"{mode}-{n}")
    await bot.next("input.speech_stopped")
    await asyncio.sleep(SETTLE_S)
    start = mic.clip_start()
    assert start is not None
    run = Run(mode, mic.handed[start + onset_frames], cancelled_at=cancelled_at)
    run.cancelled_end_ts = cancelled.get("end_ts")
    run.mic_late_ms = mic.late_ms(start + onset_frames)
    onset_position = (start + onset_frames) * INPUT_FRAME_SAMPLES
    heard = [p for _, _, p, rms in bot.frames if rms > LOUD_RMS and p >= onset_position - 16_000]
    run.heard_offset_ms = (heard[0] - onset_position) / 16 if heard else None
    for at, event in bot.events:
        if at < run.onset - 1.0:
            continue
        if event["type"] == "input.speech_started" and run.started_at is None:
            run.started_at, run.started_server_ms = at, float(event["server_ms"])
            run.vad_offset_ms = (int(event["position"]) - onset_position) / 16
        if event["type"] == "speech.paused" and event.get("id") == f"{mode}-{n}":
            run.paused_at, run.paused_end_ts = at, event.get("end_ts")
    return run


def measure_stops(runs: list[Run], packets: list[Packet]) -> None:
    """Where each run's audio stopped at the listener: its last loud packet (until just
    after the cancel, before the next say), and the arrival of the last frame the server
    sent before the cut."""
    for run in runs:
        until = (run.cancelled_at or run.onset) + SETTLE_S / 2  # before the next say
        window = [p for p in packets if run.onset - 3.0 <= p.arrival < until]
        loud = [p for p in window if p.rms > LOUD_RMS]
        run.stop_loud = loud[-1].arrival if loud else None
        end_ts = run.paused_end_ts if run.mode == "pause" else run.cancelled_end_ts
        if end_ts is not None:
            last = [p for p in window if p.position == end_ts - MIC_FRAME]
            run.stop_last = last[0].arrival if last else None


def ms(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else (b - a) * 1000


def row(label: str, values: Sequence[float | None], target: str) -> tuple[str, ...]:
    present = [v for v in values if v is not None]
    if not present:
        return (label, "-", "-", "-", "-", "0", target)
    p50, p95 = np.percentile(present, [50, 95])
    return (
        label, f"{min(present):.1f}", f"{p50:.1f}", f"{p95:.1f}", f"{max(present):.1f}",
        str(len(present)), target,
    )  # fmt: skip


async def barge_in_runs(
    http: aiohttp.ClientSession, base: str, signer: TokenSigner, bot: Bot,
    speech: npt.NDArray[np.int16], onset_frames: int, runs: int,
) -> tuple[list[Run], list[float]]:  # fmt: skip
    """Every run of both modes, and the caller frames' delivery delays (ms)."""
    listener = await member(http, base, signer, Role.LISTENER, "listener")
    mic = TimedMicrophone()
    caller = await member(http, base, signer, Role.CALLER, "caller", mic)
    joined = await listener.next_event("room.joined")
    rng, done = random.Random(19), []
    frames_from = len(bot.frames)
    try:
        await bot.send({"type": "say", "text": "Warming up.", "id": "warm-up"})
        await bot.next("speech.done", id="warm-up")
        for mode in ("pause", "cancel"):
            await bot.send({"type": "barge_in", "mode": mode})
            await bot.next("barge_in")
            for n in range(runs):
                done.append(await one_run(bot, mic, speech, onset_frames, mode, n, rng))
    finally:
        await caller.close(http)
        await listener.close(http)
    measure_stops(done, listener_packets(listener, int(joined["stream_ts"])))
    delays = [
        (at - mic.handed[position // INPUT_FRAME_SAMPLES]) * 1000
        for at, _index, position, _rms in bot.frames[frames_from:]
        if position // INPUT_FRAME_SAMPLES < len(mic.handed)
    ]
    return done, delays


async def cpu_window(server_pid: int, window_s: float) -> float:
    """The server's cores busy over the window (its CPU seconds per second)."""
    await asyncio.sleep(WARM_S)
    before, t0 = report.process_cpu_s(server_pid), time.monotonic()
    await asyncio.sleep(window_s)
    return (report.process_cpu_s(server_pid) - before) / (time.monotonic() - t0)


async def talking(
    http: aiohttp.ClientSession, base: str, signer: TokenSigner, pid: int, k: int,
    speech: npt.NDArray[np.int16], window_s: float,
) -> float:  # fmt: skip
    mics = [TimedMicrophone() for _ in range(k)]
    callers = [
        await member(http, base, signer, Role.CALLER, f"talker-{i}", mic)
        for i, mic in enumerate(mics)
    ]
    for i, mic in enumerate(mics):
        mic.play(np.roll(speech, i * speech.size // max(k, 1)), loop=True)
    try:
        return await cpu_window(pid, window_s)
    finally:
        for caller in callers:
            await caller.close(http)


async def speaking(
    http: aiohttp.ClientSession, base: str, pid: int, k: int, window_s: float
) -> float:
    """K 1:1 sessions that keep speaking: the baseline."""
    sessions = [WhepClient(base) for _ in range(k)]

    async def keep_saying(session: WhepClient) -> None:
        while True:
            session.say(ROOM_TEXT)
            await session.next_event("speech.done", wait_s=60)

    for session in sessions:
        await session.connect(http, headers=report.OPERATOR)
    tasks = [asyncio.create_task(keep_saying(s)) for s in sessions]
    try:
        return await cpu_window(pid, window_s)
    finally:
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for session in sessions:
            await session.close(http)


async def aiortc_baseline(seconds: float) -> list[float]:
    """The baseline: the same microphone into a plain aiortc receiver in this process (no
    server): each frame's ``track.recv()`` minus when its mic frame was handed (ms)."""
    config = RTCConfiguration(iceServers=[])
    sender, receiver = RTCPeerConnection(config), RTCPeerConnection(config)
    mic = TimedMicrophone()
    mic.play((np.sin(np.arange(MIC_RATE_HZ) / 10) * 8000).astype(np.int16), loop=True)
    sender.addTrack(mic)
    got: list[tuple[float, int]] = []
    readers: list[asyncio.Task[None]] = []

    async def read(track: MediaStreamTrack) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                if frame.pts is not None:
                    got.append((time.monotonic(), int(frame.pts)))

    receiver.on("track", lambda track: readers.append(asyncio.create_task(read(track))))
    try:
        await sender.setLocalDescription(await sender.createOffer())
        await receiver.setRemoteDescription(sender.localDescription)
        await receiver.setLocalDescription(await receiver.createAnswer())
        await sender.setRemoteDescription(receiver.localDescription)
        await asyncio.sleep(seconds)
    finally:
        await sender.close()
        await receiver.close()
        for task in readers:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    if not got:
        return []
    first = got[0][1]  # aiortc's receiver counts pts from its first packet: mic frame 0
    return [
        (at - mic.handed[(pts - first) // MIC_FRAME]) * 1000
        for at, pts in got
        if (pts - first) // MIC_FRAME < len(mic.handed)
    ]


async def measure(args: argparse.Namespace, speech: npt.NDArray[np.int16], onset: int) -> None:
    baseline = await aiortc_baseline(args.window)
    signer = TokenSigner(SECRET.encode())
    server = report.ServerProcess({"VMS_TOKEN_SECRET": SECRET})
    try:
        async with aiohttp.ClientSession() as http:
            await server.ready(http)
            token = signer.issue(ROOM, Role.BOT, "bot")
            async with http.ws_connect(f"{server.base}/rooms/{ROOM}/bot?token={token}") as ws:
                bot = Bot(ws)
                reader = asyncio.create_task(bot.read())
                try:
                    await bot.next("ready")
                    await bot.send({"type": "input.listen", "audio": True})
                    await bot.next("input.listening")
                    runs, delays = await barge_in_runs(
                        http, server.base, signer, bot, speech, onset, args.runs
                    )
                    print_runs(runs, delays, baseline)
                    await bot.send({"type": "barge_in", "mode": "off"})
                    await bot.next("barge_in")
                    idle = await cpu_window(server.process.pid, args.window)
                    rows = []
                    for k in args.callers:
                        heard = await talking(
                            http, server.base, signer, server.process.pid, k, speech, args.window
                        )
                        said = await speaking(http, server.base, server.process.pid, k, args.window)
                        rows.append((k, heard, said))
                    print_cpu(idle, rows, args.window, len(bot.frames))
                finally:
                    reader.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await reader
    finally:
        server.stop()


def _decided(r: Run) -> float | None:
    return None if r.started_server_ms is None else r.started_server_ms / 1000


def _onset(r: Run) -> float:
    return r.onset


def _field(name: str) -> Callable[[Run], float | None]:
    return lambda r: getattr(r, name)


PAUSE_EACH: Final = f"<= {PAUSE_TARGET_MS:.0f} (each)"
CANCEL_P50: Final = f"p50 <= {CANCEL_TARGET_MS:.0f}"
SPANS: Final = (
    ("onset -> input.speech_started at the bot", "", _onset, _field("started_at"), ""),
    ("onset -> the server's VAD decision (server_ms)", "", _onset, _decided, ""),
    ("pause: onset -> last frame at the listener", "pause", _onset, _field("stop_last"), ""),
    ("pause: onset -> last loud frame at the listener", "pause", _onset, _field("stop_loud"), ""),
    ("pause: VAD decision -> last frame", "pause", _decided, _field("stop_last"), PAUSE_EACH),
    ("pause: VAD decision -> last loud frame", "pause", _decided, _field("stop_loud"), PAUSE_EACH),
    ("cancel: onset -> last frame at the listener", "cancel", _onset, _field("stop_last"), ""),
    ("cancel: onset -> speech.cancelled at the bot", "cancel", _onset, _field("cancelled_at"), ""),
    ("cancel: speech.cancelled -> last frame", "cancel", _field("cancelled_at"),
     _field("stop_last"), CANCEL_P50),
    ("cancel: speech.cancelled -> last loud frame", "cancel", _field("cancelled_at"),
     _field("stop_loud"), CANCEL_P50),
)  # fmt: skip
"""(label, mode or both, from, to, target) of the summary."""


def print_runs(runs: list[Run], delays: list[float], baseline: list[float]) -> None:
    rows = [
        (r.mode, *(report.fmt(ms(r.onset, get(r)), 0) for get in (
            _field("started_at"), _decided, _field("paused_at"), _field("cancelled_at"),
            _field("stop_last"), _field("stop_loud"))),
         report.fmt(r.vad_offset_ms, 0), report.fmt(r.heard_offset_ms, 0),
         report.fmt(r.mic_late_ms, 0))
        for r in runs
    ]  # fmt: skip
    report.print_table(
        "Each run: ms from the caller's speech onset (its mic frame handed to aiortc) to",
        ("mode", "speech_started at bot", "VAD (server_ms)", "paused", "cancelled",
         "last frame", "last loud", "VAD pos", "bot's 1st loud pos",
         "mic late"),
        rows,
    )  # fmt: skip
    summary = [
        row(label, [ms(start(r), end(r)) for r in runs if mode in ("", r.mode)], target)
        for label, mode, start, end, target in SPANS
    ]
    summary.append(
        row(
            "caller frame: handed to aiortc -> at the bot",
            delays,
            f"p95 <= {DELIVERY_TARGET_MS:.0f}",
        )
    )
    summary.append(row("  baseline: plain aiortc peer -> peer here, recv()", baseline, ""))
    modes = " and ".join(f"{sum(r.mode == m for r in runs)} {m}" for m in ("pause", "cancel"))
    report.print_table(
        f"Barge-in, {modes} runs (ms)", ("", "min", "p50", "p95", "max", "n", "target"), summary
    )
    print(
        "last frame: the arrival at the listener of the room's packet just before the event's\n"
        f"end_ts (the server's cut); last loud: its last packet above RMS {LOUD_RMS:g} (a word\n"
        "gap before the cut makes it earlier). Arrivals: RTP packets at this process's\n"
        "receiver, decoded afterwards. VAD pos / bot's 1st loud pos: the speech_started\n"
        "event's position and the first loud frame the bot got, minus the onset's (ms): the\n"
        "delivery delays take position // 320 as the mic frame's index. A mic frame is handed\n"
        "whole at its start time: a microphone hands it once captured, 20 ms later. mic late:\n"
        "how long after its real-time slot the onset's frame was handed (this process\n"
        "stalled): the frames it owed then go out in a burst and the receivers' buffers\n"
        "(counted in packets) pass them on sooner, so that run's times are shorter.\n"
    )


def print_cpu(
    idle: float, rows: list[tuple[int, float, float]], window_s: float, frames: int
) -> None:
    report.print_table(
        f"Server CPU, cores busy over {window_s:g} s windows",
        ("K", "K callers talking", "per caller", "K 1:1 sessions speaking", "per session"),
        [(str(k), f"{heard:.3f}", f"{(heard - idle) / k * 1000:.1f} ms/s",
          f"{said:.3f}", f"{(said - idle) / k * 1000:.1f} ms/s") for k, heard, said in rows],
    )  # fmt: skip
    print(
        f"Idle (the room, its listener and the bot, nobody talking): {idle:.3f} cores; per\n"
        "caller or session: (cores - idle) / K. Callers: barge-in off, the bot listening (it\n"
        f"got {frames} frames in all). The 1:1 sessions (the baseline) say a long text over\n"
        "and over: their cost includes Piper's synthesis.\n"
    )


def onset_frame(speech: npt.NDArray[np.int16]) -> int:
    """The first 20 ms mic frame of the sentence with speech energy."""
    frames = speech[: speech.size - speech.size % MIC_FRAME].reshape(-1, MIC_FRAME)
    loud = np.sqrt(np.mean(frames.astype(np.float64) ** 2, axis=1)) > LOUD_RMS
    return int(np.argmax(loud))


def main(argv: Sequence[str] | None = None) -> int:
    parser = report.command_line("bench.barge_in", __doc__)
    parser.add_argument("--quick", action="store_true", help="2 runs per mode, K=1,2, 2 s windows")
    parser.add_argument("--runs", type=report.positive(int), help="runs per mode (10; quick 2)")
    args = parser.parse_args(argv)
    args.runs = args.runs or (2 if args.quick else 10)
    args.callers = (1, 2) if args.quick else (1, 2, 4)
    args.window = 2.0 if args.quick else 10.0
    logging.basicConfig(level=logging.WARNING)
    report.print_machine(("aiortc", "av", "piper-tts", "onnxruntime"))
    engine = create_engine("piper")
    try:
        speech = spoken(engine, MIC_RATE_HZ, CALLER_TEXT)
    finally:
        engine.close()
    onset = onset_frame(speech)
    print(f"caller sentence: {speech.size / MIC_RATE_HZ:.2f} s, speech from frame {onset}\n")
    restrict_host_addresses(("127.0.0.1",))
    install_packet_clock()
    asyncio.run(measure(args, speech, onset))
    return 0


if __name__ == "__main__":
    sys.exit(main())
