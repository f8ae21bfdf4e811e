"""A lossy link for ``bench.lossy``: two network namespaces joined by a userspace relay.

This kernel has no ``tc netem``, and nftables (its ``numgen random`` drops) is not installed
everywhere the bench runs, so the relay does all of it: each namespace gets a TUN device
whose other end is a file descriptor the relay holds, and the relay copies IP packets
between them with, per direction, Gilbert-Elliott loss and a delay drawn for every packet.
Random loss is the Gilbert-Elliott chain with no memory (enter + leave = 1). The relay counts
what it drops and times what it forwards, so the realised link is printed, not assumed.

``python -m bench._netem CONDITION_JSON FD_UP FD_DOWN`` is the relay process; it prints its
realised figures as JSON when it gets SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import dataclasses
import fcntl
import json
import os
import random
import signal
import struct
import subprocess
import sys
from collections.abc import Iterator
from typing import Any, Final

import numpy as np

CLIENT_ADDRESS: Final = "10.203.0.1"
SERVER_ADDRESS: Final = "10.203.0.2"
CLIENT_NETWORK: Final = "10.203.0.0/24"
"""Where a moved client's addresses come from (``Link.move_client``)."""
TUNSETIFF: Final = 0x400454CA
IFF_TUN: Final = 0x0001
IFF_NO_PI: Final = 0x1000
CLONE_NEWNET: Final = 0x40000000
READ_BYTES: Final = 65_536
TIE_S: Final = 1e-6
RELAY_PRIORITY: Final = 10
"""SCHED_FIFO priority of the relay: it preempts the bench, Chromium and the server when a
packet is due (it uses about 2 % of a core), so its delays are the ones drawn."""


@dataclasses.dataclass(frozen=True, slots=True)
class Condition:
    """One link, the same each way. Loss is a Gilbert-Elliott chain where every packet in
    the bad state is lost: ``enter`` (good -> bad) and ``leave`` (bad -> good) per packet
    give loss enter / (enter + leave) and a mean burst of 1 / leave packets."""

    enter: float = 0.0
    leave: float = 1.0
    delay_ms: float = 40.0
    jitter_ms: float = 20.0

    @classmethod
    def random_loss(cls, loss: float) -> Condition:
        return cls(enter=loss, leave=1 - loss)

    def describe(self) -> str:
        loss = self.enter / (self.enter + self.leave)
        burst = f", mean burst {1 / self.leave:.2f} packets" if loss else ""
        return f"loss {100 * loss:.1f} %{burst}, delay {self.delay_ms:g} ± {self.jitter_ms:g} ms"


class GilbertElliott:
    """Per-packet loss with memory; counts packets, losses and bursts (runs of losses)."""

    def __init__(self, enter: float, leave: float, rng: random.Random) -> None:
        self._enter, self._leave, self._rng = enter, leave, rng
        self.bad = False
        self.seen = self.lost = self.bursts = 0

    def drop(self) -> bool:
        was_bad = self.bad
        self.bad = self._rng.random() < (1 - self._leave if was_bad else self._enter)
        self.seen += 1
        self.lost += self.bad
        self.bursts += self.bad and not was_bad
        return self.bad


class Delay:
    """Each packet's departure: arrival + delay ± jitter (uniform), but never before the
    previous packet's. A mobile link's jitter is mostly queueing, which keeps order, and
    reordering would also trip TCP's and SCTP's fast retransmits for reasons no real path
    has; a packet drawn to overtake waits for the one ahead instead."""

    def __init__(self, delay_ms: float, jitter_ms: float, rng: random.Random) -> None:
        self._low_s, self._high_s = (delay_ms - jitter_ms) / 1000, (delay_ms + jitter_ms) / 1000
        self._rng = rng
        self._last = float("-inf")

    def due(self, arrival: float) -> float:
        self._last = max(arrival + self._rng.uniform(self._low_s, self._high_s), self._last + TIE_S)
        return self._last


def forward(source: int, sink: int, loss: GilbertElliott, delay: Delay) -> list[float]:
    """Relay packets from ``source`` to ``sink`` on the running loop; the list fills with
    each forwarded packet's realised delay in ms (the relay's timer included)."""
    loop = asyncio.get_running_loop()
    delays_ms: list[float] = []

    def send(packet: bytes, arrival: float) -> None:
        with contextlib.suppress(OSError):  # a namespace going away
            os.write(sink, packet)
        delays_ms.append((loop.time() - arrival) * 1000)

    def readable() -> None:
        while True:
            try:
                packet = os.read(source, READ_BYTES)
            except OSError:  # BlockingIOError: all read
                return
            arrival = loop.time()
            if not loss.drop():
                loop.call_at(delay.due(arrival), send, packet, arrival)

    os.set_blocking(source, False)
    loop.add_reader(source, readable)
    return delays_ms


async def relay(fds: tuple[int, int], condition: Condition, stop: asyncio.Event) -> dict[str, Any]:
    """Copy packets between the client's and the server's descriptors until ``stop``; per
    direction ("up": client -> server, "down": server -> client) the realised link."""
    rng = random.Random(0)
    tallies = {}
    for name, source, sink in (("up", *fds), ("down", *reversed(fds))):
        loss = GilbertElliott(condition.enter, condition.leave, rng)
        delay = Delay(condition.delay_ms, condition.jitter_ms, rng)
        tallies[name] = (loss, forward(source, sink, loss, delay))
    try:
        await stop.wait()
    finally:
        for fd in fds:
            asyncio.get_running_loop().remove_reader(fd)
    return {name: realised(*tally) for name, tally in tallies.items()}


