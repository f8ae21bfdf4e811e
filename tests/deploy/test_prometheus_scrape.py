"""A real Prometheus scrapes a real server's /metrics with the operator token from a file."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Final

import aiohttp
import pytest
import yaml
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from signaling.app import create_app
from synthesis import Engine
from tests.conftest import loopback_settings
from tests.deploy.conftest import OPERATOR_TOKEN

pytestmark = pytest.mark.slow

MAX_SESSIONS: Final = 7
"""Not the default, so the scraped gauge is this server's."""
SCRAPED_WITHIN_S: Final = 40.0
STOP_WITHIN_S: Final = 10.0
AUTH: Final = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def prometheus_config(tmp_path: Path, target: str) -> Path:
    """The shape of deploy/prometheus/prometheus.yml, at 1 s, plus a job with a wrong token."""
    (tmp_path / "api_token").write_text(OPERATOR_TOKEN + "\n")
    (tmp_path / "wrong_token").write_text("not-the-operator-token-at-all\n")

    def job(name: str, token_file: str) -> dict[str, Any]:
        return {
            "job_name": name,
            "metrics_path": "/metrics",
            "authorization": {"type": "Bearer", "credentials_file": token_file},
            "static_configs": [{"targets": [target]}],
        }

    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
        "scrape_configs": [
            job("voice-media-server", "api_token"),
            job("wrong-token", "wrong_token"),
        ],
    }
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


@contextlib.asynccontextmanager
async def prometheus(binary: str, tmp_path: Path, config: Path) -> AsyncIterator[str]:
    """Run Prometheus on a free loopback port; its base URL."""
    port = free_port()
    log = (tmp_path / "prometheus.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        binary,
        f"--config.file={config}",
        f"--storage.tsdb.path={tmp_path / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}",
        stdout=log,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), STOP_WITHIN_S)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        log.close()


async def query(http: aiohttp.ClientSession, base: str, promql: str) -> list[dict[str, Any]]:
    """The instant vector for ``promql``; empty until Prometheus is up and has a sample."""
    try:
        async with http.get(f"{base}/api/v1/query", params={"query": promql}) as resp:
            if resp.status != 200:
                return []
            body = await resp.json()
    except aiohttp.ClientConnectionError:
        return []
    return body["data"]["result"]  # type: ignore[no-any-return]


async def first_sample(http: aiohttp.ClientSession, base: str, promql: str) -> float:
    deadline = time.monotonic() + SCRAPED_WITHIN_S
    while time.monotonic() < deadline:
        result = await query(http, base, promql)
        if result:
            return float(result[0]["value"][1])
        await asyncio.sleep(0.25)
    raise AssertionError(f"no sample for {promql} within {SCRAPED_WITHIN_S} s")


async def scraped_tts_total(client: TestClient) -> float:
    resp = await client.get("/metrics", headers=AUTH)
    return sum(
        sample.value
        for family in text_string_to_metric_families(await resp.text())
        if family.name == "vms_tts_requests"
        for sample in family.samples
        if sample.name == "vms_tts_requests_total"
    )


async def test_prometheus_scrapes_the_server_with_the_token(
    piper_engine: Engine, tmp_path: Path
) -> None:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("no prometheus binary on PATH (Debian: apt-get install prometheus)")
    settings = loopback_settings(api_token=OPERATOR_TOKEN, max_sessions=MAX_SESSIONS)
    app = create_app(settings, engine=piper_engine)
    async with (
        TestClient(TestServer(app, host="127.0.0.1")) as client,
        aiohttp.ClientSession() as http,
    ):
        resp = await client.post("/tts", json={"text": "Counting this request."}, headers=AUTH)
        assert resp.status == 200
        assert len(await resp.read()) > 0
        tts_total = await scraped_tts_total(client)

        target = f"127.0.0.1:{client.port}"
        started = time.monotonic()
        async with prometheus(binary, tmp_path, prometheus_config(tmp_path, target)) as base:
            up = await first_sample(http, base, 'up{job="voice-media-server"}')
            first_s = time.monotonic() - started
            assert up == 1.0, (tmp_path / "prometheus.log").read_text()[-2000:]
            job = '{job="voice-media-server"}'
            assert await first_sample(http, base, f"vms_sessions_max{job}") == MAX_SESSIONS
            assert await first_sample(http, base, f"vms_opus_complexity{job}") > 0
            assert await first_sample(http, base, f"process_cpu_seconds_total{job}") > 0
            # the server refuses a scrape without its token: Prometheus sees it down
            assert await first_sample(http, base, 'up{job="wrong-token"}') == 0.0
            if tts_total > 0:  # once /tts counts its requests (metrics wiring)
                got = await first_sample(http, base, f"sum(vms_tts_requests_total{job})")
                assert got == tts_total
        print(f"first scrape in Prometheus {first_s:.2f} s after it started")  # noqa: T201
