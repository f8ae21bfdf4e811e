"""First-chunk latency and real-time factor of an engine behind ``SynthesisService``.

Run from the repository root::

    python -m bench.synthesis [--quick] [--passes N] [--levels 1,4,16]
    python -m bench.synthesis --engine cosyvoice --model-dir DIR

For each concurrency level N (default 1, 4 and 16) one ``SynthesisService`` is
built with ``max_concurrent=N``, so nothing is refused, and N streams run at once
on one asyncio loop. Each stream takes its sentences, one after another, from a
fixed list of varied English sentences; every level gets the same sentences
(``--passes`` times through the list). Beside them, in the same run, the baseline:
the engine called directly (``engine.synthesize(request, threading.Event())``) in one
long-lived plain thread, one sentence at a time. Baseline calls and the concurrency-1 service
streams alternate sentence by sentence, so their difference is the service's own
overhead (thread hop, queue, loop hop), measured on the same sentences.

Measured per sentence: first chunk (request made -> first chunk in hand: on the loop
for the service, in the thread for the baseline), synthesis time (request made ->
last chunk) and audio produced. Per run: CPU time of this process
(``resource.getrusage``) and of the whole machine (``/proc/stat``). Nothing here
asserts on timings.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import importlib.metadata
import logging
import math
import os
import queue
import resource
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np

from bench._report import counts, machine_rows, print_table
from synthesis import (
    Engine,
    EngineBusy,
    SynthesisError,
    SynthesisRequest,
    SynthesisService,
    create_engine,
)

DEFAULT_LEVELS: Final = (1, 4, 16)
DEFAULT_PASSES: Final = 3
"""Times through SENTENCES per run: 48 samples per level."""
QUICK_PASSES: Final = 1
"""16 samples per level."""
CHUNK_TIMEOUT_S: Final = 300.0
"""Generous: at high concurrency a slow engine's first chunk may legitimately take long."""

WARM_UP: Final = "Warming up the voice before anything is measured."

SENTENCES: Final = (
    "Hello there.",
    "The quick brown fox jumps over the lazy dog.",
    "Your order has shipped, and it should arrive on Thursday afternoon between two and four.",
    "Yes, that works for me.",
    "Could you please repeat the last part of the address, starting with the street name?",
    "It is twenty past seven in the evening.",
    "After the storm passed, the whole neighbourhood came out to clear the fallen branches "
    "from the road. By evening the street looked almost normal again.",
    "Please hold on a moment while I look that up for you.",
    "Temperatures will drop to minus three degrees overnight, so drive carefully!",
    "The meeting has been moved from Monday morning to Wednesday at half past ten, "
    "in the large conference room on the third floor.",
    "I did not catch that. Could you say it again?",
    "The total comes to forty two dollars and fifteen cents, including tax.",
    "Before you continue, make sure the device is plugged in and the green light is on; "
    "otherwise the update may fail halfway through.",
    "Good morning, and welcome back.",
    "Researchers measured the response time of the system under load, and found that most "
    "of the delay came from the speech model itself rather than from the network.",
    "Goodbye, and have a lovely evening.",
)


# -- measuring -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sample:
    """One sentence synthesised, either directly or through the service."""

    text: str
    first_chunk_s: float | None
    """Request made -> first chunk in hand; None when no audio came."""
    synthesis_s: float
    """Request made -> last chunk in hand (or the error)."""
    audio_s: float
    chunks: int
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Usage:
    """A snapshot of clocks and counters; subtract two to get what a run used."""

    wall_s: float
    cpu_s: float
    """User + system time of this process, all threads."""
    involuntary_switches: int
    machine_busy_s: float | None
    """Non-idle time of all cores of the machine (``/proc/stat``), None off Linux."""

    @classmethod
    def now(cls) -> Usage:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return cls(
            time.perf_counter(),
            usage.ru_utime + usage.ru_stime,
            usage.ru_nivcsw,
            _machine_busy_s(),
        )

    def __sub__(self, other: Usage) -> Usage:
        busy = (
            None
            if self.machine_busy_s is None or other.machine_busy_s is None
            else self.machine_busy_s - other.machine_busy_s
        )
        return Usage(
            self.wall_s - other.wall_s,
            self.cpu_s - other.cpu_s,
            self.involuntary_switches - other.involuntary_switches,
            busy,
        )

    def __add__(self, other: Usage) -> Usage:
        busy = (
            None
            if self.machine_busy_s is None or other.machine_busy_s is None
            else self.machine_busy_s + other.machine_busy_s
        )
        return Usage(
            self.wall_s + other.wall_s,
            self.cpu_s + other.cpu_s,
            self.involuntary_switches + other.involuntary_switches,
            busy,
        )