def realised(loss: GilbertElliott, delays_ms: list[float]) -> dict[str, Any]:
    """What the link did: packets, loss %, mean burst (packets), delay p50/p5/p95/max (ms)."""
    d = np.percentile(delays_ms, [50, 5, 95, 100]).round(1).tolist() if delays_ms else []
    burst = loss.lost / loss.bursts if loss.bursts else 0.0
    return {"packets": loss.seen, "loss_pct": 100 * loss.lost / max(1, loss.seen),
            "burst": burst, "delay_ms": d}  # fmt: skip


def open_tun(name: str) -> int:
    """A TUN device (IP packets, no header) in this namespace; it lives while the fd does."""
    fd = os.open("/dev/net/tun", os.O_RDWR)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    return fd


def setns(fd: int) -> None:
    """Move this thread (and what it starts from now on) into the network namespace."""
    if ctypes.CDLL(None, use_errno=True).setns(fd, CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), "setns")


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


def link_or_skip(stack: contextlib.ExitStack, bench: str) -> Link | None:
    """A :class:`Link` brought up on ``stack`` (taken down on SIGTERM too), or None, said in
    one line, where this machine has no namespaces or TUN devices for it."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # the link's cleanup runs
    try:
        return stack.enter_context(Link().up())
    except (subprocess.CalledProcessError, OSError) as e:
        print(f"{bench} skipped: no network namespace or TUN device here ({e})")
        return None


class Link:
    """Namespaces ``vmsl<pid>c`` (client, CLIENT_ADDRESS) and ``vmsl<pid>s`` (server,
    SERVER_ADDRESS), each with lo and a point-to-point TUN device; inside ``with`` this
    process (and what it starts) is in the client namespace. Unique per run; removed on exit,
    Ctrl-C or error (the TUN devices die with their descriptors)."""

    def __init__(self) -> None:
        tag = f"vmsl{os.getpid()}"
        self.client_ns, self.server_ns = f"{tag}c", f"{tag}s"
        self.fds: list[int] = []
        self.client_address = CLIENT_ADDRESS

    @contextlib.contextmanager
    def up(self) -> Iterator[Link]:
        home = os.open("/proc/self/ns/net", os.O_RDONLY)
        try:
            for ns, here, there in ((self.client_ns, CLIENT_ADDRESS, SERVER_ADDRESS),
                                    (self.server_ns, SERVER_ADDRESS, CLIENT_ADDRESS)):  # fmt: skip
                ip("netns", "add", ns)
                self.fds.append(open_tun(ns))
                ip("link", "set", ns, "netns", ns)
                ip("-n", ns, "addr", "add", here, "peer", there, "dev", ns)
                ip("-n", ns, "link", "set", ns, "addrgenmode", "none", "up")  # no IPv6 chatter
                ip("-n", ns, "link", "set", "lo", "up")
            client = os.open(f"/run/netns/{self.client_ns}", os.O_RDONLY)
            setns(client)
            os.close(client)
            yield self
        finally:
            setns(home)
            os.close(home)
            for fd in self.fds:
                os.close(fd)
            for ns in (self.client_ns, self.server_ns):
                subprocess.run(["ip", "netns", "del", ns], check=False, capture_output=True)

    def move_client(self, address: str) -> None:
        """The client's address changes to ``address`` (in CLIENT_NETWORK), as a phone's
        does from Wi-Fi to cellular: the new one is added, then the old one removed, so
        sockets bound to it are dead (sends fail; what comes to it is dropped). The server
        namespace routes all of CLIENT_NETWORK to its TUN device, so replies find the new
        address through the same relay."""
        ip("-n", self.server_ns, "route", "replace", CLIENT_NETWORK, "dev", self.server_ns)
        # not "peer SERVER_ADDRESS" as well: with the old address's prefix, the new one would
        # be its secondary, and go with it
        ip("-n", self.client_ns, "addr", "add", f"{address}/32", "dev", self.client_ns)
        first = self.client_address == CLIENT_ADDRESS
        old = [CLIENT_ADDRESS, "peer", SERVER_ADDRESS] if first else [f"{self.client_address}/32"]
        ip("-n", self.client_ns, "addr", "del", *old, "dev", self.client_ns)
        ip("-n", self.client_ns, "route", "replace", SERVER_ADDRESS, "dev", self.client_ns, "src",
           address)  # fmt: skip
        self.client_address = address

    @contextlib.contextmanager
    def relay(self, condition: Condition, realised: dict[str, Any]) -> Iterator[None]:
        """The relay process for one condition; ``realised`` gets its figures at the end."""
        command = [sys.executable, "-m", "bench._netem", json.dumps(dataclasses.asdict(condition)),
                   *map(str, self.fds)]  # fmt: skip
        process = subprocess.Popen(command, pass_fds=self.fds, stdout=subprocess.PIPE, text=True)
        try:  # the link is the wire, not one more contender for the cores: punctual timers
            os.sched_setscheduler(process.pid, os.SCHED_FIFO, os.sched_param(RELAY_PRIORITY))
        except OSError:
            os.setpriority(os.PRIO_PROCESS, process.pid, -10)
        try:
            yield
        finally:
            process.terminate()
            out, _ = process.communicate(timeout=30)
            realised.update(json.loads(out or "{}"))


def main() -> None:
    condition = Condition(**json.loads(sys.argv[1]))
    fds = (int(sys.argv[2]), int(sys.argv[3]))

    async def run() -> dict[str, Any]:
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        return await relay(fds, condition, stop)

    print(json.dumps(asyncio.run(run())))


if __name__ == "__main__":
    main()
