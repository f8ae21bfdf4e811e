"""The fan-out benchmark's listeners: many aiortc WHEP peers in one process, pinned to one core.

Started by ``bench.fanout`` (multiprocessing ``spawn``). Commands from the parent:

* ``("join", total)``: open listeners until ``total`` are connected
  -> ``("joined", connected, failed, seconds)``;
* ``("flowing", timeout_s)``: wait until every listener has had a packet in the
  last :data:`FLOWING_S` -> ``("flowing", receiving, total)``;
* ``("mark",)`` / ``("collect",)``: one measuring window -> ``("stats", ClientStats)``;
* ``("close",)``: close every peer -> ``("closed",)``.

In the naive mode one more 1:1 session, the :class:`FirstSpeechProbe`, joins with
the first listeners and keeps asking for speech: it times each utterance from the
``say`` to its first speech packet, which is what a user waits for on a loaded server.

To keep the listeners cheap, nothing is decoded: aiortc's decoder thread is
replaced by one that exits at once, and a hook on ``RTCRtpReceiver._handle_rtp_packet``
counts RTP timestamps and arrival times before aiortc's own receive path
(RTCP statistics, NACK, jitter buffer) runs as usual. So each listener still
sends its RTCP receiver reports to the server.

In the naive mode every listener is a 1:1 ``POST /whep`` session that keeps its
own speaker busy: two ``say`` at once, then one more on each ``speech.started``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, Final

import aiohttp

from bench._client import recv_message
from media_server.audio.frames import FRAME_SAMPLES, SAMPLE_RATE_HZ
from media_server.rooms.tokens import Role, TokenSigner
from media_server.rtc.ice import restrict_host_addresses
from tests.whep_client import WhepClient

CLIENT_CORE: Final = 1
LOOPBACK: Final = ("127.0.0.1",)
JOIN_CONCURRENCY: Final = 8
JOIN_TIMEOUT_S: Final = 20.0
CLOSE_TIMEOUT_S: Final = 20.0
FLOWING_S: Final = 0.5
GAP_S: Final = 0.060
"""An arrival gap longer than this counts as a client-side gap (3 frames' worth)."""
COMMAND_WAIT_S: Final = 900.0
RTP_WRAP: Final = 1 << 32
DRIFT_BLOCK: Final = 250
"""Packets (5 s) per block whose least arrival offset measures drift."""
PROBE_TEXT: Final = "One moment, please."
"""What the probe says: short, as a voice agent's first words often are (with the real
voice, a longer text would make the probe a synthesis load of its own)."""
PROBE_PAUSE_S: Final = 1.0
"""The probe's pause after each cancel: no packet of the last utterance is in flight,
and with the real voice the probe adds little synthesis."""
PROBE_WAIT_S: Final = 10.0


class Counters:
    """RTP timestamps and arrival times of one listener's packets."""

    __slots__ = (
        "packets",
        "missing",
        "gaps",
        "max_gap_s",
        "last_ts",
        "last_at",
        "total",
        "first_at",
        "media_s",
        "block_min",
        "block_packets",
        "first_block_min",
        "last_block_min",
    )

    def __init__(self) -> None:
        self.total = 0
        self.last_ts: int | None = None
        self.last_at = 0.0
        self.reset()

    def reset(self) -> None:
        self.packets = 0
        self.missing = 0
        self.gaps = 0
        self.max_gap_s = 0.0
        self.first_at: float | None = None
        self.media_s = 0.0
        """RTP time advanced since the first packet of the window (unwrapped)."""
        self.block_min = float("inf")
        self.block_packets = 0
        self.first_block_min: float | None = None
        self.last_block_min: float | None = None

    def drift_s(self) -> float:
        """How far RTP time ran ahead of the arrival clock over the window (+ = media fast).

        Each packet's offset (arrival time minus RTP time, both since the window's
        first packet) holds the clock difference plus that packet's queueing and
        scheduling delay. The least offset in a block of :data:`DRIFT_BLOCK`
        packets strips most of the delay, so the drift is the first block's least
        offset minus the last complete block's.
        """
        if self.first_block_min is None or self.last_block_min is None:
            return 0.0
        return self.first_block_min - self.last_block_min

    def on_packet(self, timestamp: int, now: float) -> None:
        if self.last_ts is not None:
            step = (timestamp - self.last_ts) % RTP_WRAP
            forward = step < RTP_WRAP // 2
            if forward and self.first_at is not None:  # RTP time within the window
                self.media_s += step / SAMPLE_RATE_HZ
            if forward and step > FRAME_SAMPLES:
                self.missing += step // FRAME_SAMPLES - 1
            gap = now - self.last_at
            if gap > GAP_S:
                self.gaps += 1
            if gap > self.max_gap_s:
                self.max_gap_s = gap
        if self.first_at is None:
            self.first_at = now
        self.last_ts = timestamp
        self.last_at = now
        self.packets += 1
        self.total += 1
        offset = (now - self.first_at) - self.media_s
        if offset < self.block_min:
            self.block_min = offset
        self.block_packets += 1
        if self.block_packets == DRIFT_BLOCK:
            if self.first_block_min is None:
                self.first_block_min = self.block_min
            self.last_block_min = self.block_min
            self.block_min = float("inf")
            self.block_packets = 0


def _no_decoder(*_: Any) -> None:
    """Stands in for aiortc's decoder thread: nothing here listens to the audio."""


def install_receive_hooks() -> None:
    import aiortc.rtcrtpreceiver as receiver_module

    receiver_class = receiver_module.RTCRtpReceiver
    receiver_module.decoder_worker = _no_decoder  # type: ignore[assignment]
    receive = receiver_class.receive
    handle = receiver_class._handle_rtp_packet

    async def receive_without_decoder(self: Any, parameters: Any) -> None:
        await receive(self, parameters)
        # The thread has already returned; with no thread, aiortc queues no frames for it.
        self._RTCRtpReceiver__decoder_thread = None

    async def handle_counted(self: Any, packet: Any, arrival_time_ms: int) -> None:
        counters = self.__dict__.get("fanout_counters")
        if counters is None:
            counters = self.__dict__["fanout_counters"] = Counters()
        now = time.monotonic()
        counters.on_packet(packet.timestamp, now)
        probe = self.__dict__.get("fanout_probe")
        if probe is not None:
            probe.on_packet(packet.payload, now)
        await handle(self, packet, arrival_time_ms)

    receiver_class.receive = receive_without_decoder  # type: ignore[method-assign]
    receiver_class._handle_rtp_packet = handle_counted  # type: ignore[method-assign]


class BenchListener(WhepClient):
    """A WHEP listener that decodes nothing; a naive one keeps its own session speaking."""

    say_text: str | None = None
    say_errors: int = 0

    def _on_track(self, track: Any) -> None:
        pass  # decoding is off: there are no frames to read

    def _on_message(self, message: str | bytes) -> None:
        if self.say_text is None:
            return
        event = json.loads(message)
        if event.get("type") == "speech.started":
            self.say(self.say_text)
        elif event.get("type") == "error":
            self.say_errors += 1

    def counters(self) -> Counters | None:
        receivers = self.pc.getReceivers()
        return receivers[0].__dict__.get("fanout_counters") if receivers else None


class SpeechOnset:
    """Tells a ``say``'s first speech packet from the idle stream's silence.

    The server sends the same silence packet on every idle tick, so a payload
    seen twice in a row while nothing was asked is the silence (the tail of a
    cancelled utterance is never twice the same). After :meth:`said`, the first
    other payload is speech.
    """

    def __init__(self) -> None:
        self.silence: bytes | None = None
        self.said_at: float | None = None
        self._last = b""

    def said(self, now: float) -> None:
        self.said_at = now

    def gave_up(self) -> None:
        """The ``say`` timed out: no packet answers it any more."""
        self.said_at = None

    def packet(self, payload: bytes, now: float) -> float | None:
        """Seconds from the ``say`` if this packet is its first speech, else None."""
        if self.said_at is None:
            if payload == self._last:
                self.silence = payload
            self._last = payload
            return None
        if self.silence is None or payload == self.silence:
            return None
        waited = now - self.said_at
        self.said_at = None
        return waited


class FirstSpeechProbe:
    """One more 1:1 session that keeps asking for speech and times the first packet.

    Once it knows the idle stream's silence (:class:`SpeechOnset`), it says
    :data:`PROBE_TEXT`, notes when the first packet that is not silence arrives,
    cancels, waits :data:`PROBE_PAUSE_S` and says it again. Its speaker is idle
    each time, so every sample is a cold start of one utterance while the other
    sessions keep the server busy.
    """

    def __init__(self, base_url: str) -> None:
        self.listener = BenchListener(base_url)
        self.samples_s: list[float] = []
        self.timeouts = 0
        self._onset = SpeechOnset()
        self._silence_known = asyncio.Event()
        self._heard = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self, http: aiohttp.ClientSession) -> bool:
        try:
            await asyncio.wait_for(self.listener.connect(http), JOIN_TIMEOUT_S)
        except Exception:
            await self.listener.pc.close()
            return False
        self.listener.pc.getReceivers()[0].__dict__["fanout_probe"] = self
        self._task = asyncio.get_running_loop().create_task(self._run(), name="first-speech")
        return True

    def on_packet(self, payload: bytes, now: float) -> None:
        waited = self._onset.packet(payload, now)
        if self._onset.silence is not None:
            self._silence_known.set()
        if waited is not None:
            self.samples_s.append(waited)
            self._heard.set()

    async def _run(self) -> None:
        await self._silence_known.wait()
        while True:
            self._heard.clear()
            self._onset.said(time.monotonic())
            self.listener.say(PROBE_TEXT)
            try:
                await asyncio.wait_for(self._heard.wait(), PROBE_WAIT_S)
            except TimeoutError:
                self.timeouts += 1
                self._onset.gave_up()
            self.listener.cancel()
            await asyncio.sleep(PROBE_PAUSE_S)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        await self.listener.pc.close()


