"""``GET /metrics``: who may read it, its format, and gauges that follow the server's state."""

from __future__ import annotations

import importlib.metadata

import pytest
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import loopback_settings

SDP = {"Content-Type": "application/sdp"}
TOKEN = "operator-token-0123456789"
OPERATOR = {"Authorization": f"Bearer {TOKEN}"}


async def scrape(client: TestClient, headers: dict[str, str] | None = None) -> dict[str, float]:
    """Every sample of the exposition, by name and sorted labels."""
    resp = await client.get("/metrics", headers=headers)
    assert resp.status == 200, await resp.text()
    assert resp.headers["Content-Type"].startswith("text/plain")
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(await resp.text()):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}"] = sample.value
    return samples


@pytest.mark.parametrize("settings", [loopback_settings(api_token=TOKEN)])
async def test_metrics_need_the_operator_token(client: TestClient) -> None:
    resp = await client.get("/metrics")
    assert resp.status == 401
    assert (await resp.json())["error"] == "token_required"
    wrong = await client.get("/metrics", headers={"Authorization": "Bearer not-the-token-000"})
    assert (await wrong.json())["error"] == "invalid_token"
    samples = await scrape(client, OPERATOR)
    version = importlib.metadata.version("voice-media-server")
    assert samples[f"vms_build_info{{engine=piper,version={version}}}"] == 1
    assert samples["process_resident_memory_bytes{}"] > 0


@pytest.mark.parametrize("settings", [loopback_settings(max_sessions=3)])
async def test_load_gauges_follow_sessions(client: TestClient, offer: str) -> None:
    before = await scrape(client)
    assert before["vms_sessions{}"] == 0
    assert before["vms_sessions_max{}"] == 3
    assert before["vms_draining{}"] == 0
    assert before["vms_synthesis_slots{}"] >= 1
    assert before["vms_synthesis_slots_busy{}"] == 0

    resp = await client.post("/whep", data=offer, headers=SDP)
    assert resp.status == 201
    assert (await scrape(client))["vms_sessions{}"] == 1
    assert (await client.delete(resp.headers["Location"])).status == 200
    assert (await scrape(client))["vms_sessions{}"] == 0
