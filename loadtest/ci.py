"""The Locust load test as a CI check: a real server, a short headless run, a verdict.

Run from the repository root (needs the ``load`` extra: ``pip install -e '.[load]'``)::

    python -m loadtest.ci                      # 4 users, 20 s, about 40 s in all
    python -m loadtest.ci --users 2 --run-time 60s --token

It starts ``python -m signaling`` (Piper) on a free port of 127.0.0.1 with the per-client
bounds lifted (every Locust user comes from one address) and as many HTTP synthesis slots
as users (beyond them the server answers ``503 engine_busy`` by design), waits for
``/healthz``, runs ``loadtest/locustfile.py`` headless, prints the figures and fails
unless Locust exited 0, nothing failed and every entry was exercised. The server is always
stopped with SIGTERM. ``--token`` gives the server an operator token and the users
``VMS_API_TOKEN`` instead (the token path; the server then counts no per-client bounds).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

ROOT: Final = Path(__file__).resolve().parent.parent
LOCUSTFILE: Final = ROOT / "loadtest" / "locustfile.py"
LOOPBACK: Final = "127.0.0.1"
START_TIMEOUT_S: Final = 60.0
STOP_TIMEOUT_S: Final = 15.0
LOCUST_GRACE_S: Final = 90.0
"""Locust's own start, its users' last tasks (``--stop-timeout``) and its reports."""
USER_STOP_TIMEOUT_S: Final = 10
TTFA: Final = "TTFA"
EXPECTED_ENTRIES: Final = (
    ("POST", "/tts (whole stream)"),
    ("TTFA", "/tts first audio"),
    ("WS", "/tts/ws connect"),
    ("TTFA", "/tts/ws first audio"),
    ("WS", "/tts/ws utterance"),
)
"""Every entry the locustfile records: a run that lacks one did not test it."""


def lifted_limits(users: int) -> dict[str, str]:
    """Server settings for a load test from one address: no per-client bounds (0 is
    unbounded), and HTTP synthesis slots for every user at once."""
    slots = str(max(1, users))
    return {
        "VMS_MAX_SYNTHESES_PER_CLIENT": "0",
        "VMS_MAX_SOCKETS_PER_CLIENT": "0",
        "VMS_CLIENT_UPLOAD_BYTES_PER_S": "0",
        "VMS_SYNTHESIS_WORKERS": slots,
        "VMS_HTTP_SYNTHESIS_SLOTS": slots,
    }


@dataclass(frozen=True, slots=True)
class Entry:
    """One row of Locust's ``*_stats.csv``; times in ms."""

    kind: str
    name: str
    requests: int
    failures: int
    average_ms: float
    p50_ms: float
    p95_ms: float
    max_ms: float


def read_summary(path: Path) -> list[Entry]:
    """The entries the locustfile wrote at the end of the run (``VMS_LOADTEST_SUMMARY``),
    the total last (its ``kind`` is empty)."""
    with path.open(encoding="utf-8") as f:
        rows = json.load(f)
    return [
        Entry(
            kind=row["type"] or "",
            name=row["name"],
            requests=int(row["requests"]),
            failures=int(row["failures"]),
            average_ms=float(row["average_ms"] or 0),
            p50_ms=float(row["p50_ms"] or 0),
            p95_ms=float(row["p95_ms"] or 0),
            max_ms=float(row["max_ms"] or 0),
        )
        for row in rows
    ]


def problems(exit_code: int, entries: Sequence[Entry], users: Iterable[str] = ()) -> list[str]:
    """Why this run fails CI (empty: it passes). ``users``: the user classes run (all
    when empty), whose entries must each have requests."""
    found: list[str] = []
    if exit_code != 0:
        found.append(f"locust exited {exit_code}")
    for entry in entries:
        if entry.kind and entry.failures:
            found.append(f"{entry.kind} {entry.name}: {entry.failures} of {entry.requests} failed")
    counted = {(e.kind, e.name): e.requests for e in entries}
    chosen = set(users)
    for kind, name in EXPECTED_ENTRIES:
        user = "WsTtsUser" if name.startswith("/tts/ws") else "HttpTtsUser"
        if chosen and user not in chosen:
            continue
        if counted.get((kind, name), 0) == 0:
            found.append(f"{kind} {name}: no requests")
    return found


