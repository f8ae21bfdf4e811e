"""First-chunk latency and real-time factor of an engine behind ``SynthesisService``.

Run from the repository root::

    python -m bench.synthesis [--quick] [--passes N] [--levels 1,4,16]
    python -m bench.synthesis --engine cosyvoice --model-dir DIR

Per concurrency level N, ``SynthesisService(engine, max_concurrent=N)`` runs N streams at
once on one loop, each taking the shared sentences in turn (``--passes`` times). The
baseline, the engine called directly in one long-lived thread, alternates sentence by
sentence with the concurrency-1 streams: their difference is the service's own cost.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import importlib.metadata
import logging
import math
import os
import resource
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import astuple, dataclass, field
from pathlib import Path
from typing import Final

import numpy as np

from bench._report import (
    SENTENCES,
    command_line,
    counts,
    fmt,
    p50_p90_max,
    print_machine,
    print_table,
    system_busy_s,
)
from synthesis import (
    ClientError,
    Engine,
    EngineBusy,
    SynthesisError,
    SynthesisRequest,
    SynthesisService,
    create_engine,
)

DEFAULT_LEVELS: Final = (1, 4, 16)
DEFAULT_PASSES: Final = 3
"""Times through SENTENCES per run: 60 samples per level."""
QUICK_PASSES: Final = 1
"""20 samples per level."""
CHUNK_TIMEOUT_S: Final = 300.0
"""Generous: at high concurrency a slow engine's first chunk may legitimately take long."""

WARM_UP: Final = "Warming up the voice before anything is measured."


@dataclass(frozen=True, slots=True)
class Sample:
    """One sentence synthesised, either directly or through the service."""

    text: str
    first_chunk_s: float | None
    """Request made -> first chunk in hand; None when no audio came."""
    synthesis_s: float
    """Request made -> last chunk in hand (or the error)."""
    audio_s: float
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Usage:
    """Wall clock, this process's CPU (all threads), the whole machine's busy CPU
    (``/proc/stat``); add or subtract two."""

    wall_s: float = 0.0
    cpu_s: float = 0.0
    machine_busy_s: float = 0.0

    @classmethod
    def now(cls) -> Usage:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        cpu = usage.ru_utime + usage.ru_stime
        return cls(time.perf_counter(), cpu, system_busy_s())

    def plus(self, other: Usage, sign: int = 1) -> Usage:
        return Usage(*(a + sign * b for a, b in zip(astuple(self), astuple(other), strict=True)))


@dataclass
class Run:
    """All samples of one row of the tables; ``refused``: EngineBusy answers (retried;
    the service is sized so that it stays 0)."""

    label: str
    concurrency: int
    samples: list[Sample] = field(default_factory=list)
    usage: Usage = Usage()
    refused: int = 0

    @property
    def audio_s(self) -> float:
        return sum(s.audio_s for s in self.samples)

    @property
    def synthesis_s(self) -> float:
        return sum(s.synthesis_s for s in self.samples)

    @property
    def rtf(self) -> float | None:
        return self.synthesis_s / self.audio_s if self.audio_s else None

    @property
    def throughput(self) -> float | None:
        """Audio seconds produced per wall second, all streams together."""
        return self.audio_s / self.usage.wall_s if self.usage.wall_s else None


def synthesize_direct(engine: Engine, request: SynthesisRequest) -> Sample:
    """The baseline: the engine's blocking generator, drained in the calling thread."""
    first: float | None = None
    audio = 0.0
    started = time.perf_counter()
    try:
        for chunk in engine.synthesize(request, threading.Event()):
            first = time.perf_counter() - started if first is None else first
            audio += chunk.duration_s
    except Exception as exc:  # reported in the tables, not fatal
        return Sample(request.text, first, time.perf_counter() - started, audio, repr(exc))
    return Sample(request.text, first, time.perf_counter() - started, audio)


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
    error: str | None = None
    try:
        async for chunk in stream:
            first = time.perf_counter() - started if first is None else first
            audio += chunk.duration_s
    except ClientError as exc:
        error = f"{exc.code}: {exc.message}"
    finally:
        ended = time.perf_counter()
        await stream.aclose()
    return Sample(request.text, first, ended - started, audio, error)


