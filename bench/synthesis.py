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
from collections.abc import Sequence
from dataclasses import astuple, dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np

from bench._report import counts, fmt, p50_p90_max, print_machine, print_table, system_busy_s
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
    """Clocks and counters: wall, this process's CPU (all threads), its involuntary context
    switches, the whole machine's busy CPU (``/proc/stat``). Add or subtract two."""

    wall_s: float = 0.0
    cpu_s: float = 0.0
    involuntary_switches: int = 0
    machine_busy_s: float = 0.0

    @classmethod
    def now(cls) -> Usage:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        cpu = usage.ru_utime + usage.ru_stime
        return cls(time.perf_counter(), cpu, usage.ru_nivcsw, system_busy_s())

    def plus(self, other: Usage, sign: int = 1) -> Usage:
        return Usage(*(a + sign * b for a, b in zip(astuple(self), astuple(other), strict=True)))


@dataclass
class Run:
    """All samples of one row of the tables."""

    label: str
    concurrency: int
    samples: list[Sample] = field(default_factory=list)
    usage: Usage = Usage()
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
    """What the engine is and how its runtime was set up (threads decide what N streams get)."""
    rows = [
        ("engine", f"{engine.name}, {engine.sample_rate_hz} Hz, loaded in {load_s:.2f} s"),
        ("OS threads started by loading it", str(threads_added)),
    ]
    for index, session in enumerate(_onnx_sessions(engine)):
        options = session.get_session_options()
        intra = options.intra_op_num_threads
        rows.append(
            (
                f"ONNX session {index + 1}",
                f"{', '.join(session.get_providers())}; intra-op threads"
                f" {intra or 'default (one per physical core)'}, inter-op"
                f" {options.inter_op_num_threads}, {options.execution_mode.name}",
            )
        )
    torch = sys.modules.get("torch")
    if torch is not None:
        rows.append(
            ("torch threads", f"{torch.get_num_threads()} / {torch.get_num_interop_threads()}")
        )
    return rows


# -- output ----------------------------------------------------------------------------


def _ratio(value: float | None, base: float | None) -> str:
    return "-" if value is None or not base else f"{value / base:.2f}x"


def print_results(runs: Sequence[Run]) -> None:
    baseline = runs[0]
    first_chunks = [p50_p90_max(s.first_chunk_s for s in run.samples) for run in runs]
    base_p50 = first_chunks[0][0] if first_chunks[0] else None
    print_table(
        "First chunk: request made -> first chunk in hand (ms)",
        ("run", "streams", "samples", "p50", "p90", "max", "p50 vs baseline"),
        [(run.label, str(run.concurrency), str(len(run.samples)),
          *(fmt(None if first is None else v * 1000) for v in (first or (0, 0, 0))),
          _ratio(first[0] if first else None, base_p50))
         for run, first in zip(runs, first_chunks, strict=True)],
    )  # fmt: skip
    rows: list[tuple[str, ...]] = []
    for run in runs:
        rtfs = p50_p90_max(s.synthesis_s / s.audio_s if s.audio_s else None for s in run.samples)
        busy_streams = run.synthesis_s / run.usage.wall_s if run.usage.wall_s else None
        rows.append((
            run.label, str(run.concurrency), fmt(run.audio_s), fmt(run.rtf, 3),
            fmt(rtfs[1] if rtfs else None, 3), _ratio(run.rtf, baseline.rtf),
            fmt(run.throughput, 1), _ratio(run.throughput, baseline.throughput),
            fmt(run.usage.wall_s), fmt(busy_streams, 1), f"{run.errors}/{run.refused}",
        ))  # fmt: skip
    print_table(
        "Speed: RTF = synthesis time / audio time (lower is faster)",
        ("run", "streams", "audio s", "RTF", "RTF p90", "RTF vs base", "throughput", "vs base",
         "wall s", "busy", "err/refused"),
        rows,
    )  # fmt: skip
    rows.clear()
    for run in runs:
        u = run.usage
        wall = u.wall_s or float("nan")
        rows.append((
            run.label, fmt(u.cpu_s / wall, 2), fmt(u.machine_busy_s / wall, 2),
            fmt((u.machine_busy_s - u.cpu_s) / wall, 2),
            fmt(u.cpu_s / run.audio_s if run.audio_s else None, 3),
            fmt(u.involuntary_switches / wall, 0),
        ))  # fmt: skip
    print_table(
        f"CPU (average cores busy, of {len(os.sched_getaffinity(0))}; per run's own wall time)",
        ("run", "this process", "machine", "everything else", "CPU s per audio s",
         "invol. switches/s"),
        rows,
    )  # fmt: skip
    single = next((r for r in runs if r.label == "service, concurrency 1"), None)
    if single is None:
        return
    pairs = list(zip(baseline.samples, single.samples, strict=True))
    diffs = {
        "first chunk": [(s.first_chunk_s - b.first_chunk_s) * 1000 for b, s in pairs
                        if b.first_chunk_s is not None and s.first_chunk_s is not None],
        "whole sentence (synthesis time)": [(s.synthesis_s - b.synthesis_s) * 1000
                                            for b, s in pairs],
    }  # fmt: skip
    print_table(
        "Service overhead at concurrency 1: service - engine direct, same sentence (ms)",
        ("measure", "p50", "p90", "max", "mean"),
        [(label, *(fmt(v, 2) for v in (p50_p90_max(values) or (None, None, None))),
          fmt(float(np.mean(values)) if values else None, 2))
         for label, values in diffs.items()],
    )  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.synthesis",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add("--engine", default="piper", help="engine name (default piper)")
    add("--model-dir", type=Path, help="model directory (set as VMS_<ENGINE>_MODEL_DIR)")
    add("--voice", help="speaker_id for every request (default: the engine's)")
    add("--levels", type=counts, default=DEFAULT_LEVELS, help="concurrency levels (1,4,16)")
    add("--passes", type=int, help=f"times through the sentences ({DEFAULT_PASSES}; quick 1)")
    add("--quick", action="store_true", help=f"{QUICK_PASSES} pass through the sentences")
    add("--chunk-timeout", type=float, default=CHUNK_TIMEOUT_S, help="service chunk_timeout_s")
    args = parser.parse_args(argv)
    passes = (
        args.passes if args.passes is not None else QUICK_PASSES if args.quick else DEFAULT_PASSES
    )
    if passes < 1:
        parser.error("--passes must be at least 1")
    samples = passes * len(SENTENCES)

    logging.basicConfig(level=logging.WARNING)
    started = time.perf_counter()
    print_machine(("onnxruntime", "torch", "piper-tts", "numpy"))
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
    try:
        runs = asyncio.run(measure(engine, args.levels, samples, args.voice, args.chunk_timeout))
    finally:
        engine.close()
    print()
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