ZERO_USAGE: Final = Usage(0.0, 0.0, 0, 0.0)


def _machine_busy_s() -> float | None:
    try:
        with open("/proc/stat", encoding="ascii") as stat:
            fields = [int(v) for v in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    # user nice system idle iowait irq softirq steal [guest guest_nice: already in user]
    busy = sum(fields[:8]) - fields[3] - fields[4]
    return busy / os.sysconf("SC_CLK_TCK")


@dataclass
class Run:
    """All samples of one row of the tables."""

    label: str
    concurrency: int
    samples: list[Sample] = field(default_factory=list)
    usage: Usage = ZERO_USAGE
    refused: int = 0
    """EngineBusy answers (retried); the service is sized so this should stay 0."""

    @property
    def audio_s(self) -> float:
        return sum(s.audio_s for s in self.samples)

    @property
    def synthesis_s(self) -> float:
        return sum(s.synthesis_s for s in self.samples)

    @property
    def rtf(self) -> float | None:
        audio = self.audio_s
        return self.synthesis_s / audio if audio else None

    @property
    def throughput(self) -> float | None:
        """Audio seconds produced per wall second, all streams together."""
        return self.audio_s / self.usage.wall_s if self.usage.wall_s else None

    @property
    def errors(self) -> int:
        return sum(1 for s in self.samples if s.error is not None)


def synthesize_direct(engine: Engine, request: SynthesisRequest) -> Sample:
    """The baseline: the engine's blocking generator, drained in the calling thread."""
    first: float | None = None
    audio = 0.0
    chunks = 0
    started = time.perf_counter()
    try:
        for chunk in engine.synthesize(request, threading.Event()):
            if first is None:
                first = time.perf_counter() - started
            audio += chunk.duration_s
            chunks += 1
    except Exception as exc:  # reported in the tables, not fatal
        return Sample(request.text, first, time.perf_counter() - started, audio, chunks, repr(exc))
    return Sample(request.text, first, time.perf_counter() - started, audio, chunks)


class DirectThread:
    """One plain thread (no executor, no service) that runs the baseline calls in turn.

    Long-lived like the service's worker threads, so that neither side pays for
    starting a thread per sentence.
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._work, name="baseline-engine", daemon=True)
        self._thread.start()

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            request, loop, done = job
            sample = synthesize_direct(self._engine, request)
            loop.call_soon_threadsafe(done.set_result, sample)

    async def run(self, request: SynthesisRequest) -> Sample:
        """Synthesise ``request`` in the thread; the loop only waits for the result."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Sample] = loop.create_future()
        self._jobs.put((request, loop, done))
        return await done

    def close(self) -> None:
        self._jobs.put(None)
        self._thread.join()


_Job = tuple[SynthesisRequest, asyncio.AbstractEventLoop, "asyncio.Future[Sample]"]


async def synthesize_service(
    service: SynthesisService, request: SynthesisRequest, run: Run
) -> Sample:
    """One stream through the service, read as fast as it comes, then ``aclose()``d."""
    started = time.perf_counter()
    while True:
        try:
            stream = service.stream(request)
            break
        except EngineBusy:
            run.refused += 1
            await asyncio.sleep(0.001)
    first: float | None = None
    audio = 0.0
    chunks = 0
    error: str | None = None
    try:
        async for chunk in stream:
            if first is None:
                first = time.perf_counter() - started
            audio += chunk.duration_s
            chunks += 1
    except SynthesisError as exc:
        error = f"{exc.error}: {exc.message}"
    finally:
        ended = time.perf_counter()
        await stream.aclose()
    return Sample(request.text, first, ended - started, audio, chunks, error)


def requests(count: int, voice: str | None) -> list[SynthesisRequest]:
    """``count`` requests cycling through SENTENCES, in order."""
    return [
        SynthesisRequest(text=SENTENCES[i % len(SENTENCES)], speaker_id=voice) for i in range(count)
    ]


async def run_paired(
    engine: Engine, direct: DirectThread, samples: int, voice: str | None, timeout_s: float
) -> tuple[Run, Run]:
    """Baseline and concurrency 1, alternating sentence by sentence (and which goes first)."""
    baseline = Run("engine direct (baseline)", 1)
    single = Run("service, concurrency 1", 1)
    service = SynthesisService(engine, 1, chunk_timeout_s=timeout_s)
    try:
        for index, request in enumerate(requests(samples, voice)):
            order = (baseline, single) if index % 2 == 0 else (single, baseline)
            for run in order:
                before = Usage.now()
                if run is baseline:
                    sample = await direct.run(request)
                else:
                    sample = await synthesize_service(service, request, run)
                run.usage = run.usage + (Usage.now() - before)
                run.samples.append(sample)
    finally:
        service.close()
    return baseline, single


async def run_level(
    engine: Engine, concurrency: int, samples: int, voice: str | None, timeout_s: float
) -> Run:
    """``concurrency`` streams at once; each takes ``rounds`` sentences one after another."""
    run = Run(f"service, concurrency {concurrency}", concurrency)
    rounds = math.ceil(samples / concurrency)
    sequence = requests(rounds * concurrency, voice)
    service = SynthesisService(engine, concurrency, chunk_timeout_s=timeout_s)

    async def stream_worker(k: int) -> list[Sample]:
        return [
            await synthesize_service(service, sequence[r * concurrency + k], run)
            for r in range(rounds)
        ]

    try:
        before = Usage.now()
        per_stream = await asyncio.gather(*(stream_worker(k) for k in range(concurrency)))
        run.usage = Usage.now() - before
    finally:
        service.close()
    # in sentence order, so that every level lists the same sentences in the same order
    run.samples = [per_stream[i % concurrency][i // concurrency] for i in range(len(sequence))]
    return run


async def measure(
    engine: Engine, levels: Sequence[int], samples: int, voice: str | None, timeout_s: float
) -> list[Run]:
    """The baseline and every level, in order; the baseline is measured even without level 1."""
    direct = DirectThread(engine)
    try:
        # warm-up: the first runs through ONNX Runtime and espeak are slower; one service
        # stream too, so that lazy imports inside the engine are done
        warm_up = SynthesisRequest(text=WARM_UP, speaker_id=voice)
        await direct.run(warm_up)
        warm = SynthesisService(engine, 1, chunk_timeout_s=timeout_s)
        try:
            await synthesize_service(warm, warm_up, Run("warm-up", 1))
        finally:
            warm.close()

        runs: list[Run] = []
        for level in levels:
            if level == 1:
                runs.extend(await run_paired(engine, direct, samples, voice, timeout_s))
            else:
                runs.append(await run_level(engine, level, samples, voice, timeout_s))
            print(f"  measured {runs[-1].label}: {runs[-1].usage.wall_s:.1f} s", flush=True)
        if 1 not in levels:
            baseline, _ = await run_paired(engine, direct, samples, voice, timeout_s)
            runs.insert(0, baseline)
        return runs
    finally:
        direct.close()


# -- engines ---------------------------------------------------------------------------


def _os_threads() -> int:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return threading.active_count()


def load_engine(name: str, model_dir: Path | None) -> Engine:
    """Build ``name`` through the registry; ``model_dir`` goes in ``VMS_<NAME>_MODEL_DIR``.

    That is how the registry's CosyVoice factory finds its model (``synthesis.cosyvoice``,
    ``cosyvoice_config_from_env``); Piper needs nothing.
    """
    if model_dir is not None:
        os.environ[f"VMS_{name.upper()}_MODEL_DIR"] = str(model_dir)
    try:
        return create_engine(name)
    except ImportError as exc:
        raise SystemExit(f"engine {name!r} cannot be imported here: {exc}") from None
    except (ValueError, SynthesisError) as exc:
        raise SystemExit(f"engine {name!r} could not be built: {exc}") from None


def _onnx_sessions(engine: Engine) -> list[Any]:
    """ONNX Runtime sessions held by the engine or by its attributes (one level down)."""
    ort = sys.modules.get("onnxruntime")
    if ort is None:
        return []
    found: list[Any] = []
    holders: list[Any] = [engine]
    holders.extend(v for v in getattr(engine, "__dict__", {}).values() if hasattr(v, "__dict__"))
    for holder in holders:
        for value in getattr(holder, "__dict__", {}).values():
            if isinstance(value, ort.InferenceSession) and value not in found:
                found.append(value)
    return found


def engine_rows(engine: Engine, load_s: float, threads_added: int) -> list[tuple[str, str]]:
    rows = [
        ("engine", engine.name),
        ("sample rate", f"{engine.sample_rate_hz} Hz"),
        ("load time", f"{load_s:.2f} s"),
        ("OS threads started by loading it", str(threads_added)),
    ]
    for index, session in enumerate(_onnx_sessions(engine)):
        options = session.get_session_options()
        try:
            spinning = options.get_session_config_entry("session.intra_op.allow_spinning")
        except Exception:  # onnxruntime raises when the key was never set
            spinning = "not set (ORT default: on)"
        intra = options.intra_op_num_threads
        prefix = f"ONNX session {index + 1}: "
        rows += [
            (prefix + "providers", ", ".join(session.get_providers())),
            (
                prefix + "intra_op_num_threads",
                f"{intra}" + (" (ORT default: one per physical core)" if intra == 0 else ""),
            ),
            (prefix + "inter_op_num_threads", str(options.inter_op_num_threads)),
            (prefix + "execution mode", str(options.execution_mode).rsplit(".", 1)[-1]),
            (prefix + "intra-op spinning", spinning),
        ]
    torch = sys.modules.get("torch")
    if torch is not None:
        rows += [
            ("torch intra-op threads", str(torch.get_num_threads())),
            ("torch inter-op threads", str(torch.get_num_interop_threads())),
        ]
    return rows


# -- output ----------------------------------------------------------------------------


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _ratio(value: float | None, base: float | None) -> str:
    return "-" if value is None or not base else f"{value / base:.2f}x"


def print_machine() -> None:
    rows = machine_rows(("onnxruntime", "torch", "piper-tts", "numpy"))
    print_table("Machine", ("item", "value"), rows, left=(0, 1))


def _percentiles(values: Iterable[float | None]) -> tuple[float, float, float] | None:
    present = np.array([v for v in values if v is not None], dtype=np.float64)
    if not present.size:
        return None
    p50, p90 = np.percentile(present, [50, 90])
    return float(p50), float(p90), float(present.max())


def print_results(runs: Sequence[Run]) -> None:
    baseline = runs[0]
    base_first = _percentiles(s.first_chunk_s for s in baseline.samples)
    base_p50 = base_first[0] if base_first else None

    rows: list[tuple[str, ...]] = []
    for run in runs:
        first = _percentiles(s.first_chunk_s for s in run.samples)
        p50, p90, peak = (v * 1000 for v in first) if first else (None, None, None)
        rows.append(
            (
                run.label,
                str(run.concurrency),
                str(len(run.samples)),
                _fmt(p50),
                _fmt(p90),
                _fmt(peak),
                _ratio(first[0] if first else None, base_p50),
            )
        )
    print_table(
        "First chunk: request made -> first chunk in hand (ms)",
        ("run", "streams", "samples", "p50", "p90", "max", "p50 vs baseline"),
        rows,
    )

    base_rtf = baseline.rtf
    base_tp = baseline.throughput
    rows = []
    for run in runs:
        rtfs = _percentiles(s.synthesis_s / s.audio_s if s.audio_s else None for s in run.samples)
        busy_streams = run.synthesis_s / run.usage.wall_s if run.usage.wall_s else None
        rows.append(
            (
                run.label,
                str(run.concurrency),
                _fmt(run.audio_s),
                _fmt(run.rtf, 3),
                _fmt(rtfs[1] if rtfs else None, 3),
                _ratio(run.rtf, base_rtf),
                _fmt(run.throughput, 1),
                _ratio(run.throughput, base_tp),
                _fmt(run.usage.wall_s),
                _fmt(busy_streams, 1),
                f"{run.errors}/{run.refused}",
            )
        )
    print_table(
        "Speed: RTF = synthesis time / audio time (lower is faster)",
        (
            "run",
            "streams",
            "audio s",
            "RTF",
            "RTF p90",
            "RTF vs base",
            "throughput",
            "vs base",
            "wall s",
            "busy streams",
            "err/refused",
        ),
        rows,
    )

    cores = len(os.sched_getaffinity(0))
    rows = []
    for run in runs:
        usage = run.usage
        wall = usage.wall_s or float("nan")
        cpu_per_audio = usage.cpu_s / run.audio_s if run.audio_s else None
        machine = None if usage.machine_busy_s is None else usage.machine_busy_s / wall
        rows.append(
            (
                run.label,
                _fmt(usage.cpu_s / wall, 2),
                _fmt(machine, 2),
                _fmt(None if machine is None else machine - usage.cpu_s / wall, 2),
                _fmt(cpu_per_audio, 3),
                _fmt(usage.involuntary_switches / wall, 0),
            )
        )
    print_table(
        f"CPU (average cores busy, of {cores}; per run's own wall time)",
        (
            "run",
            "this process",
            "machine",
            "everything else",
            "CPU s per audio s",
            "invol. switches/s",
        ),
        rows,
    )

    errors: dict[str, int] = {}
    for run in runs:
        for sample in run.samples:
            if sample.error is not None:
                errors[sample.error] = errors.get(sample.error, 0) + 1
    if errors:
        print_table(
            "Errors (all runs)",
            ("error", "count"),
            [(message[:120], str(count)) for message, count in errors.items()],
        )

    single = next((r for r in runs if r.label == "service, concurrency 1"), None)
    if single is not None:
        pairs = list(zip(baseline.samples, single.samples, strict=True))
        first_diff = [
            (s.first_chunk_s - b.first_chunk_s) * 1000
            for b, s in pairs
            if b.first_chunk_s is not None and s.first_chunk_s is not None
        ]
        synth_diff = [(s.synthesis_s - b.synthesis_s) * 1000 for b, s in pairs]
        rows = []
        for label, values in (
            ("first chunk", first_diff),
            ("whole sentence (synthesis time)", synth_diff),
        ):
            stats = _percentiles(values)
            mean = float(np.mean(values)) if values else None
            rows.append(
                (label, *(_fmt(v, 2) for v in (stats or (None, None, None))), _fmt(mean, 2))
            )
        print_table(
            "Service overhead at concurrency 1: service - engine direct, same sentence (ms)",
            ("measure", "p50", "p90", "max", "mean"),
            rows,
        )


def print_notes(
    engine_name: str, onnx: bool, threads_added: int, baseline_cores: float | None
) -> None:
    cores = len(os.sched_getaffinity(0))
    print(
        "Columns: streams = concurrent streams (= the service's max_concurrent); RTF = sum of\n"
        "per-sentence synthesis times / sum of audio durations (per stream, so above the core\n"
        "count it grows with the queueing); RTF p90 = 90th percentile of per-sentence RTF;\n"
        "throughput = audio seconds produced per wall second, all streams together; busy\n"
        "streams = mean number of streams synthesising (the last rounds of a level taper off);\n"
        "err/refused = failed sentences / EngineBusy answers (retried; should both be 0).\n"
        "Baseline and concurrency 1 alternate sentence by sentence; their wall time is the sum\n"
        "of their own sentences only. 'vs base' compares with the engine called directly.\n"
    )
    alone = f"{baseline_cores:.1f} cores" if baseline_cores is not None else "all of its cores"
    if onnx:
        print(
            f"On this {cores}-core machine, concurrency > cores means queueing inside ONNX\n"
            "Runtime threads. Each session.run works on the calling worker thread plus the\n"
            f"session's intra-op pool ({threads_added} thread(s) started when the engine loaded),\n"
            f"so one stream alone already keeps about {alone} busy (CPU table). More streams\n"
            "add worker threads that the OS time-slices over the same cores: throughput rises\n"
            "little, and each stream's first chunk and RTF stretch about in proportion to the\n"
            "busy streams. ORT's pool threads spin-wait for work by default (counted as CPU).\n"
        )
    else:
        print(
            f"On this {cores}-core machine, concurrency > cores means the streams' worker\n"
            f"threads queue for the cores (one stream alone keeps about {alone} busy).\n"
        )
    if engine_name == "piper":
        print(
            "Piper is not deterministic: the same text gives different durations and timings\n"
            "from one call to the next, so compare percentiles and aggregates, not sentences.\n"
            "Piper yields one chunk per sentence (the first piece is cut at a clause boundary),\n"
            "so the first chunk is a whole clause synthesised.\n"
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.synthesis",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--engine", default="piper", help="engine name (default piper)")
    parser.add_argument(
        "--model-dir",
        type=Path,
        default=None,
        help="model directory for engines that need one (set as VMS_<ENGINE>_MODEL_DIR)",
    )
    parser.add_argument(
        "--voice", default=None, help="speaker_id for every request (default: the engine's)"
    )
    parser.add_argument(
        "--levels",
        type=counts,
        default=DEFAULT_LEVELS,
        help="concurrency levels, comma-separated (default 1,4,16)",
    )
    parser.add_argument(
        "--passes",
        type=int,
        default=None,
        help=f"times through the {len(SENTENCES)} sentences per level "
        f"(default {DEFAULT_PASSES}; {QUICK_PASSES} with --quick)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"{QUICK_PASSES} pass: {QUICK_PASSES * len(SENTENCES)} sentences per level",
    )
    parser.add_argument(
        "--chunk-timeout",
        type=float,
        default=CHUNK_TIMEOUT_S,
        help=f"the service's chunk_timeout_s (default {CHUNK_TIMEOUT_S:g})",
    )
    args = parser.parse_args(argv)
    passes = (
        args.passes if args.passes is not None else QUICK_PASSES if args.quick else DEFAULT_PASSES
    )
    if passes < 1:
        parser.error("--passes must be at least 1")
    samples = passes * len(SENTENCES)

    logging.basicConfig(level=logging.WARNING)
    started = time.perf_counter()
    print_machine()
    # import the runtimes first, so that the thread count below is the engine's own
    for runtime in ("onnxruntime", "torch"):
        try:
            importlib.import_module(runtime)
        except ImportError:
            pass
    threads_before = _os_threads()
    loaded = time.perf_counter()
    engine = load_engine(args.engine, args.model_dir)
    load_s = time.perf_counter() - loaded
    threads_added = _os_threads() - threads_before
    print_table("Engine", ("item", "value"), engine_rows(engine, load_s, threads_added), (0, 1))
    print(
        f"Setup: {samples} sentences per run (from {len(SENTENCES)} built-in sentences, "
        f"{passes} pass(es)),\nconcurrency levels {', '.join(map(str, args.levels))}; "
        "one asyncio loop; streams read as fast as chunks come.\n",
        flush=True,
    )
    onnx = bool(_onnx_sessions(engine))
    try:
        runs = asyncio.run(measure(engine, args.levels, samples, args.voice, args.chunk_timeout))
    finally:
        engine.close()
    print()
    print_results(runs)
    base_usage = runs[0].usage
    base_cores = base_usage.cpu_s / base_usage.wall_s if base_usage.wall_s else None
    print_notes(engine.name, onnx, threads_added, base_cores)
    print(f"Total run time {time.perf_counter() - started:.1f} s.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
