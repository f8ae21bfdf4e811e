"""SIGTERM to a real ``python -m signaling``: the sentence in progress is heard to its end,
``/readyz`` answers 503 meanwhile, a client that reads nothing is cut at the drain
timeout, and the process exits 0."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest

from media_server.audio.frames import FRAME_MS, FRAME_SAMPLES
from tests.signaling.test_hardening_synthesis import slow_reader, tts_request
from tests.signaling.test_hardening_synthesis_shutdown import (
    free_port,
    synthesis_running,
    wait_ready,
)
from tests.signaling.test_tts_api import LONG_TEXT
from tests.whep_client import WhepClient

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

ROOT = Path(__file__).resolve().parents[2]
SENTENCE = "The quick brown fox jumps over the lazy dog, and then it takes a well earned nap."
CLOSING_BOUND_S = 6.0
"""After the drain: aiohttp's two 0.5 s shutdown waits, the media server's close and the
interpreter's exit (which waits for a sentence being synthesised), with room for
a loaded machine."""


@asynccontextmanager
async def server(
    tmp_path: Path, **env: str
) -> AsyncIterator[tuple[str, asyncio.subprocess.Process]]:
    """``python -m signaling`` on a free port, ready; killed if a test leaves it running."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "server.log"
    environ = {**os.environ, "VMS_ICE_HOST_ADDRESSES": "127.0.0.1", **env}
    with log_path.open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "signaling", "--port", str(port),
            cwd=ROOT, env=environ, stdout=log, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
    try:
        await wait_ready(url, proc, 60)
        yield url, proc
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def log_of(tmp_path: Path) -> str:
    return (tmp_path / "server.log").read_text()


async def readyz_status(http: aiohttp.ClientSession, url: str) -> int:
    async with http.get(f"{url}/readyz") as resp:
        await resp.read()
        return resp.status


async def test_sigterm_lets_the_sentence_finish_then_exits_0(tmp_path: Path) -> None:
    drain_s = 8.0
    async with (
        server(tmp_path, VMS_DRAIN_TIMEOUT_S=str(drain_s)) as (url, proc),
        aiohttp.ClientSession() as http,
    ):
        assert await readyz_status(http, url) == 200
        peer = WhepClient(url)
        try:
            await peer.connect(http)
            peer.say(SENTENCE, "s1")
            await peer.next_event("speech.started")
            signalled = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            async with asyncio.timeout(5):  # the socket still listens: readiness says no
                while await readyz_status(http, url) != 503:
                    await asyncio.sleep(0.05)
            async with http.post(
                f"{url}/whep", data="v=0\r\n", headers={"Content-Type": "application/sdp"}
            ) as resp:
                assert resp.status == 503 and "Retry-After" in resp.headers
                assert (await resp.json())["error"] == "draining"
            done = await peer.next_event("speech.done", wait_s=drain_s)
            code = await asyncio.wait_for(proc.wait(), drain_s + CLOSING_BOUND_S)
        finally:
            await peer.close()
    exited_s = time.monotonic() - signalled
    assert code == 0, log_of(tmp_path)
    assert exited_s < drain_s + CLOSING_BOUND_S
    assert done["id"] == "s1"
    assert [e for _, e in peer.events if e["type"] == "speech.cancelled"] == []
    heard_ms = done["source_duration_ms"] - done["trimmed_ms"]
    assert heard_ms > 2000 and abs(done["duration_ms"] - heard_ms) <= FRAME_MS + 1
    # its audio arrived to the end, not only the event
    received = [f.pts for f in peer.frames if done["stream_ts"] <= f.pts < done["end_ts"]]
    assert len(received) >= 0.95 * done["duration_ms"] / FRAME_MS
    assert max(received) >= done["end_ts"] - 5 * FRAME_SAMPLES
    assert "drained in" in log_of(tmp_path)


async def slow_tts_request(url: str) -> socket.socket:
    """A ``POST /tts`` of a long text whose client reads nothing, once it is synthesising."""
    sock = await slow_reader(int(url.rsplit(":", 1)[1]))
    try:
        await asyncio.get_running_loop().sock_sendall(
            sock, tts_request({"text": LONG_TEXT, "format": "pcm"})
        )
        async with asyncio.timeout(20):
            while await synthesis_running(url) < 1:
                await asyncio.sleep(0.1)
    except BaseException:
        sock.close()
        raise
    return sock


async def test_a_tts_client_that_reads_nothing_is_cut_at_the_drain_timeout(
    tmp_path: Path,
) -> None:
    drain_s = 2.0
    # a long write timeout: what cuts the client here must be the drain
    env = {"VMS_DRAIN_TIMEOUT_S": str(drain_s), "VMS_HTTP_WRITE_TIMEOUT_S": "300"}
    async with server(tmp_path, **env) as (url, proc), aiohttp.ClientSession() as http:
        sock = await slow_tts_request(url)
        try:
            signalled = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            async with asyncio.timeout(drain_s):
                while await readyz_status(http, url) != 503:
                    await asyncio.sleep(0.05)
            code = await asyncio.wait_for(proc.wait(), drain_s + CLOSING_BOUND_S)
        finally:
            sock.close()
    exited_s = time.monotonic() - signalled
    assert code == 0, log_of(tmp_path)
    assert drain_s <= exited_s < drain_s + CLOSING_BOUND_S
    assert "cutting 0 utterances and 1 /tts requests" in log_of(tmp_path)


async def test_a_second_signal_skips_the_rest_of_the_drain(tmp_path: Path) -> None:
    drain_s = 60.0  # a drain that would outlast the test
    env = {"VMS_DRAIN_TIMEOUT_S": str(drain_s), "VMS_HTTP_WRITE_TIMEOUT_S": "300"}
    async with server(tmp_path, **env) as (url, proc):
        sock = await slow_tts_request(url)
        try:
            proc.send_signal(signal.SIGTERM)
            await asyncio.sleep(1)
            assert proc.returncode is None  # draining, waiting for the request
            signalled = time.monotonic()
            proc.send_signal(signal.SIGINT)
            code = await asyncio.wait_for(proc.wait(), CLOSING_BOUND_S)
        finally:
            sock.close()
    assert code == 0, log_of(tmp_path)
    assert time.monotonic() - signalled < CLOSING_BOUND_S
