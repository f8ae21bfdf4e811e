"""SIGTERM ends the server promptly even while clients that read nothing hold synthesis."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from tests.signaling.test_hardening_synthesis import (
    slow_reader,
    tts_request,
    ws_say_never_read,
)
from tests.signaling.test_tts_api import LONG_TEXT

ROOT = Path(__file__).resolve().parents[2]
EXIT_BOUND_S = 15.0
"""Loose: the server's own bound is a few seconds; aiohttp's default waited 60 s."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def wait_ready(url: str, proc: asyncio.subprocess.Process, timeout_s: float) -> None:
    async with aiohttp.ClientSession() as http:
        async with asyncio.timeout(timeout_s):
            while True:
                assert proc.returncode is None, "the server exited"
                try:
                    async with http.get(f"{url}/healthz") as resp:
                        if resp.status == 200:
                            return
                except aiohttp.ClientConnectionError:
                    pass
                await asyncio.sleep(0.2)


async def synthesis_running(url: str) -> int:
    async with aiohttp.ClientSession() as http, http.get(f"{url}/stats") as resp:
        running: int = (await resp.json())["synthesis"]["running"]
        return running


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_sigterm_exits_promptly_with_clients_that_read_nothing(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "server.log"
    # a long write timeout: what ends the handlers here must be the shutdown bound (after
    # a short drain, which waits for them first: test_drain_process.py)
    env = {
        **os.environ,
        "VMS_HTTP_WRITE_TIMEOUT_S": "300",
        "VMS_SYNTHESIS_WORKERS": "4",
        "VMS_DRAIN_TIMEOUT_S": "2",
    }
    with log_path.open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "signaling", "--port", str(port),
            cwd=ROOT, env=env, stdout=log, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
    sockets: list[socket.socket] = []
    try:
        await wait_ready(url, proc, 60)
        sockets.append(await ws_say_never_read(port, LONG_TEXT))
        tts = await slow_reader(port)
        sockets.append(tts)
        await asyncio.get_running_loop().sock_sendall(
            tts, tts_request({"text": LONG_TEXT, "format": "pcm"})
        )
        async with asyncio.timeout(20):
            while await synthesis_running(url) < 2:
                await asyncio.sleep(0.2)
        await asyncio.sleep(2)  # both handlers are now blocked writing to their clients
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            code = await asyncio.wait_for(proc.wait(), EXIT_BOUND_S)
        except TimeoutError:
            pytest.fail(f"still running {EXIT_BOUND_S:g} s after SIGTERM")
        assert time.monotonic() - started < EXIT_BOUND_S
        assert code == 0, log_path.read_text()
    finally:
        for sock in sockets:
            sock.close()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
