"""The memory and event-loop guard: hostile-but-small input costs the server little.

Decompression bombs for the reference-clip decoder and a 1000-candidate trickle flood
run against one server while probes watch its resident memory and its event loop.
Before the fixes, one 81-byte FLAC took 8.8 GB and 21 s of CPU, and 1000 candidates
held the loop 1.4 s; the bounds here are loose (orders of magnitude), not timings.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import threading
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from signaling.app import create_app
from tests.conftest import loopback_settings
from tests.signaling.test_hardening_http import CloningEngine
from tests.signaling.test_hardening_trickle import (
    FRAG,
    LagProbe,
    TrickleClient,
    base_url,
    candidate_lines,
)
from tests.synthesis.test_hardening_reference import flac_bomb, tone_s16, wav_header

RSS_GROWTH_BOUND_MB = 300
LAG_BOUND_S = 0.5
FLOOD = 1000


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


class RssProbe:
    """Samples this process's resident memory every few ms from a thread (decoding
    runs in worker threads, so the event loop may be busy when the peak happens)."""

    def __init__(self) -> None:
        self.start_mb = rss_mb()
        self.peak_mb = self.start_mb
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-probe")

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            self.peak_mb = max(self.peak_mb, rss_mb())

    def __enter__(self) -> RssProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@contextlib.asynccontextmanager
async def phase(name: str, limit_s: float = 20.0) -> AsyncIterator[None]:
    """Fail with the phase's name, not a bare test timeout, if it hangs."""
    try:
        async with asyncio.timeout(limit_s):
            yield
    except TimeoutError:
        pytest.fail(f"{name} took over {limit_s:g} s")


def bombs() -> list[bytes]:
    return [
        flac_bomb(stream_rate_hz=1),  # the review's: 1 Hz, 16384-sample blocks
        flac_bomb(stream_rate_hz=16_000, frame_rates_hz=(1, 1, 1)),  # frames name 1 Hz
        wav_header(1, 1, 0xFFFFFFF0) + tone_s16(48_000),  # 1 Hz, claims 4 GB
        wav_header(16_000, 4000, 0xFFFFFFF0) + tone_s16(48_000),  # 4000 channels
        wav_header(16_000, 1, 0xFFFFFFF0) + tone_s16(16_000 * 40),  # 40 s of real audio
    ]


@pytest.fixture
async def cloning_client() -> AsyncIterator[TestClient]:
    app = create_app(loopback_settings(), engine=CloningEngine())
    async with TestClient(TestServer(app, host="127.0.0.1")) as test_client:
        yield test_client


async def error_of(resp: aiohttp.ClientResponse) -> dict[str, Any]:
    assert 400 <= resp.status < 500, (resp.status, await resp.text())
    body: dict[str, Any] = await resp.json()
    assert set(body) == {"error", "message", "solution"}
    return body


@pytest.mark.slow
async def test_bombs_and_a_candidate_flood_cost_little_memory_and_no_loop_time(
    cloning_client: TestClient,
) -> None:
    client = cloning_client
    flooded: list[int] = []

    async def flood(location: str) -> None:
        async with aiohttp.ClientSession() as http:
            url = f"{base_url(client)}{location}"
            async with http.patch(url, data=candidate_lines(FLOOD), headers=FRAG) as resp:
                flooded.append(resp.status)
                assert (await error_of(resp))["error"] == "too_many_candidates"
            for i in range(20):  # and in many small PATCHes
                lines = candidate_lines(50, first_port=30_000 + 50 * i)
                async with http.patch(url, data=lines, headers=FRAG) as resp:
                    flooded.append(resp.status)

    peer = TrickleClient(base_url(client))
    with RssProbe() as memory:
        async with LagProbe() as lag, aiohttp.ClientSession() as http:
            async with phase("the bombs"):
                for blob in bombs():
                    clip = base64.b64encode(blob).decode()
                    voice = {"voice_id": "bomb", "reference_audio": clip}
                    resp = await client.post("/voices", json=voice)
                    assert (await error_of(resp))["error"].startswith("reference_")
                    tts = {"text": "hi", "mode": "cross_lingual", "reference_audio": clip}
                    resp = await client.post("/tts", json=tts)
                    assert (await error_of(resp))["error"].startswith("reference_")
            async with phase("connecting while flooded"):
                await peer.connect_trickled(http, flood)
            try:
                async with phase("speaking after the flood"):
                    # the session that was flooded still speaks afterwards
                    peer.say("Still here.", "after")
                    assert (await peer.next_event("speech.started"))["id"] == "after"
            finally:
                async with phase("closing"):
                    await peer.close(http)
    assert set(flooded) == {400}
    growth_mb = memory.peak_mb - memory.start_mb
    assert growth_mb < RSS_GROWTH_BOUND_MB, f"RSS grew {growth_mb:.0f} MB"
    assert lag.max_lag_s < LAG_BOUND_S, f"the event loop was held {lag.max_lag_s:.2f} s"
    assert (await client.get("/healthz")).status == 200
    await asyncio.sleep(0)