@dataclass(frozen=True, slots=True)
class ClientStats:
    """One measuring window, client side (all listeners together)."""

    wall_s: float
    listeners: int
    packets: int
    missing_frames: int
    """RTP timestamps that never arrived (pacer skips, dropped frames, loss)."""
    listeners_missing: int
    gaps: int
    """Arrival gaps longer than 60 ms."""
    listeners_with_gaps: int
    max_gap_ms: float
    cpu_s: float
    say_errors: int
    drift_ms: float = 0.0
    """Largest |RTP time - arrival time| over the window, any listener."""
    first_speech_ms: tuple[float, ...] = ()
    """The probe's utterances in the window: ``say`` sent to first speech packet."""
    first_speech_timeouts: int = 0


class Listeners:
    def __init__(self, base_url: str, mode: str, room: str, secret: str, text: str) -> None:
        self.base_url = base_url
        self.mode = mode
        self.room = room
        self.signer = TokenSigner(secret.encode())
        self.text = text
        self.joined: list[BenchListener] = []
        self.idle: list[BenchListener] = []
        self.failed = 0
        self.probe: FirstSpeechProbe | None = None
        self._count = 0
        self._at = 0.0
        self._cpu = 0.0

    async def _join_one(self, http: aiohttp.ClientSession) -> None:
        self._count += 1
        listener = BenchListener(self.base_url)
        if self.mode == "room":
            token = self.signer.issue(self.room, Role.LISTENER, f"listener-{self._count}")
            path, headers = f"/rooms/{self.room}/whep", {"Authorization": f"Bearer {token}"}
        else:
            path, headers = "/whep", {}
        try:
            connect = listener.connect(http, path=path, headers=headers)
            await asyncio.wait_for(connect, JOIN_TIMEOUT_S)
        except Exception:
            self.failed += 1
            await listener.pc.close()
            return
        if self.mode == "naive":
            listener.say_text = self.text
            listener.say(self.text)
            listener.say(self.text)
        self.joined.append(listener)

    async def _connect_idle(self, http: aiohttp.ClientSession) -> BenchListener | None:
        """A 1:1 session that says nothing (the baseline's sends silence)."""
        listener = BenchListener(self.base_url)
        query = "?idle=1" if self.mode == "aiortc" else ""
        try:
            await asyncio.wait_for(listener.connect(http, query=query), JOIN_TIMEOUT_S)
        except Exception:
            await listener.pc.close()
            return None
        return listener

    async def _leave(self, http: aiohttp.ClientSession, listener: BenchListener) -> None:
        try:
            async with http.delete(f"{self.base_url}{listener.location}", headers=listener.auth):
                pass
        except aiohttp.ClientError:
            pass
        await listener.pc.close()

    async def open_idle(self, http: aiohttp.ClientSession, count: int) -> tuple[int, int]:
        gate = asyncio.Semaphore(JOIN_CONCURRENCY)
        failed = 0

        async def one() -> None:
            nonlocal failed
            async with gate:
                listener = await self._connect_idle(http)
            if listener is None:
                failed += 1
            else:
                self.idle.append(listener)

        await asyncio.gather(*(one() for _ in range(count)))
        return len(self.idle), failed

    async def close_idle(self, http: aiohttp.ClientSession) -> int:
        gate = asyncio.Semaphore(32)
        closing, self.idle = self.idle, []

        async def one(listener: BenchListener) -> None:
            async with gate:
                await self._leave(http, listener)

        await asyncio.gather(*(one(lst) for lst in closing))
        return len(closing)

    async def churn(
        self, http: aiohttp.ClientSession, rate_per_s: float, duration_s: float, life_s: float
    ) -> tuple[int, int, float, float]:
        """New peers join at ``rate_per_s`` for ``duration_s``; each leaves after ``life_s``.

        Returns (joined, failed, join p50 s, join max s).
        """
        join_s: list[float] = []
        failed = 0
        tasks: list[asyncio.Task[None]] = []

        async def one() -> None:
            nonlocal failed
            started = time.monotonic()
            listener = await self._connect_idle(http)
            if listener is None:
                failed += 1
                return
            join_s.append(time.monotonic() - started)
            await asyncio.sleep(life_s)
            await self._leave(http, listener)

        loop = asyncio.get_running_loop()
        start = time.monotonic()
        n = 0
        while time.monotonic() - start < duration_s:
            tasks.append(loop.create_task(one()))
            n += 1
            await asyncio.sleep(max(0.0, start + n / rate_per_s - time.monotonic()))
        await asyncio.gather(*tasks)
        ordered = sorted(join_s)
        p50 = ordered[len(ordered) // 2] if ordered else 0.0
        return len(join_s), failed, p50, (ordered[-1] if ordered else 0.0)

    async def join(self, http: aiohttp.ClientSession, total: int) -> tuple[int, int, float]:
        started = time.monotonic()
        failed_before = self.failed
        gate = asyncio.Semaphore(JOIN_CONCURRENCY)

        async def one() -> None:
            async with gate:
                await self._join_one(http)

        await asyncio.gather(*(one() for _ in range(max(0, total - len(self.joined)))))
        if self.mode == "naive" and self.probe is None:
            probe = FirstSpeechProbe(self.base_url)
            if await probe.start(http):
                self.probe = probe
        return len(self.joined), self.failed - failed_before, time.monotonic() - started

    async def flowing(self, timeout_s: float) -> tuple[int, int]:
        deadline = time.monotonic() + timeout_s
        while True:
            now = time.monotonic()
            receiving = 0
            for listener in self.joined:
                counters = listener.counters()
                if counters is not None and now - counters.last_at < FLOWING_S:
                    receiving += 1
            if receiving == len(self.joined) or now > deadline:
                return receiving, len(self.joined)
            await asyncio.sleep(0.1)

    def mark(self) -> None:
        for listener in self.joined:
            counters = listener.counters()
            if counters is not None:
                counters.reset()
            listener.say_errors = 0
        if self.probe is not None:
            self.probe.samples_s.clear()
            self.probe.timeouts = 0
        self._at = time.monotonic()
        self._cpu = time.process_time()

    def collect(self) -> ClientStats:
        all_counters = [c for c in (lst.counters() for lst in self.joined) if c is not None]
        return ClientStats(
            wall_s=time.monotonic() - self._at,
            listeners=len(self.joined),
            packets=sum(c.packets for c in all_counters),
            missing_frames=sum(c.missing for c in all_counters),
            listeners_missing=sum(1 for c in all_counters if c.missing),
            gaps=sum(c.gaps for c in all_counters),
            listeners_with_gaps=sum(1 for c in all_counters if c.gaps),
            max_gap_ms=max((c.max_gap_s for c in all_counters), default=0.0) * 1000,
            cpu_s=time.process_time() - self._cpu,
            say_errors=sum(lst.say_errors for lst in self.joined),
            drift_ms=max((abs(c.drift_s()) for c in all_counters), default=0.0) * 1000,
            first_speech_ms=tuple(
                s * 1000 for s in (self.probe.samples_s if self.probe is not None else ())
            ),
            first_speech_timeouts=0 if self.probe is None else self.probe.timeouts,
        )

    async def close(self) -> None:
        if self.probe is not None:
            await self.probe.close()
            self.probe = None
        gate = asyncio.Semaphore(32)

        async def one(listener: BenchListener) -> None:
            async with gate:
                await listener.pc.close()

        try:
            await asyncio.wait_for(
                asyncio.gather(*(one(lst) for lst in self.joined), return_exceptions=True),
                CLOSE_TIMEOUT_S,
            )
        except TimeoutError:
            pass


async def _main(conn: Connection, listeners: Listeners) -> None:
    async with aiohttp.ClientSession() as http:
        conn.send(("ready", os.getpid()))
        while True:
            command = await recv_message(conn, COMMAND_WAIT_S)
            if command[0] == "join":
                conn.send(("joined", *await listeners.join(http, command[1])))
            elif command[0] == "flowing":
                conn.send(("flowing", *await listeners.flowing(command[1])))
            elif command[0] == "mark":
                listeners.mark()
                conn.send(("marked",))
            elif command[0] == "collect":
                conn.send(("stats", listeners.collect()))
            elif command[0] == "idle":
                conn.send(("idle", *await listeners.open_idle(http, command[1])))
            elif command[0] == "close_idle":
                conn.send(("closed_idle", await listeners.close_idle(http)))
            elif command[0] == "churn":
                conn.send(("churned", *await listeners.churn(http, *command[1:])))
            else:
                await listeners.close()
                break
    conn.send(("closed",))


def client_process(
    conn: Connection, base_url: str, mode: str, room: str, secret: str, text: str
) -> None:
    """Entry point of the listeners' process (multiprocessing ``spawn`` target)."""
    os.sched_setaffinity(0, {CLIENT_CORE})
    logging.basicConfig(level=logging.ERROR)
    # Offer only 127.0.0.1 as an ICE candidate: all traffic stays on loopback.
    restrict_host_addresses(LOOPBACK)
    install_receive_hooks()
    asyncio.run(_main(conn, Listeners(base_url, mode, room, secret, text)))
