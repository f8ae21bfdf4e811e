"""Check a running server container from outside, as a client would (scripts/container-check.sh).

Not a pytest test: ``python -m tests.container_probe --base-url URL --token TOKEN`` from the
repository root, against a server started elsewhere (the container). It

1. checks the operator token is enforced (``POST /tts`` without it: 401);
2. ``POST /tts`` with it: the answer streams PCM that carries speech;
3. opens one WHEP session with the real aiortc client (tests/whep_client.py), says a
   sentence and checks frames with speech energy arrive;
4. scrapes ``GET /metrics`` with the token and parses it with prometheus_client: the
   families an operator graphs are there, and the work above is counted;
5. with ``--stop-cmd``: says a sentence and, while it plays to the attached client, runs
   the command (``podman stop ...``), so the server is stopped as it would be in
   production, mid-speech: ``/readyz`` must turn 503 while the sentence plays on to its
   ``speech.done`` (not cut), and the command's duration is measured.

Exits 0 when everything worked, 1 when something did not; ``--result FILE`` gets the
measurements as JSON. ``--print-ice-address`` only prints the address this machine reaches
other hosts from (the server's ICE host candidate), or 127.0.0.1 without a route.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shlex
import socket
import sys
import time
from pathlib import Path
from typing import Any, Final

import aiohttp
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from tests.whep_client import WhepClient

SPEECH_RMS: Final = 300.0
"""int16 RMS above which a 20 ms frame counts as speech (about -40 dBFS); encoded silence
decodes to almost exactly 0."""
MIN_SPEECH_FRAMES: Final = 25
"""Frames of speech (0.5 s) the WHEP session must hear."""
MIN_TTS_SPEECH_S: Final = 0.5
TTS_TEXT: Final = "The container answers over HTTP. One, two, three."
SAY_TEXT: Final = "Hello from the container check. The audio arrives over WebRTC."
STOP_TEXT: Final = (
    "This sentence still plays to its end when the container is told to stop, "
    "because the server drains first."
)
"""About 4 s of speech: inside the default drain (``VMS_DRAIN_TIMEOUT_S``, 8 s)."""
FAMILIES: Final = (
    "vms_text_to_first_rtp_seconds",
    "vms_tts_request_to_first_byte_seconds",
    "vms_engine_first_chunk_seconds",
    "vms_engine_real_time_factor",
    "vms_frame_send_lateness_seconds",
    "vms_rtcp_fraction_lost",
    "vms_tts_requests",
    "vms_refusals",
    "vms_sessions",
    "vms_synthesis_slots_busy",
    "vms_event_loop_lag_seconds",
    "process_resident_memory_bytes",
)
"""A family from each group of docs/operations.md (counters without ``_total``, as parsed)."""
AUDIO_WAIT_S: Final = 30.0
"""Longest wait for speech on the WHEP session (a cold engine's first request included)."""
STOP_WAIT_S: Final = 60.0


class CheckFailed(Exception):
    pass


async def event(client: WhepClient, event_type: str, about: str) -> dict[str, Any]:
    """The next ``event_type`` on the data channel, or :class:`CheckFailed` saying what waited."""
    try:
        return await client.next_event(event_type, wait_s=AUDIO_WAIT_S)
    except TimeoutError:
        raise CheckFailed(f"WHEP: no {event_type} for {about} within {AUDIO_WAIT_S:g} s") from None


def ice_address() -> str:
    """The source address of this machine's default route (no packet is sent), else loopback.

    Offered alone as the server's ICE host candidate it is what a client elsewhere would use,
    and it spares ICE the pairs of every bridge and tunnel a CI machine may have.
    """
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.connect(("198.51.100.1", 9))  # TEST-NET-2: routing only, nothing is sent
            address = str(sock.getsockname()[0])
    except OSError:
        return "127.0.0.1"
    return address if address != "0.0.0.0" else "127.0.0.1"


def log(message: str) -> None:
    print(f"container probe: {message}", flush=True)  # noqa: T201


async def check_tts(http: aiohttp.ClientSession, base_url: str, token: str) -> dict[str, Any]:
    body = {"text": TTS_TEXT, "format": "pcm"}
    async with http.post(f"{base_url}/tts", json=body) as anonymous:
        if anonymous.status != 401:
            raise CheckFailed(f"POST /tts without the token: HTTP {anonymous.status}, wanted 401")
    sent = time.monotonic()
    first_byte_s: float | None = None
    pcm = bytearray()
    headers = {"Authorization": f"Bearer {token}"}
    async with http.post(f"{base_url}/tts", json=body, headers=headers) as resp:
        if resp.status != 200:
            raise CheckFailed(f"POST /tts: HTTP {resp.status}: {await resp.text()}")
        rate = int(resp.headers.get("X-Sample-Rate", "0"))
        async for chunk in resp.content.iter_any():
            if first_byte_s is None and chunk:
                first_byte_s = time.monotonic() - sent
            pcm += chunk
    if first_byte_s is None or rate <= 0:
        raise CheckFailed(f"POST /tts: no audio (X-Sample-Rate {rate}, {len(pcm)} bytes)")
    samples = np.frombuffer(bytes(pcm[: len(pcm) // 2 * 2]), dtype="<i2").astype(np.float64)
    frame = rate // 50
    frames = samples[: samples.size // frame * frame].reshape(-1, frame)
    speech_s = int((np.sqrt((frames**2).mean(axis=1)) > SPEECH_RMS).sum()) / 50
    if speech_s < MIN_TTS_SPEECH_S:
        raise CheckFailed(f"POST /tts: {samples.size / rate:.2f} s of audio, {speech_s} s speech")
    log(f"POST /tts: {samples.size / rate:.2f} s at {rate} Hz ({speech_s:.2f} s speech)")
    return {"tts_first_byte_ms": round(first_byte_s * 1000), "tts_audio_s": samples.size / rate}


async def first_speech(client: WhepClient, after: float) -> float:
    """Seconds from ``after`` to the first speech frame, once enough speech has arrived."""
    deadline = time.monotonic() + AUDIO_WAIT_S
    while time.monotonic() < deadline:
        speech = [f for f in client.frames if f.arrival >= after and f.rms > SPEECH_RMS]
        if len(speech) >= MIN_SPEECH_FRAMES:
            return speech[0].arrival - after
        await asyncio.sleep(0.05)
    heard = sum(1 for f in client.frames if f.arrival >= after and f.rms > SPEECH_RMS)
    raise CheckFailed(
        f"WHEP: {heard} speech frames within {AUDIO_WAIT_S:g} s "
        f"({len(client.frames)} frames received in all)"
    )


async def check_metrics(http: aiohttp.ClientSession, base_url: str, token: str) -> None:
    """``/metrics`` needs the token, parses, has every group's families and counted the
    ``/tts`` request and the WHEP sentence above."""
    async with http.get(f"{base_url}/metrics") as resp:
        if resp.status != 401:
            raise CheckFailed(f"GET /metrics without the token: {resp.status}, not 401")
    operator = {"Authorization": f"Bearer {token}"}
    async with http.get(f"{base_url}/metrics", headers=operator) as resp:
        if resp.status != 200:
            raise CheckFailed(f"GET /metrics: {resp.status}")
        text = await resp.text()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    missing = [name for name in FAMILIES if name not in families]
    if missing:
        raise CheckFailed(f"GET /metrics lacks {', '.join(missing)}")

    def value(family: str, sample: str, **labels: str) -> float:
        return sum(
            s.value
            for s in families[family].samples
            if s.name == sample and labels.items() <= s.labels.items()
        )

    requests = value("vms_tts_requests", "vms_tts_requests_total", api="http", status="200")
    first_rtp = value(
        "vms_text_to_first_rtp_seconds", "vms_text_to_first_rtp_seconds_count", kind="session"
    )
    if requests < 1 or first_rtp < 1:
        raise CheckFailed(f"GET /metrics: {requests} /tts requests, {first_rtp} first RTP")
    log(f"GET /metrics: {len(families)} families, {len(text)} bytes")


async def stop_mid_speech(
    http: aiohttp.ClientSession, base_url: str, client: WhepClient, stop_cmd: str
) -> float:
    """Run ``stop_cmd`` while a sentence plays to the attached client: readiness must go,
    the sentence must finish; returns the command's seconds."""
    client.say(STOP_TEXT, "stop")
    await event(client, "speech.started", "the sentence before the stop")
    await asyncio.sleep(1.0)
    log(f"stopping mid-speech: {stop_cmd}")
    started = time.monotonic()
    process = await asyncio.create_subprocess_exec(
        *shlex.split(stop_cmd), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    ready = 200
    while ready == 200 and time.monotonic() - started < 2.0:
        await asyncio.sleep(0.1)
        async with http.get(f"{base_url}/readyz") as resp:
            ready = resp.status
    if ready != 503:
        raise CheckFailed(f"/readyz answered {ready} while draining, not 503")
    done = await event(client, "speech.done", "the sentence during the stop")
    played, source = done["duration_ms"], done["source_duration_ms"] - done["trimmed_ms"]
    if played < source - 40:  # two frames of rounding
        raise CheckFailed(f"the sentence was cut by the stop: {played} of {source:.0f} ms played")
    log(f"draining: /readyz 503; the sentence played to its end ({played} of {source:.0f} ms)")
    try:
        output, _ = await asyncio.wait_for(process.communicate(), STOP_WAIT_S)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise CheckFailed(f"{stop_cmd!r} still running after {STOP_WAIT_S:g} s") from None
    if process.returncode != 0:
        raise CheckFailed(f"{stop_cmd!r} exited {process.returncode}: {output.decode()[-2000:]}")
    return time.monotonic() - started


async def check_whep(
    http: aiohttp.ClientSession, base_url: str, token: str, stop_cmd: str | None
) -> dict[str, Any]:
    client = WhepClient(base_url)
    results: dict[str, Any] = {}
    try:
        connecting = time.monotonic()
        await client.connect(http, headers={"Authorization": f"Bearer {token}"})
        log(f"WHEP session {client.location}: connected in {time.monotonic() - connecting:.2f} s")
        said = time.monotonic()
        client.say(SAY_TEXT, "hello")
        results["whep_first_audio_ms"] = round(await first_speech(client, said) * 1000)
        await event(client, "speech.done", "the sentence")
        speech = sum(1 for f in client.frames if f.arrival >= said and f.rms > SPEECH_RMS)
        log(f"WHEP: {speech} speech frames ({speech * 20} ms) for the sentence")
        await check_metrics(http, base_url, token)
        if stop_cmd is not None:
            results["stop_s"] = round(await stop_mid_speech(http, base_url, client, stop_cmd), 2)
    finally:
        # After a stop the server is gone: no DELETE, only the local peer is closed.
        await client.close(http if stop_cmd is None else None)
    return results


async def run(args: argparse.Namespace) -> dict[str, Any]:
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        results = await check_tts(http, args.base_url, args.token)
        results |= await check_whep(http, args.base_url, args.token, args.stop_cmd)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--base-url", help="the server, e.g. http://127.0.0.1:8080")
    parser.add_argument("--token", help="the operator token the server was started with")
    parser.add_argument("--stop-cmd", help="stop the server with this while it speaks")
    parser.add_argument("--result", type=Path, help="write the measurements here as JSON")
    parser.add_argument("--print-ice-address", action="store_true")
    args = parser.parse_args(argv)
    if args.print_ice_address:
        print(ice_address())  # noqa: T201
        return 0
    if not args.base_url or not args.token:
        parser.error("--base-url and --token are required")
    try:
        results = asyncio.run(run(args))
    except (CheckFailed, AssertionError, TimeoutError, aiohttp.ClientError) as exc:
        log(f"FAILED: {type(exc).__name__}: {exc}")
        return 1
    log("ok " + json.dumps(results))
    if args.result is not None:
        args.result.write_text(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
