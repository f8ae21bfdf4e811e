"""What the Prometheus metrics cost the media path. ``python -m bench.metrics_cost [--quick]``

The pacer observes every frame it sends (``vms_frame_send_lateness_seconds``), so the
metrics' largest cost is per frame per stream. This drives real :class:`Pacer` objects (an
idle source, so every frame is the silence packet; a sink that drops frames) through the
same simulated ticks twice: without metrics (the baseline) and with the server's
:class:`ServerMetrics`, alternating runs, and prints the CPU per frame of each and what
the difference comes to at the one-core session capacity ``--sessions`` (170 in
docs/performance.md). Then the render of one ``GET /metrics`` (done in a worker thread,
off the event loop), after a run's worth of observations.
"""

from __future__ import annotations

import statistics
import time
from typing import Final

from bench import _report as report
from media_server.audio.frames import FRAME_S, OutgoingFrame
from media_server.playout.pacer import Pacer
from media_server.telemetry import LoadCollector, LoadSnapshot, ServerMetrics

SILENCE: Final = b"\xf8\xff\xfe"


class _IdleSource:
    def next_payload(self, pts: int) -> bytes | None:
        return None


class _DropSink:
    def send(self, frame: OutgoingFrame) -> None:
        pass


class _StepClock:
    """Time moves only when the benchmark says so: every tick is exactly on time."""

    def __init__(self) -> None:
        self.t = 0.0

    def now(self) -> float:
        return self.t

    async def sleep_until(self, deadline: float) -> None:  # pragma: no cover - unused
        self.t = max(self.t, deadline)


def _run(streams: int, ticks: int, metrics: ServerMetrics | None) -> float:
    """CPU seconds per frame for ``streams`` pacers over ``ticks`` ticks."""
    clock = _StepClock()
    pacers = [
        Pacer(_IdleSource(), _DropSink(), clock, SILENCE, metrics=metrics) for _ in range(streams)
    ]
    for pacer in pacers:
        pacer.start_at(0.0)
    started = time.process_time()
    for tick in range(ticks):
        clock.t = tick * FRAME_S + 0.0004  # 0.4 ms late: a typical lateness
        for pacer in pacers:
            pacer.emit_until(clock.t)
    return (time.process_time() - started) / (streams * ticks)


def main() -> None:
    parser = report.command_line("bench.metrics_cost", __doc__)
    parser.add_argument("--quick", action="store_true", help="fewer and shorter runs")
    parser.add_argument("--streams", type=report.positive(int), default=200)
    parser.add_argument("--sessions", type=report.positive(int), default=170)
    args = parser.parse_args()
    runs, ticks = (3, 100) if args.quick else (9, 500)
    report.print_machine(["prometheus-client"])

    metrics = ServerMetrics()
    without: list[float] = []
    with_metrics: list[float] = []
    _run(args.streams, 20, metrics)  # warm up both paths
    _run(args.streams, 20, None)
    for _ in range(runs):
        without.append(_run(args.streams, ticks, None))
        with_metrics.append(_run(args.streams, ticks, metrics))
    base_us = statistics.median(without) * 1e6
    metered_us = statistics.median(with_metrics) * 1e6
    extra_us = metered_us - base_us
    core_pct = extra_us * 1e-6 * (1 / FRAME_S) * args.sessions * 100
    report.print_table(
        f"Pacer CPU per frame, {args.streams} streams x {ticks} ticks, median of {runs} runs",
        ("pacer", "us/frame", f"at {args.sessions} sessions: % of a core"),
        [
            ("without metrics (baseline)", report.fmt(base_us, 2),
             report.fmt(base_us * 1e-6 / FRAME_S * args.sessions * 100)),
            ("with ServerMetrics", report.fmt(metered_us, 2),
             report.fmt(metered_us * 1e-6 / FRAME_S * args.sessions * 100)),
            ("difference", report.fmt(extra_us, 2), report.fmt(core_pct, 2)),
        ],
    )  # fmt: skip

    load = LoadSnapshot(sessions=args.sessions, max_sessions=200, rooms=0)
    renders: list[float] = []
    size = 0
    for _ in range(20 if args.quick else 100):
        started = time.perf_counter()
        body, _ = metrics.exposition(LoadCollector(lambda: load))
        renders.append(time.perf_counter() - started)
        size = len(body)
    report.print_table(
        "One GET /metrics render (a worker thread; the loop only takes the load snapshot)",
        ("bytes", "median ms", "max ms"),
        [(str(size), report.fmt(statistics.median(renders) * 1000, 2),
          report.fmt(max(renders) * 1000, 2))],
    )  # fmt: skip


if __name__ == "__main__":
    main()
