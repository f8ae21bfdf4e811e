"""Shared by every benchmark: plain-text tables, the machine they ran on, CPU accounting."""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import os
import platform
from collections.abc import Iterable, Sequence


def print_table(
    title: str,
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    left: Iterable[int] = (0,),
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


def package_version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_rows(packages: Sequence[str]) -> list[tuple[str, str]]:
    """CPU, cores, Python, the given packages' versions, OS, load and date."""
    affinity = len(os.sched_getaffinity(0))
    return [
        ("CPU", cpu_model()),
        ("cores", f"{os.cpu_count()} (usable by this process: {affinity})"),
        ("Python", f"{platform.python_version()} ({platform.python_implementation()})"),
        *((package, package_version(package)) for package in packages),
        ("OS", platform.platform()),
        ("load average (1/5/15 min)", " ".join(f"{v:.2f}" for v in os.getloadavg())),
        ("date", datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")),
    ]


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu_s(pid: int) -> float:
    """CPU seconds (user + system, all threads) used so far by process ``pid``; 0 if gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def system_busy_s() -> float:
    """CPU seconds all cores have spent busy (not idle or waiting for I/O) since boot."""
    with open("/proc/stat", encoding="ascii") as stat:
        values = [int(v) for v in stat.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = values[:8]
    return (user + nice + system + irq + softirq + steal) / _CLOCK_TICKS


def counts(text: str) -> tuple[int, ...]:
    """argparse type: ``"1,4,16"`` as sorted, distinct, positive integers."""
    try:
        values = {int(v) for v in text.split(",") if v.strip()}
    except ValueError:
        raise argparse.ArgumentTypeError("expected integers, e.g. 1,4,16") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("expected integers of at least 1")
    return tuple(sorted(values))


def positive_float(text: str) -> float:
    """argparse type: a number above zero."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("expected a number above 0")
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("expected an integer of at least 1")
    return value
