"""The receiving peers of ``bench.fanout`` and ``bench.capacity``: aiortc WHEP peers in one
process pinned to one core, driven over a pipe, counting RTP packets and decoding nothing
(this process patches its own aiortc receivers, never the server). ``room`` peers listen to
one room; ``naive`` peers are 1:1 sessions that keep their speaker busy, beside a probe
that times ``say`` -> ``speech.started`` on an idle speaker; ``aiortc`` peers join the
naive aiortc baseline."""

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
from media_server.audio.frames import FRAME_SAMPLES
from media_server.rooms.tokens import Role, TokenSigner
from media_server.rtc.ice import restrict_host_addresses
from tests.whep_client import WhepClient

PEERS_CORE: Final = 1
JOIN_CONCURRENCY: Final = 8
JOIN_TIMEOUT_S: Final = 20.0
CLOSE_TIMEOUT_S: Final = 20.0
GAP_S: Final = 0.060
"""An arrival gap longer than this counts as a gap (3 frames' worth)."""
COMMAND_WAIT_S: Final = 900.0
RTP_WRAP: Final = 1 << 32
PROBE_TEXT: Final = "One moment, please."
PROBE_PAUSE_S: Final = 1.0
"""The probe's pause after each cancel, so its speaker is idle at every ``say``."""
PROBE_WAIT_S: Final = 10.0


class Counters:
    """RTP timestamps and arrival times of one peer's packets."""

    def __init__(self) -> None:
        self.last_ts: int | None = None
        self.last_at = 0.0
        self.missing = self.gaps = 0

    def on_packet(self, timestamp: int, now: float) -> None:
        if self.last_ts is not None:
            step = (timestamp - self.last_ts) % RTP_WRAP
            if step < RTP_WRAP // 2 and step > FRAME_SAMPLES:  # forward, frames missing
                self.missing += step // FRAME_SAMPLES - 1
            self.gaps += now - self.last_at > GAP_S
        self.last_ts, self.last_at = timestamp, now


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
    keep_events: bool = False

    def _on_track(self, track: Any) -> None:
        pass  # decoding is off: there are no frames to read

    def _on_message(self, message: str | bytes) -> None:
        if self.keep_events:
            super()._on_message(message)
            return
        if self.say_text is not None and json.loads(message).get("type") == "speech.started":
            self.say(self.say_text)

    def counters(self) -> Counters | None:
        receivers = self.pc.getReceivers()
        return receivers[0].__dict__.get("bench_counters") if receivers else None


@dataclass(frozen=True, slots=True)
class PeerStats:
    """One measuring window, all peers together."""

    wall_s: float
    missing_frames: int  # RTP timestamps never received (skipped, dropped, lost)
    gaps: int  # arrivals more than GAP_S apart
    cpu_s: float
    first_speech_ms: tuple[float, ...]  # the probe's say -> speech.started, each utterance
    first_speech_timeouts: int


class Peers:
    def __init__(self, base_url: str, mode: str, room: str, secret: str, text: str) -> None:
        self.base_url, self.mode, self.room, self.text = base_url, mode, room, text
        self.signer = TokenSigner(secret.encode())
        self.joined: list[Peer] = []
        self.idling: list[Peer] = []
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

    def mark(self) -> None:
        for peer in self.joined:
            if (counters := peer.counters()) is not None:
                counters.missing = counters.gaps = 0
        self.probe_ms.clear()
        self.probe_timeouts = 0
        self._at, self._cpu = time.monotonic(), time.process_time()

    def collect(self) -> PeerStats:
        counters = [c for c in (p.counters() for p in self.joined) if c is not None]
        return PeerStats(
            wall_s=time.monotonic() - self._at,
            missing_frames=sum(c.missing for c in counters),
            gaps=sum(c.gaps for c in counters),
            cpu_s=time.process_time() - self._cpu,
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

    async def idle(self, http: aiohttp.ClientSession, count: int) -> tuple[int, int]:
        before = len(self.idling)

        async def one() -> None:
            peer = await self._connect(http)
            if peer is not None:
                self.idling.append(peer)

        await self._gather(one() for _ in range(count))
        opened = len(self.idling) - before
        return opened, count - opened

    async def close_idle(self, http: aiohttp.ClientSession) -> tuple[int]:
        closing, self.idling = self.idling, []
        await self._gather((self._leave(http, p) for p in closing), limit=32)
        return (len(closing),)

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
            name, *args = await recv_message(conn, COMMAND_WAIT_S)
            if name == "mark":
                peers.mark()
                conn.send(("marked",))
            elif name == "collect":
                conn.send(("stats", peers.collect()))
            elif name in ("join", "idle", "close_idle", "churn"):
                conn.send((name, *await getattr(peers, name)(http, *args)))
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
