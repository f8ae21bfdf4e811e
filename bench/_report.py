"""Shared by every benchmark: tables, the machine, CPU and memory of processes, the server
process, its public figures (``GET /stats``, ``POST /stats/window``), pipes to children."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import importlib.metadata
import os
import platform
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from multiprocessing.connection import Connection
from typing import Any, Final

import aiohttp
import numpy as np

LOOPBACK: Final = "127.0.0.1"
OPERATOR_TOKEN: Final = "bench-operator-token-0123456789"
"""The servers the benchmarks start take this token: with it ``GET /stats`` shows every
session and room, and per-client bounds (all clients are one address here) do not apply."""
OPERATOR: Final = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
START_TIMEOUT_S: Final = 60.0

SENTENCES: Final = (  # varied lengths, as a voice agent says them
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


def print_table(
    title: str, headers: Sequence[str], rows: Sequence[Sequence[str]], left: Iterable[int] = (0,)
) -> None:
    """Print ``rows`` under ``headers``; columns in ``left`` are left-aligned, others right."""
    left_columns = set(left)
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def render(cells: Sequence[str]) -> str:
        return "  ".join(
            c.ljust(w) if i in left_columns else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    print(title)
    header = render(headers)
    print(header)
    print("-" * max(len(header), *(len(render(r)) for r in rows)))
    for row in rows:
        print(render(row))
    print()


def fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def p50_p90_max(values: Iterable[float | None]) -> tuple[float, float, float] | None:
    present = np.array([v for v in values if v is not None], dtype=np.float64)
    if not present.size:
        return None
    p50, p90 = np.percentile(present, [50, 90])
    return float(p50), float(p90), float(present.max())


def package_version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def cpu_model() -> str:
    with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
        models = [line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model")]
    return models[-1] if models else platform.processor() or "unknown"


def print_machine(packages: Sequence[str], extra: Sequence[tuple[str, str]] = ()) -> None:
    """CPU, cores, Python, the given packages' versions, OS, load and date."""
    rows = [
        ("CPU", cpu_model()),
        ("cores", f"{os.cpu_count()} (usable by this process: {len(os.sched_getaffinity(0))})"),
        ("Python", f"{platform.python_version()} ({platform.python_implementation()})"),
        *((package, package_version(package)) for package in packages),
        *extra,
        ("OS", platform.platform()),
        ("load average (1/5/15 min)", " ".join(f"{v:.2f}" for v in os.getloadavg())),
        ("date", datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")),
    ]
    print_table("Machine", ("item", "value"), rows, left=(0, 1))
    sys.stdout.flush()


_CLOCK_TICKS: Final = os.sysconf("SC_CLK_TCK")


def _cpu_of(stat_path: str) -> float:
    try:
        with open(stat_path, encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def process_cpu_s(pid: int) -> float:
    """CPU seconds (user + system, all threads) used so far by process ``pid``; 0 if gone."""
    return _cpu_of(f"/proc/{pid}/stat")


def loop_thread_cpu_s(pid: int) -> float:
    """CPU seconds of the process's main thread: an asyncio server's event loop."""
    return _cpu_of(f"/proc/{pid}/task/{pid}/stat")


def system_busy_s() -> float:
    """CPU seconds all cores have spent busy (not idle or waiting for I/O) since boot."""
    with open("/proc/stat", encoding="ascii") as stat:
        values = [int(v) for v in stat.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = values[:8]
    return (user + nice + system + irq + softirq + steal) / _CLOCK_TICKS


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        return next(int(line.split()[1]) / 1024 for line in status if line.startswith("VmRSS:"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    """``voice-media-server`` (``python -m signaling``, or ``module`` taking its flags) in its
    own process on ``host`` (127.0.0.1), with ``env`` (``VMS_*``) on top of this environment
    and, with ``operator``, the bench's operator token (without it the server is open to any
    loopback client); ``cores``: the CPUs it may run on (set before it starts any thread);
    ``netns``: the network namespace it runs in (``ip netns exec``, which keeps the pid)."""

    def __init__(
        self, env: Mapping[str, str] | None = None, operator: bool = True,
        module: str = "signaling", cores: set[int] | None = None, host: str = LOOPBACK,
        netns: str | None = None,
    ) -> None:  # fmt: skip
        self.port = free_port()
        self.base = f"http://{host}:{self.port}"
        self.process = subprocess.Popen(
            [*(["ip", "netns", "exec", netns] if netns else []),
             *(["taskset", "-c", ",".join(map(str, sorted(cores)))] if cores else []),
             sys.executable, "-m", module, "--host", host, "--port", str(self.port),
             "--ice-host-address", host, "--log-level", "WARNING"],
            env={**os.environ, **({"VMS_API_TOKEN": OPERATOR_TOKEN} if operator else {}),
                 **(env or {})},
            stdout=subprocess.DEVNULL,  # aiohttp's "Running on" banner
        )  # fmt: skip

    async def ready(self, http: aiohttp.ClientSession) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(f"{self.base}/healthz") as resp:
                    if resp.status == 200:
                        return
            await asyncio.sleep(0.2)
        raise RuntimeError(f"the server at {self.base} did not start")

    def rss_mb(self) -> float:
        return rss_mb(self.process.pid)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)


async def server_stats(http: aiohttp.ClientSession, base: str) -> dict[str, Any]:
    """``GET /stats`` as the operator: every session's and room's pacing figures."""
    async with http.get(f"{base}/stats", headers=OPERATOR) as resp:
        resp.raise_for_status()
        stats: dict[str, Any] = await resp.json()
        return stats


async def start_window(http: aiohttp.ClientSession, base: str) -> None:
    """``POST /stats/window``: the pacing figures start again from now."""
    async with http.post(f"{base}/stats/window", headers=OPERATOR) as resp:
        resp.raise_for_status()


async def recv_message(conn: Connection, timeout_s: float | None) -> Any:
    """Wait for the next message on ``conn`` (None: as long as it takes) without blocking
    the event loop."""
    loop = asyncio.get_running_loop()
    if not conn.poll():
        ready: asyncio.Future[None] = loop.create_future()

        def on_readable() -> None:
            if not ready.done():
                ready.set_result(None)

        loop.add_reader(conn.fileno(), on_readable)
        try:
            await asyncio.wait_for(ready, timeout_s)
        finally:
            loop.remove_reader(conn.fileno())
    return conn.recv()


def command_line(module: str, doc: str | None) -> argparse.ArgumentParser:
    """The command line of ``python -m module``, its help the module's docstring as written."""
    return argparse.ArgumentParser(
        f"python -m {module}", description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )


def counts(text: str) -> tuple[int, ...]:
    """argparse type: ``"1,4,16"`` as sorted, distinct, positive integers."""
    try:
        values = {int(v) for v in text.split(",") if v.strip()}
    except ValueError:
        raise argparse.ArgumentTypeError("expected integers, e.g. 1,4,16") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("expected integers of at least 1")
    return tuple(sorted(values))


def positive(kind: type[int] | type[float]) -> Any:
    """argparse type: a number (``int`` or ``float``) above zero."""

    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError("expected a number above 0")
        return value

    return parse