def summary(entries: Sequence[Entry]) -> str:
    """A table of ``entries``, in the order of :data:`EXPECTED_ENTRIES`, the total last."""
    order = {key: i for i, key in enumerate(EXPECTED_ENTRIES)}
    entries = sorted(entries, key=lambda e: order.get((e.kind, e.name), len(order)))
    lines = [
        f"{'type':<6} {'name':<22} {'reqs':>5} {'fails':>5} {'avg ms':>7} {'p50 ms':>7} "
        f"{'p95 ms':>7} {'max ms':>7}"
    ]
    for e in entries:
        lines.append(
            f"{e.kind or 'all':<6} {e.name:<22} {e.requests:>5} {e.failures:>5} "
            f"{e.average_ms:>7.0f} {e.p50_ms:>7.0f} {e.p95_ms:>7.0f} {e.max_ms:>7.0f}"
        )
    return "\n".join(lines)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def wait_healthy(base: str, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited with {server.returncode} before /healthz")
        try:
            with urllib.request.urlopen(f"{base}/healthz", timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the server at {base} did not answer /healthz in {START_TIMEOUT_S:g} s")


def synthesis_stats(base: str, headers: Mapping[str, str]) -> str:
    """The server's own count of HTTP synthesis run and refused, as a cross-check."""
    request = urllib.request.Request(f"{base}/stats", headers=dict(headers))
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            stats = json.load(resp)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return f"(GET /stats failed: {exc})"
    synthesis = stats.get("synthesis", {})
    keys = ("max_concurrent", "http_max_concurrent", "started_total", "http_refused_total")
    return ", ".join(f"{k} {synthesis.get(k)}" for k in keys)


def stop(server: subprocess.Popen[bytes]) -> None:
    if server.poll() is None:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    print(f"server stopped (exit code {server.returncode})")


def seconds(run_time: str) -> float:
    """Locust's ``-t`` (``20s``, ``2m``, ``1h30m``) in seconds, to bound the wait for it."""
    total, digits = 0.0, ""
    for char in run_time:
        if char.isdigit():
            digits += char
        elif char in "hms" and digits:
            total += int(digits) * {"h": 3600, "m": 60, "s": 1}[char]
            digits = ""
        else:
            raise ValueError(f"not a Locust run time: {run_time!r}")
    return total + (int(digits) if digits else 0)


def run(args: argparse.Namespace) -> int:
    port = free_port()
    base = f"http://{LOOPBACK}:{port}"
    token = secrets.token_urlsafe(32) if args.token else None
    env = {k: v for k, v in os.environ.items() if k != "VMS_API_TOKEN"}
    server_env = {**env, **lifted_limits(args.users)}
    if token is not None:
        server_env["VMS_API_TOKEN"] = token
    print(f"server: {base}, " + " ".join(f"{k}={v}" for k, v in lifted_limits(args.users).items()))
    server = subprocess.Popen(
        [sys.executable, "-m", "signaling", "--host", LOOPBACK, "--port", str(port),
         "--log-level", "WARNING"],
        cwd=ROOT, env=server_env, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_healthy(base, server)
        with tempfile.TemporaryDirectory(prefix="vms-locust-") as tmp:
            prefix = Path(args.csv or Path(tmp) / "run")
            command = [
                sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless",
                "-u", str(args.users), "-r", str(args.spawn_rate), "-t", args.run_time,
                "--stop-timeout", str(USER_STOP_TIMEOUT_S), "--host", base,
                "--csv", str(prefix), "--only-summary", *args.user_classes,
            ]  # fmt: skip
            print("$ " + " ".join(command), flush=True)
            summary_json = Path(tmp) / "summary.json"
            locust_env = {**env, "VMS_LOADTEST_SUMMARY": str(summary_json)}
            if token is not None:
                locust_env["VMS_API_TOKEN"] = token
            try:
                done = subprocess.run(
                    command, cwd=ROOT, env=locust_env,
                    timeout=seconds(args.run_time) + LOCUST_GRACE_S,
                )  # fmt: skip
                exit_code = done.returncode
            except subprocess.TimeoutExpired:
                exit_code = -1
                print("locust did not finish in time")
            entries = read_summary(summary_json) if summary_json.exists() else []
        print(f"\nserver synthesis: {synthesis_stats(base, bearer(token))}")
    finally:
        stop(server)
    print("\n" + summary(entries))
    found = problems(exit_code, entries, args.user_classes)
    if not entries:
        found.append("no stats from locust")
    for problem in found:
        print(f"FAIL: {problem}")
    if not found:
        print("load test passed: locust exited 0, no failures, every entry exercised")
    return 1 if found else 0


def bearer(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.ci", description=(__doc__ or "").split("\n\n")[0]
    )
    parser.add_argument("--users", "-u", type=int, default=4, help="Locust users (default 4)")
    parser.add_argument("--spawn-rate", "-r", type=float, default=2, help="users started per s")
    parser.add_argument("--run-time", "-t", default="20s", help="Locust -t (default 20s)")
    parser.add_argument("--csv", help="keep Locust's CSV files under this prefix")
    parser.add_argument(
        "--token",
        action="store_true",
        help="also send an operator token (the server counts no per-client bounds for it)",
    )
    parser.add_argument(
        "user_classes", nargs="*", metavar="USER", help="HttpTtsUser, WsTtsUser (default both)"
    )
    args = parser.parse_args(argv)
    if args.users < 1:
        parser.error("--users must be at least 1")
    try:
        return run(args)
    except (RuntimeError, OSError, ValueError) as exc:
        print(f"FAIL: {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
