"""What hostile input costs the server, against the same amount of well-behaved input.

    python -m bench.hostile [--quick]

``voice-media-server`` runs in its own process (real Piper voice, no operator token); the
bench reaches it only over HTTP and WebRTC and reads its RSS from ``/proc``. While each
case runs, one WebRTC listener hears a long utterance and the server's pacing figures for
it (``GET /whep/{id}/stats``) show whether the event loop was held. Cases, each beside its
baseline: a candidate flood (1000 candidates in one ``PATCH``, then 50 more ``PATCH``es;
baseline one ``PATCH`` of 10); nested JSON ``POST /tts`` bodies (baseline: flat bodies,
also refused); four ``POST /tts`` clients that never read (a live ``say`` meanwhile, and
when their slots come back); reference-clip bombs decoded in a fresh process each.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import textwrap
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiohttp

from bench._report import LOOPBACK, ServerProcess, print_machine, print_table
from tests.whep_client import WhepClient, make_offer

SDP = {"Content-Type": "application/sdp"}
FRAG = {"Content-Type": "application/trickle-ice-sdpfrag"}
JSON = {"Content-Type": "application/json"}
LONG_TEXT = (
    "The quick brown fox jumps over the lazy dog, and the dog, who has seen this before, "
    "does not even look up. "
) * 6


def candidate_lines(count: int, first_port: int) -> str:
    return "".join(
        f"a=candidate:{i} 1 udp {2122260223 - i} 127.0.0.2 {first_port + i} typ host\r\n"
        for i in range(count)
    )


@dataclass(frozen=True, slots=True)
class Outcome:
    case: str
    requests: int
    statuses: str
    wall_ms: float
    lateness_max_ms: float
    skipped_frames: int
    rss_delta_mb: float


def start_server() -> ServerProcess:
    """No operator token (hostile clients have none), every per-client bound off (one address)."""
    bounds_off = {f"VMS_MAX_{k}_PER_CLIENT": "0" for k in ("PENDING_SESSIONS", "SYNTHESES")}
    return ServerProcess({**bounds_off, "VMS_HTTP_WRITE_TIMEOUT_S": "5"}, operator=False)


async def while_listening(
    server: ServerProcess,
    http: aiohttp.ClientSession,
    case: str,
    work: Callable[[], Awaitable[list[int]]],
) -> Outcome:
    """Run ``work`` while a listener hears speech; what its pacing and the RSS show."""
    listener = WhepClient(server.base)
    await listener.connect(http)
    try:
        listener.say(LONG_TEXT, "long")
        await listener.next_event("speech.started", wait_s=30)
        before = server.rss_mb()
        start = time.perf_counter()
        statuses = await work()
        wall_ms = (time.perf_counter() - start) * 1000
        await asyncio.sleep(0.5)
        rss = server.rss_mb() - before
        async with http.get(f"{server.base}{listener.location}/stats") as resp:
            stats = await resp.json()
    finally:
        await listener.close(http)
    counted = sorted({s: statuses.count(s) for s in statuses}.items())
    return Outcome(
        case,
        len(statuses),
        " ".join(f"{n}x{s}" for s, n in counted),
        wall_ms,
        float(stats["lateness_max_ms"]),
        int(stats["skipped_frames"]),
        rss,
    )


async def trickle(server: ServerProcess, http: aiohttp.ClientSession, hostile: bool) -> list[int]:
    async with http.post(
        f"{server.base}/whep", data=await make_offer(end_of_candidates=False), headers=SDP
    ) as r:
        location, etag = r.headers["Location"], r.headers["ETag"]
    url = f"{server.base}{location}"
    statuses = []
    batches = [candidate_lines(1000, 20_000)] if hostile else [candidate_lines(10, 20_000)]
    if hostile:
        batches += [candidate_lines(20, 30_000 + 20 * i) for i in range(50)]
    for body in batches:
        # the current ETag: the candidates, not the precondition, are what is measured
        async with http.patch(url, data=body, headers={**FRAG, "If-Match": etag}) as resp:
            statuses.append(resp.status)
    async with http.delete(url):
        pass
    return statuses


async def nested(
    server: ServerProcess, http: aiohttp.ClientSession, hostile: bool, n: int
) -> list[int]:
    body = "[" * 2000 + "]" * 2000 if hostile else json.dumps({"text": [0] * 1330})
    statuses = []
    for _ in range(n):
        async with http.post(f"{server.base}/tts", data=body, headers=JSON) as resp:
            statuses.append(resp.status)
    return statuses


async def slow_reader(server: ServerProcess, text: str) -> asyncio.StreamWriter:
    """A ``POST /tts`` whose client never reads: its socket buffers fill, then nothing."""
    reader, writer = await asyncio.open_connection(LOOPBACK, server.port)
    body = json.dumps({"text": text, "format": "pcm"}).encode()
    writer.write(
        f"POST /tts HTTP/1.1\r\nHost: {LOOPBACK}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    await writer.drain()
    return writer


async def slow_readers(
    server: ServerProcess, http: aiohttp.ClientSession, hostile: bool
) -> tuple[float, float]:
    """Milliseconds from a live ``say`` to its first event while four clients read
    nothing (or none), and seconds until their synthesis slots are given back."""
    writers = [await slow_reader(server, LONG_TEXT * 3) for _ in range(4)] if hostile else []
    await asyncio.sleep(1.0)
    probe = WhepClient(server.base)
    await probe.connect(http)
    said = time.perf_counter()
    probe.say("It is easy.", "probe")
    event = await probe.next_event(wait_s=30)
    first_ms = (time.perf_counter() - said) * 1000 if event["type"] != "error" else float("nan")
    await probe.close(http)
    start = time.perf_counter()
    while True:
        async with http.get(f"{server.base}/stats") as resp:
            running = (await resp.json())["synthesis"]["http_running"]
        if not running or time.perf_counter() - start > 60:
            break
        await asyncio.sleep(0.2)
    released_s = time.perf_counter() - start + 1.0  # the second waited before the say
    for writer in writers:
        writer.close()
    return first_ms, released_s if hostile else 0.0


DECODE_CHILD = textwrap.dedent(
    """
    import base64, json, resource, sys, time
    from synthesis.reference import decode_reference_audio
    from synthesis.request import RequestError, RequestLimits
    blob = base64.b64decode(sys.stdin.read())
    start = time.perf_counter()
    try:
        decode_reference_audio(blob, RequestLimits())
        result = "decoded"
    except RequestError as exc:
        result = exc.code
    elapsed = time.perf_counter() - start
    print(json.dumps({"ms": elapsed * 1000, "result": result,
                      "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
    """
)


def decode_in_child(blob: bytes) -> dict[str, object]:
    import base64

    out = subprocess.run(
        [sys.executable, "-c", DECODE_CHILD],
        input=base64.b64encode(blob).decode(),
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def decoder_rows() -> list[list[str]]:
    from tests.synthesis.test_hardening_reference import flac_bomb, tone_s16, wav_header

    cases = {
        "FLAC 81 bytes, 1 Hz": flac_bomb(stream_rate_hz=1),
        "WAV claims 4 GB, 1 Hz": wav_header(1, 1, 0xFFFFFFF0) + tone_s16(48_000),
        "baseline: real 30 s WAV, 16 kHz": wav_header(16_000, 1, 2 * 16_000 * 30)
        + tone_s16(16_000 * 30),
    }
    rows = []
    for name, blob in cases.items():
        got = decode_in_child(blob)
        rows.append([name, f"{len(blob)}", str(got["result"]), f"{got['ms']:.1f}",
                     f"{got['peak_mb']:.0f}"])  # fmt: skip
    return rows


async def run(quick: bool) -> None:
    n = 10 if quick else 50
    server = start_server()
    outcomes: list[Outcome] = []
    says: dict[str, tuple[float, float]] = {}
    try:
        async with aiohttp.ClientSession() as http:
            await server.ready(http)
            start_rss = server.rss_mb()
            for hostile in (False, True):
                label = "hostile" if hostile else "baseline"

                async def flood(h: bool = hostile) -> list[int]:
                    return await trickle(server, http, h)

                async def deep(h: bool = hostile) -> list[int]:
                    return await nested(server, http, h, n)

                outcomes.append(await while_listening(server, http, f"trickle, {label}", flood))
                outcomes.append(await while_listening(server, http, f"nested JSON, {label}", deep))
                says[label] = await slow_readers(server, http, hostile)
            final_rss = server.rss_mb()
    finally:
        server.stop()
    print_machine(["aiortc", "aiohttp", "av"])
    print_table(
        "Hostile input against its baseline, while one listener hears speech "
        "(server's own pacing figures for that listener)",
        ["case", "requests", "answers", "wall ms", "lateness max ms", "skipped", "RSS +MB"],
        [[o.case, str(o.requests), o.statuses, f"{o.wall_ms:.0f}", f"{o.lateness_max_ms:.1f}",
          str(o.skipped_frames), f"{o.rss_delta_mb:+.1f}"] for o in outcomes],
    )  # fmt: skip
    print_table(
        "Slow /tts readers (4 that never read, write timeout 5 s): a live say meanwhile",
        ["run", "say -> first event ms", "their slots back after s"],
        [[label, f"{v[0]:.0f}", f"{v[1]:.1f}"] for label, v in says.items()],
    )
    print_table(
        "Reference-clip decoder, one fresh process per clip",
        ["clip", "bytes", "result", "ms", "peak RSS MB"],
        decoder_rows(),
    )
    print(f"server RSS: {start_rss:.0f} MB at start, {final_rss:.0f} MB at the end")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests (CI)")
    asyncio.run(run(parser.parse_args().quick))


if __name__ == "__main__":
    main()
