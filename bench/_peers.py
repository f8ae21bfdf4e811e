"""The receiving peers of ``bench.fanout`` and ``bench.capacity``: many aiortc WHEP peers in
one process, pinned to one core, that count RTP packets and decode nothing.

Commands from the parent (a pipe; answers are tuples):

* ``("join", total)``: open peers until ``total`` are connected -> ``("joined", n, failed, s)``;
* ``("flowing", timeout_s)``: wait until every peer had a packet in the last
  :data:`FLOWING_S` -> ``("flowing", receiving, total)``;
* ``("mark",)`` / ``("collect",)``: one measuring window -> ``("stats", PeerStats)``;
* ``("idle", n)`` / ``("close_idle",)``: sessions that say nothing (memory);
* ``("churn", rate, seconds, life)``: peers joining and leaving meanwhile;
* ``("close",)``: close every peer -> ``("closed",)``.

Modes: ``room`` peers join ``/rooms/{room}/whep`` as listeners; ``naive`` peers are 1:1
sessions that keep their own speaker busy (two ``say`` queued, one more on every
``speech.started``), and one more 1:1 session, the probe, times ``say`` ->
``speech.started`` on an otherwise idle speaker; ``aiortc`` peers join the naive aiortc
baseline. This process patches its own aiortc receivers (no decoder thread, a packet
counter before aiortc's receive path), never the server.
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

from bench._report import OPERATOR, recv_message
from media_server.audio.frames import FRAME_SAMPLES, SAMPLE_RATE_HZ
from media_server.rooms.tokens import Role, TokenSigner
from media_server.rtc.ice import restrict_host_addresses
from tests.whep_client import WhepClient

PEERS_CORE: Final = 1
JOIN_CONCURRENCY: Final = 8
JOIN_TIMEOUT_S: Final = 20.0
CLOSE_TIMEOUT_S: Final = 20.0
FLOWING_S: Final = 0.5
GAP_S: Final = 0.060
"""An arrival gap longer than this counts as a gap (3 frames' worth)."""
COMMAND_WAIT_S: Final = 900.0
RTP_WRAP: Final = 1 << 32
DRIFT_BLOCK: Final = 250
"""Packets (5 s) per block whose least arrival offset measures drift."""
PROBE_TEXT: Final = "One moment, please."
PROBE_PAUSE_S: Final = 1.0
"""The probe's pause after each cancel, so its speaker is idle at every ``say``."""
PROBE_WAIT_S: Final = 10.0


class Counters:
    """RTP timestamps and arrival times of one peer's packets."""

    def __init__(self) -> None:
        self.last_ts: int | None = None
        self.last_at = 0.0
        self.reset()

    def reset(self) -> None:
        self.packets = self.missing = self.gaps = self.block_packets = 0
        self.max_gap_s = self.media_s = 0.0
        self.first_at: float | None = None
        self.block_min = float("inf")
        self.first_block_min: float | None = None
        self.last_block_min: float | None = None

    def drift_s(self) -> float:
        """How far RTP time ran ahead of arrival time over the window (+ = media fast): the
        least (arrival - RTP time) offset of the first 5 s block minus the last block's,
        which strips most queueing and scheduling delay."""
        if self.first_block_min is None or self.last_block_min is None:
            return 0.0
        return self.first_block_min - self.last_block_min

    def on_packet(self, timestamp: int, now: float) -> None:
        if self.last_ts is not None:
            step = (timestamp - self.last_ts) % RTP_WRAP
            forward = step < RTP_WRAP // 2
            if forward and self.first_at is not None:
                self.media_s += step / SAMPLE_RATE_HZ
            if forward and step > FRAME_SAMPLES:
                self.missing += step // FRAME_SAMPLES - 1
            gap = now - self.last_at
            self.gaps += gap > GAP_S
            self.max_gap_s = max(self.max_gap_s, gap)
        if self.first_at is None:
            self.first_at = now
        self.last_ts, self.last_at = timestamp, now
        self.packets += 1
        self.block_min = min(self.block_min, (now - self.first_at) - self.media_s)
        self.block_packets += 1
        if self.block_packets == DRIFT_BLOCK:
            if self.first_block_min is None:
                self.first_block_min = self.block_min
            self.last_block_min = self.block_min
            self.block_min, self.block_packets = float("inf"), 0


def install_receive_hooks() -> None:
    """No decoder thread; count every RTP packet, then let aiortc handle it as usual (so
    receiver reports still go back to the server)."""
    import aiortc.rtcrtpreceiver as receiver_module

    receiver_class = receiver_module.RTCRtpReceiver
    receiver_module.decoder_worker = lambda *_: None
    receive, handle = receiver_class.receive, receiver_class._handle_rtp_packet

    async def receive_without_decoder(self: Any, parameters: Any) -> None:
        await receive(self, parameters)
        self._RTCRtpReceiver__decoder_thread = None  # no thread: aiortc queues no frames

    async def handle_counted(self: Any, packet: Any, arrival_time_ms: int) -> None:
        counters = self.__dict__.setdefault("bench_counters", Counters())
        counters.on_packet(packet.timestamp, time.monotonic())
        await handle(self, packet, arrival_time_ms)

    receiver_class.receive = receive_without_decoder  # type: ignore[method-assign]
    receiver_class._handle_rtp_packet = handle_counted  # type: ignore[method-assign]


class Peer(WhepClient):
    """A peer that decodes nothing; with ``say_text`` its session keeps speaking; with
    ``keep_events`` its events queue as in :class:`WhepClient` (the probe)."""

    say_text: str | None = None
    say_errors: int = 0
    keep_events: bool = False

    def _on_track(self, track: Any) -> None:
        pass  # decoding is off: there are no frames to read

    def _on_message(self, message: str | bytes) -> None:
        if self.keep_events:
            super()._on_message(message)
            return
        event = json.loads(message)
        if event.get("type") == "speech.started" and self.say_text is not None:
            self.say(self.say_text)
        elif event.get("type") == "error":
            self.say_errors += 1

    def counters(self) -> Counters | None:
        receivers = self.pc.getReceivers()
        return receivers[0].__dict__.get("bench_counters") if receivers else None


@dataclass(frozen=True, slots=True)
class PeerStats:
    """One measuring window, all peers together."""

    wall_s: float
    peers: int
    packets: int
    missing_frames: int
    """RTP timestamps that never arrived (pacer skips, dropped frames, loss)."""
    gaps: int
    """Arrival gaps longer than 60 ms."""
    max_gap_ms: float
    drift_ms: float
    """Largest |RTP time - arrival time| drift over the window, any peer."""
    cpu_s: float
    say_errors: int
    first_speech_ms: tuple[float, ...]
    """The probe: ``say`` sent -> ``speech.started`` received, each utterance."""
    first_speech_timeouts: int


class Peers:
    def __init__(self, base_url: str, mode: str, room: str, secret: str, text: str) -> None:
        self.base_url, self.mode, self.room, self.text = base_url, mode, room, text
        self.signer = TokenSigner(secret.encode())
        self.joined: list[Peer] = []
        self.idle: list[Peer] = []
        self.failed = self._count = 0
        self.probe: Peer | None = None
        self.probe_ms: list[float] = []
        self.probe_timeouts = 0
        self._probe_task: asyncio.Task[None] | None = None
        self._at = self._cpu = 0.0

    async def _connect(
        self, http: aiohttp.ClientSession, listener: bool = False, idle: bool = True
    ) -> Peer | None:
        peer = Peer(self.base_url)
        path, headers = "/whep", OPERATOR
        if listener:
            self._count += 1
            token = self.signer.issue(self.room, Role.LISTENER, f"listener-{self._count}")
            path, headers = f"/rooms/{self.room}/whep", {"Authorization": f"Bearer {token}"}
        # the baseline's sessions speak unless asked not to; ours only when told to
        query = "?idle=1" if self.mode == "aiortc" and idle else ""
        try:
            await asyncio.wait_for(peer.connect(http, query, path, headers), JOIN_TIMEOUT_S)
        except Exception:
            await peer.pc.close()
            return None
        return peer

    async def _join_one(self, http: aiohttp.ClientSession) -> None:
        peer = await self._connect(http, listener=self.mode == "room", idle=False)
        if peer is None:
            self.failed += 1
            return
        if self.mode == "naive":
            peer.say_text = self.text
            peer.say(self.text)
            peer.say(self.text)
        self.joined.append(peer)

    async def _gather(self, coros: Any, limit: int = JOIN_CONCURRENCY) -> None:
        gate = asyncio.Semaphore(limit)

        async def one(coro: Any) -> None:
            async with gate:
                await coro

        await asyncio.gather(*(one(c) for c in coros), return_exceptions=True)

    async def join(self, http: aiohttp.ClientSession, total: int) -> tuple[int, int, float]:
        started, failed_before = time.monotonic(), self.failed
        await self._gather(self._join_one(http) for _ in range(max(0, total - len(self.joined))))
        if self.mode == "naive" and self.probe is None:
            self.probe = await self._connect(http)
            if self.probe is not None:
                self.probe.keep_events = True
                self._probe_task = asyncio.get_running_loop().create_task(self._probe())
        return len(self.joined), self.failed - failed_before, time.monotonic() - started

    async def _probe(self) -> None:
        """Say a short text on an idle speaker, time ``speech.started``, cancel, pause."""
        assert self.probe is not None
        while True:
            said = time.monotonic()
            self.probe.say(PROBE_TEXT)
            try:
                await self.probe.next_event("speech.started", wait_s=PROBE_WAIT_S)
                self.probe_ms.append((time.monotonic() - said) * 1000)
            except TimeoutError:
                self.probe_timeouts += 1
            self.probe.cancel()
            await asyncio.sleep(PROBE_PAUSE_S)

    async def flowing(self, timeout_s: float) -> tuple[int, int]:
        deadline = time.monotonic() + timeout_s
        while True:
            now = time.monotonic()
            receiving = sum(
                1 for p in self.joined if (c := p.counters()) and now - c.last_at < FLOWING_S
            )
            if receiving == len(self.joined) or now > deadline:
                return receiving, len(self.joined)
            await asyncio.sleep(0.1)

    def mark(self) -> None:
        for peer in self.joined:
            if (counters := peer.counters()) is not None:
                counters.reset()
            peer.say_errors = 0
        self.probe_ms.clear()
        self.probe_timeouts = 0
        self._at, self._cpu = time.monotonic(), time.process_time()

    def collect(self) -> PeerStats:
        counters = [c for c in (p.counters() for p in self.joined) if c is not None]
        return PeerStats(
            wall_s=time.monotonic() - self._at,
            peers=len(self.joined),
            packets=sum(c.packets for c in counters),
            missing_frames=sum(c.missing for c in counters),
            gaps=sum(c.gaps for c in counters),
            max_gap_ms=max((c.max_gap_s for c in counters), default=0.0) * 1000,
            drift_ms=max((abs(c.drift_s()) for c in counters), default=0.0) * 1000,
            cpu_s=time.process_time() - self._cpu,
            say_errors=sum(p.say_errors for p in self.joined),
            first_speech_ms=tuple(self.probe_ms),
            first_speech_timeouts=self.probe_timeouts,
        )

    async def _leave(self, http: aiohttp.ClientSession, peer: Peer) -> None:
        try:
            async with http.delete(f"{self.base_url}{peer.location}", headers=peer.auth):
                pass
        except aiohttp.ClientError:
            pass
        await peer.pc.close()

    async def open_idle(self, http: aiohttp.ClientSession, count: int) -> tuple[int, int]:
        before = len(self.idle)

        async def one() -> None:
            peer = await self._connect(http)
            if peer is not None:
                self.idle.append(peer)

        await self._gather(one() for _ in range(count))
        opened = len(self.idle) - before
        return opened, count - opened

    async def close_idle(self, http: aiohttp.ClientSession) -> int:
        closing, self.idle = self.idle, []
        await self._gather((self._leave(http, p) for p in closing), limit=32)
        return len(closing)

    async def churn(
        self, http: aiohttp.ClientSession, rate_per_s: float, duration_s: float, life_s: float
    ) -> tuple[int, int, float, float]:
        """Peers join at ``rate_per_s`` for ``duration_s``, each leaving after ``life_s``;
        returns (joined, failed, join p50 s, join max s)."""
        join_s: list[float] = []
        failed = 0

        async def one() -> None:
            nonlocal failed
            started = time.monotonic()
            peer = await self._connect(http)
            if peer is None:
                failed += 1
                return
            join_s.append(time.monotonic() - started)
            await asyncio.sleep(life_s)
            await self._leave(http, peer)

        loop, start, tasks = asyncio.get_running_loop(), time.monotonic(), []
        while time.monotonic() - start < duration_s:
            tasks.append(loop.create_task(one()))
            await asyncio.sleep(max(0.0, start + len(tasks) / rate_per_s - time.monotonic()))
        await asyncio.gather(*tasks)
        ordered = sorted(join_s) or [0.0]
        return len(join_s), failed, ordered[len(ordered) // 2], ordered[-1]

    async def close(self) -> None:
        if self._probe_task is not None:
            self._probe_task.cancel()
            await asyncio.gather(self._probe_task, return_exceptions=True)
        everyone = [*self.joined, *([self.probe] if self.probe else [])]
        try:
            await asyncio.wait_for(
                self._gather((p.pc.close() for p in everyone), limit=32), CLOSE_TIMEOUT_S
            )
        except TimeoutError:
            pass


async def _main(conn: Connection, peers: Peers) -> None:
    async with aiohttp.ClientSession() as http:
        conn.send(("ready", os.getpid()))
        while True:
            command = await recv_message(conn, COMMAND_WAIT_S)
            name, args = command[0], command[1:]
            if name == "join":
                conn.send(("joined", *await peers.join(http, *args)))
            elif name == "flowing":
                conn.send(("flowing", *await peers.flowing(*args)))
            elif name == "mark":
                peers.mark()
                conn.send(("marked",))
            elif name == "collect":
                conn.send(("stats", peers.collect()))
            elif name == "idle":
                conn.send(("idle", *await peers.open_idle(http, *args)))
            elif name == "close_idle":
                conn.send(("closed_idle", await peers.close_idle(http)))
            elif name == "churn":
                conn.send(("churned", *await peers.churn(http, *args)))
            else:
                await peers.close()
                break
    conn.send(("closed",))


def peers_process(
    conn: Connection, base_url: str, mode: str, room: str, secret: str, text: str
) -> None:
    """Entry point of the peers' process (multiprocessing ``spawn`` target)."""
    os.sched_setaffinity(0, {PEERS_CORE})
    logging.basicConfig(level=logging.ERROR)
    restrict_host_addresses(("127.0.0.1",))  # all traffic stays on loopback
    install_receive_hooks()
    asyncio.run(_main(conn, Peers(base_url, mode, room, secret, text)))
