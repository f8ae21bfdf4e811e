"""``GET /metrics`` after real TTS work: the API's requests, first bytes, refusals and the
engine's latency and real-time factor, counted exactly (real app, real Piper)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import aiohttp
import pytest
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from signaling.keys import QUOTAS_KEY
from signaling.quotas import Quota
from tests.conftest import loopback_settings
from tests.whep_client import WhepClient

PARAGRAPH = " ".join(
    [
        "Streaming speech starts before the whole paragraph is ready.",
        "Each sentence is synthesised in turn and sent as soon as it exists.",
        "A client that reads slowly holds synthesis back, so little is wasted.",
    ]
)

Samples = dict[str, float]


async def scrape(client: TestClient) -> Samples:
    """Every sample of the exposition, by name and sorted labels."""
    resp = await client.get("/metrics")
    assert resp.status == 200, await resp.text()
    samples: Samples = {}
    for family in text_string_to_metric_families(await resp.text()):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}"] = sample.value
    return samples


async def scrape_when(client: TestClient, ready: Callable[[Samples], bool]) -> Samples:
    """A scrape once ``ready`` holds: a request is counted as its handler returns, which
    may be just after its client has read the last byte."""
    async with asyncio.timeout(10):
        while not ready(samples := await scrape(client)):
            await asyncio.sleep(0.05)
    return samples


def tts(api: str, fmt: str, status: str) -> str:
    return f"vms_tts_requests_total{{api={api},format={fmt},status={status}}}"


async def until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(10):
        while not condition():
            await asyncio.sleep(0.05)


async def ws_until(ws: object, kind: str) -> dict[str, object]:
    """Events until one of ``kind`` (audio frames skipped)."""
    while True:
        msg = await ws.receive(timeout=30)  # type: ignore[attr-defined]
        assert msg.type in (WSMsgType.TEXT, WSMsgType.BINARY), msg
        if msg.type == WSMsgType.TEXT:
            event: dict[str, object] = json.loads(msg.data)
            if event["type"] == kind:
                return event


@pytest.mark.slow
@pytest.mark.parametrize("settings", [loopback_settings(max_syntheses_per_client=1)])
async def test_tts_work_moves_the_api_and_engine_metrics(client: TestClient) -> None:
    app: web.Application = client.server.app
    before = await scrape(client)
    assert not any(k.startswith("vms_tts_requests_total") for k in before)

    # two formats, read to the end
    for body in ({"text": "Hello there."}, {"text": "Goodbye.", "format": "wav"}):
        resp = await client.post("/tts", json=body)
        assert resp.status == 200
        assert len(await resp.read()) > 1000
    # invalid: not JSON (format unknown), and empty text in a known format
    bad = await client.post("/tts", data=b"{", headers={"Content-Type": "application/json"})
    assert bad.status == 400
    empty = await client.post("/tts", json={"text": "", "format": "wav"})
    assert empty.status == 400

    # refused for a limit: this client already holds its one synthesis
    held = await client.post("/tts", json={"text": PARAGRAPH})
    assert held.status == 200
    await held.content.readany()
    refused = await client.post("/tts", json={"text": "Me too."})
    assert refused.status == 429
    assert (await refused.json())["error"] == "too_many_synthesis"
    async with client.ws_connect("/tts/ws") as ws:
        assert (await ws.receive_json())["type"] == "ready"
        await ws.send_json({"type": "say", "text": "Over my share.", "id": "a"})
        error = await ws_until(ws, "error")
        assert error["error"] == "too_many_synthesis"
        await held.read()  # the held stream ends and gives its share back
        quotas = app[QUOTAS_KEY]
        await until(lambda: quotas.held(Quota.SYNTHESIS, "127.0.0.1") == 0)
        await ws.send_json({"type": "say", "text": "My turn now.", "id": "b"})
        assert (await ws_until(ws, "speech.done"))["id"] == "b"
        await ws.send_json({"type": "say", "text": PARAGRAPH, "id": "c"})
        assert (await ws_until(ws, "speech.started"))["id"] == "c"
        await ws.send_json({"type": "cancel"})
        assert (await ws_until(ws, "speech.cancelled"))["id"] == "c"

    labels = "{engine=piper,mode=sft}"
    engine_count = f"vms_engine_first_chunk_seconds_count{labels}"
    # the cancelled stream reports once its worker has let go, after speech.cancelled
    after = await scrape_when(
        client, lambda s: s.get(tts("http", "pcm", "200")) == 2 and s.get(engine_count, 0) >= 5
    )
    # one count per request, by format and final status
    assert after[tts("http", "pcm", "200")] == 2
    assert after[tts("http", "wav", "200")] == 1
    assert after[tts("http", "unknown", "400")] == 1
    assert after[tts("http", "wav", "400")] == 1
    assert after[tts("http", "pcm", "429")] == 1
    assert after[tts("ws", "pcm", "too_many_synthesis")] == 1
    assert after[tts("ws", "pcm", "ok")] == 1
    assert after[tts("ws", "pcm", "cancelled")] == 1
    assert sum(v for k, v in after.items() if k.startswith("vms_tts_requests_total")) == 9
    # the quota refused twice: once over HTTP, once on the socket
    assert after["vms_refusals_total{reason=too_many_synthesis}"] == 2
    assert sum(v for k, v in after.items() if k.startswith("vms_refusals_total")) == 2

    # first audio byte: every answered request, nothing for the refused or invalid ones
    first = "vms_tts_request_to_first_byte_seconds"
    assert after[f"{first}_count{{api=http,format=pcm}}"] == 2
    assert after[f"{first}_count{{api=http,format=wav}}"] == 1
    assert after[f"{first}_count{{api=ws,format=pcm}}"] == 2
    assert after[f"{first}_sum{{api=http,format=pcm}}"] > 0
    assert after[f"{first}_sum{{api=ws,format=pcm}}"] > 0

    # the engine: five syntheses ran (the refused ones never reached it)
    assert after[engine_count] >= 5
    assert after[f"vms_engine_first_chunk_seconds_sum{labels}"] > 0
    assert after[f"vms_engine_real_time_factor_count{labels}"] >= 5
    assert after[f"vms_engine_real_time_factor_sum{labels}"] > 0


@pytest.mark.parametrize("settings", [loopback_settings(max_sessions=1)])
async def test_a_session_limit_counts_one_refusal_by_its_code(
    client: TestClient, offer: str
) -> None:
    sdp = {"Content-Type": "application/sdp"}
    first = await client.post("/whep", data=offer, headers=sdp)
    assert first.status == 201
    second = await client.post("/whep", data=offer, headers=sdp)
    assert second.status == 503
    code = (await second.json())["error"]
    samples = await scrape(client)
    assert samples[f"vms_refusals_total{{reason={code}}}"] == 1
    assert sum(v for k, v in samples.items() if k.startswith("vms_refusals_total")) == 1
    assert not any(k.startswith("vms_tts_requests_total") for k in samples)
    assert (await client.delete(first.headers["Location"])).status == 200


@pytest.mark.slow
@pytest.mark.parametrize("settings", [loopback_settings(say_burst=1, say_rate_per_s=0.1)])
async def test_a_data_channel_message_over_the_rate_is_one_refusal(
    client: TestClient, http: aiohttp.ClientSession
) -> None:
    whep = WhepClient(str(client.make_url("")).rstrip("/"))
    await whep.connect(http)
    try:
        whep.say("One.", "a")
        whep.say("Two.", "b")
        error = await whep.next_event("error")
        assert error["error"] == "rate_limited" and error["id"] == "b"
        await whep.next_event("speech.done")
        samples = await scrape(client)
    finally:
        await whep.close(http)
    assert samples["vms_refusals_total{reason=rate_limited}"] == 1
    assert sum(v for k, v in samples.items() if k.startswith("vms_refusals_total")) == 1
    # a say on the data channel is no TTS API request
    assert not any(k.startswith("vms_tts_requests_total") for k in samples)
