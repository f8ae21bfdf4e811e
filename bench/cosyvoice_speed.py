"""First-chunk latency and real-time factor of ``CosyVoiceEngine`` at several concurrencies.

Run from the repository root (needs the ``cosyvoice`` extra)::

    python -m bench.cosyvoice_speed                 # tiny random model, built in a temp dir
    python -m bench.cosyvoice_speed --full-size     # released architecture, random weights (GPU)
    python -m bench.cosyvoice_speed --model-dir DIR # a real CosyVoice2 model directory

N streams (``--levels``, default 1,4,16) call ``engine.synthesize`` at once, each in
its own thread, each speaking ``--sentences`` sentences one after another. Random
weights rarely emit EOS, so the speech length is forced by ``--max-token-text-ratio``:
the built models use a byte-level tokenizer, and 2 speech tokens (80 ms) per byte is
about a normal English speaking rate. Measured per request: first chunk (call ->
first chunk), synthesis time and audio produced; RTF = synthesis time / audio.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SENTENCES = (
    "The quick brown fox jumps over the lazy dog.",
    "Please call me back when you get this message.",
    "It is going to rain later this afternoon, so bring a coat.",
    "Our meeting has moved to three o'clock on Thursday.",
)


@dataclass(frozen=True, slots=True)
class Sample:
    first_chunk_s: float
    synthesis_s: float
    audio_s: float


def _speak(engine: Any, text: str) -> Sample:
    from synthesis.request import SynthesisRequest

    started = time.perf_counter()
    first = 0.0
    audio_s = 0.0
    for chunk in engine.synthesize(SynthesisRequest(text), threading.Event()):
        if not first:
            first = time.perf_counter() - started
        audio_s += chunk.duration_s
    return Sample(first, time.perf_counter() - started, audio_s)


def run_level(engine: Any, streams: int, sentences: int) -> tuple[list[Sample], float]:
    samples: list[Sample] = []
    lock = threading.Lock()

    def stream(index: int) -> None:
        for n in range(sentences):
            sample = _speak(engine, SENTENCES[(index + n) % len(SENTENCES)])
            with lock:
                samples.append(sample)

    threads = [threading.Thread(target=stream, args=(i,)) for i in range(streams)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return samples, time.perf_counter() - started


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def machine_rows(engine: Any, load_s: float, model: str) -> list[tuple[str, str]]:
    import torch

    device = "cpu"
    if torch.cuda.is_available():
        device = f"cuda: {torch.cuda.get_device_name(0)}"
    return [
        ("machine", f"{platform.node()} {platform.machine()}, {os.cpu_count()} CPUs"),
        ("python / torch", f"{platform.python_version()} / {torch.__version__}"),
        ("device", device),
        ("torch intra-op threads", str(torch.get_num_threads())),
        ("model", model),
        ("engine load", f"{load_s:.1f} s"),
        ("first hop", f"{engine.config.first_hop_tokens} tokens"),
        ("speech tokens per text token", f"{engine.config.max_token_text_ratio:g}"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, help="an existing CosyVoice2 model dir")
    parser.add_argument("--full-size", action="store_true", help="build the released size")
    parser.add_argument("--levels", default="1,4,16", help="concurrency levels")
    parser.add_argument("--sentences", type=int, default=2, help="sentences per stream")
    parser.add_argument("--max-token-text-ratio", type=float, default=2.0)
    parser.add_argument("--first-hop-tokens", type=int, default=25)
    args = parser.parse_args()

    from synthesis.cosyvoice import CosyVoiceConfig, CosyVoiceEngine

    with tempfile.TemporaryDirectory(prefix="cosyvoice-bench-") as scratch:
        model_dir = args.model_dir
        model = str(model_dir)
        if model_dir is None:
            from tests.synthesis.cosyvoice.tiny_model import FULL, TINY, build_model_dir

            size = FULL if args.full_size else TINY
            model = f"{'full-size' if args.full_size else 'tiny'} random CosyVoice2"
            built = time.perf_counter()
            model_dir = build_model_dir(Path(scratch) / "model", size)
            model += f" (built in {time.perf_counter() - built:.0f} s)"
        config = CosyVoiceConfig(
            model_dir=model_dir,
            max_token_text_ratio=args.max_token_text_ratio,
            first_hop_tokens=args.first_hop_tokens,
            request_timeout_s=600.0,
            chunk_timeout_s=300.0,
            voices_dir=Path(scratch),
        )
        started = time.perf_counter()
        engine = CosyVoiceEngine(config)
        load_s = time.perf_counter() - started
        _speak(engine, "Warm up.")
        print()  # noqa: T201
        for key, value in machine_rows(engine, load_s, model):
            print(f"  {key:<30} {value}")  # noqa: T201
        header = (
            f"\n  {'streams':>7} {'requests':>8} {'first p50':>10} {'first p90':>10} "
            f"{'RTF mean':>9} {'audio/wall':>10} {'wall':>7}"
        )
        print(header)  # noqa: T201
        for level in (int(x) for x in args.levels.split(",")):
            samples, wall_s = run_level(engine, level, args.sentences)
            firsts = [s.first_chunk_s * 1000 for s in samples]
            rtf = statistics.mean(s.synthesis_s / s.audio_s for s in samples if s.audio_s)
            audio = sum(s.audio_s for s in samples)
            print(  # noqa: T201
                f"  {level:>7} {len(samples):>8} {_pct(firsts, 0.5):>8.0f}ms "
                f"{_pct(firsts, 0.9):>8.0f}ms {rtf:>9.3f} {audio / wall_s:>9.2f}x "
                f"{wall_s:>6.1f}s",
                flush=True,
            )
        engine.close()


if __name__ == "__main__":
    main()