def requests(count: int, voice: str | None) -> list[SynthesisRequest]:
    """``count`` requests cycling through SENTENCES, in order."""
    return [SynthesisRequest(SENTENCES[i % len(SENTENCES)], speaker_id=voice) for i in range(count)]


async def run_paired(
    engine: Engine, direct: Executor, samples: int, voice: str | None, timeout_s: float
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
                    loop = asyncio.get_running_loop()
                    sample = await loop.run_in_executor(direct, synthesize_direct, engine, request)
                else:
                    sample = await synthesize_service(service, request, run)
                run.usage = run.usage.plus(Usage.now().plus(before, -1))
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
        run.usage = Usage.now().plus(before, -1)
    finally:
        service.close()
    # in sentence order, so that every level lists the same sentences in the same order
    run.samples = [per_stream[i % concurrency][i // concurrency] for i in range(len(sequence))]
    return run


async def measure(
    engine: Engine, levels: Sequence[int], samples: int, voice: str | None, timeout_s: float
) -> list[Run]:
    """The baseline and every level, in order; the baseline is measured even without level 1."""
    # One long-lived thread, as the service's workers are (a thread per call is slower).
    direct = ThreadPoolExecutor(1, thread_name_prefix="baseline-engine")
    try:
        # warm-up (first ONNX Runtime/espeak runs are slower; a stream loads lazy imports)
        warm_up = SynthesisRequest(text=WARM_UP, speaker_id=voice)
        await asyncio.get_running_loop().run_in_executor(direct, synthesize_direct, engine, warm_up)
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
        direct.shutdown()


def load_engine(name: str, model_dir: Path | None) -> Engine:
    """Build ``name``; ``model_dir`` goes in ``VMS_<NAME>_MODEL_DIR`` (how the CosyVoice
    factory finds its model; Piper needs nothing)."""
    if model_dir is not None:
        os.environ[f"VMS_{name.upper()}_MODEL_DIR"] = str(model_dir)
    try:
        return create_engine(name)
    except (ImportError, ValueError, SynthesisError) as exc:
        raise SystemExit(f"engine {name!r} could not be built here: {exc}") from None


def engine_rows(engine: Engine, load_s: float, threads_added: int) -> list[tuple[str, str]]:
    """What the engine is and how many threads its runtime started (they decide what N
    streams get: ONNX Runtime's intra-op pool defaults to one thread per physical core)."""
    torch = sys.modules.get("torch")
    return [
        ("engine", f"{engine.name}, {engine.sample_rate_hz} Hz, loaded in {load_s:.2f} s"),
        ("OS threads started by loading it", str(threads_added)),
        *((("torch threads", f"{torch.get_num_threads()}"),) if torch is not None else ()),
    ]


def _ratio(value: float | None, base: float | None) -> str:
    return "-" if value is None or not base else f"{value / base:.2f}x"


def print_results(runs: Sequence[Run]) -> None:
    base = runs[0]
    base_first = p50_p90_max(s.first_chunk_s for s in base.samples)
    first, speed = [], []
    for run in runs:
        chunk = p50_p90_max(s.first_chunk_s for s in run.samples)
        ms = [fmt(v * 1000) for v in chunk] if chunk else ["-"] * 3
        ratio = _ratio(chunk[0] if chunk else None, base_first[0] if base_first else None)
        first.append([run.label, str(run.concurrency), str(len(run.samples)), *ms, ratio])
        rtfs = p50_p90_max(s.synthesis_s / s.audio_s if s.audio_s else None for s in run.samples)
        u = run.usage
        wall = u.wall_s or float("nan")
        errors = sum(x.error is not None for x in run.samples)
        speed.append([
            run.label, str(run.concurrency), fmt(run.audio_s), fmt(run.rtf, 3),
            fmt(rtfs[1] if rtfs else None, 3), _ratio(run.rtf, base.rtf),
            fmt(run.throughput, 1), _ratio(run.throughput, base.throughput), fmt(wall),
            fmt(run.synthesis_s / wall, 1), f"{errors}/{run.refused}",
            f"{u.cpu_s / wall:.2f} / {max(0.0, u.machine_busy_s - u.cpu_s) / wall:.2f}",
        ])  # fmt: skip
    print_table(
        "First chunk: request made -> first chunk in hand (ms)",
        "run|streams|samples|p50|p90|max|p50 vs baseline".split("|"),
        first,
    )
    print_table(
        "Speed: RTF = synthesis time / audio time (lower is faster)",
        "run|streams|audio s|RTF|RTF p90|RTF vs base|throughput|vs base|wall s|busy|err/refused"
        "|cores: this process / the rest".split("|"),
        speed,
    )  # fmt: skip
    single = next((r for r in runs if r.label == "service, concurrency 1"), None)
    if single is None:
        return
    pairs = list(zip(base.samples, single.samples, strict=True))
    diffs = {
        "first chunk": [
            (s.first_chunk_s - b.first_chunk_s) * 1000
            for b, s in pairs
            if b.first_chunk_s is not None and s.first_chunk_s is not None
        ],
        "whole sentence (synthesis time)": [
            (s.synthesis_s - b.synthesis_s) * 1000 for b, s in pairs
        ],
    }
    rows = []
    for label, values in diffs.items():
        stats = [fmt(v, 2) for v in p50_p90_max(values) or (None, None, None)]
        rows.append([label, *stats, fmt(float(np.mean(values)) if values else None, 2)])
    print_table(
        "Service overhead at concurrency 1: service - engine direct, same sentence (ms)",
        "measure|p50|p90|max|mean".split("|"),
        rows,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = command_line("bench.synthesis", __doc__)
    add = parser.add_argument
    add("--engine", default="piper", help="engine name (default piper)")
    add("--model-dir", type=Path, help="model directory (set as VMS_<ENGINE>_MODEL_DIR)")
    add("--voice", help="speaker_id for every request (default: the engine's)")
    add("--levels", type=counts, default=DEFAULT_LEVELS, help="concurrency levels (1,4,16)")
    add("--passes", type=int, help=f"times through the sentences ({DEFAULT_PASSES}; quick 1)")
    add("--quick", action="store_true", help=f"{QUICK_PASSES} pass through the sentences")
    add("--chunk-timeout", type=float, default=CHUNK_TIMEOUT_S, help="service chunk_timeout_s")
    args = parser.parse_args(argv)
    passes = max(1, args.passes or (QUICK_PASSES if args.quick else DEFAULT_PASSES))
    samples = passes * len(SENTENCES)
    logging.basicConfig(level=logging.WARNING)
    started = time.perf_counter()
    print_machine(("onnxruntime", "torch", "piper-tts", "numpy"))
    # import the runtimes first, so that the thread count below is the engine's own
    for runtime in ("onnxruntime", "torch"):
        with contextlib.suppress(ImportError):
            importlib.import_module(runtime)
    threads_before, loaded = len(os.listdir("/proc/self/task")), time.perf_counter()
    engine = load_engine(args.engine, args.model_dir)
    load_s = time.perf_counter() - loaded
    threads_added = len(os.listdir("/proc/self/task")) - threads_before
    print_table("Engine", ("item", "value"), engine_rows(engine, load_s, threads_added), (0, 1))
    print(f"{samples} sentences per level ({passes} pass(es)).\n", flush=True)
    try:
        runs = asyncio.run(measure(engine, args.levels, samples, args.voice, args.chunk_timeout))
    finally:
        engine.close()
    print_results(runs)
    print(
        "RTF = per-sentence synthesis times / audio durations (per stream: above the core\n"
        "count it grows with the queueing); throughput = audio s per wall s, all streams;\n"
        "busy = mean streams synthesising; err/refused = failed sentences / EngineBusy\n"
        "answers (both should be 0).\n"
    )
    print(f"Total run time {time.perf_counter() - started:.1f} s.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
