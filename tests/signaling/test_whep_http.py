"""WHEP over real HTTP: status codes, JSON errors, limits, and cleanup of 200 sessions."""

from __future__ import annotations

import asyncio
import gc
import platform

import pytest
from aiohttp.test_utils import TestClient, TestServer
from aiortc import RTCConfiguration, RTCPeerConnection

from media_server.config import Settings
from media_server.runtime.collector import NEVER
from signaling.app import create_app
from signaling.keys import MEDIA_KEY
from synthesis import Engine
from tests.conftest import loopback_settings

SDP = {"Content-Type": "application/sdp"}
FRAG = {"Content-Type": "application/trickle-ice-sdpfrag"}


async def assert_json_error(resp: object, status: int, error: str) -> dict[str, str]:
    assert resp.status == status  # type: ignore[attr-defined]
    assert resp.content_type == "application/json"  # type: ignore[attr-defined]
    body = await resp.json()  # type: ignore[attr-defined]
    assert body["error"] == error
    assert body["message"] and body["solution"]
    return body  # type: ignore[no-any-return]


async def test_offer_gets_201_location_and_sdp_answer(client: TestClient, offer: str) -> None:
    resp = await client.post("/whep", data=offer, headers=SDP)
    assert resp.status == 201
    assert resp.content_type == "application/sdp"
    location = resp.headers["Location"]
    assert location.startswith("/whep/")
    answer = await resp.text()
    assert answer.startswith("v=0") and "m=audio" in answer and "opus/48000" in answer
    assert "a=sendonly" in answer
    assert "m=application" in answer  # the data channel was accepted
    assert "127.0.0.1" in answer  # ICE host address from settings
    assert len(client.app[MEDIA_KEY].sessions) == 1
    resp = await client.delete(location)
    assert resp.status == 200
    assert len(client.app[MEDIA_KEY].sessions) == 0
    await assert_json_error(await client.delete(location), 404, "session_not_found")


async def test_sendrecv_offer_is_answered_sendonly(client: TestClient) -> None:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver("audio", direction="sendrecv")
    pc.createDataChannel("control")
    await pc.setLocalDescription(await pc.createOffer())
    resp = await client.post("/whep", data=pc.localDescription.sdp, headers=SDP)
    assert resp.status == 201
    answer = await resp.text()
    assert "a=sendonly" in answer and "a=sendrecv" not in answer
    await pc.close()


async def test_wrong_content_type_is_415(client: TestClient, offer: str) -> None:
    resp = await client.post("/whep", data=offer, headers={"Content-Type": "text/plain"})
    body = await assert_json_error(resp, 415, "unsupported_media_type")
    assert "application/sdp" in body["solution"]


@pytest.mark.parametrize(
    "body",
    [
        "hello",
        "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n",  # no media at all
        "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n",
        "v=0\r\nm=audio garbage\r\n",
    ],
)
async def test_unusable_offer_is_400(client: TestClient, body: str) -> None:
    await assert_json_error(
        await client.post("/whep", data=body, headers=SDP), 400, "invalid_offer"
    )
    assert len(client.app[MEDIA_KEY].sessions) == 0


async def test_unknown_voice_is_400(client: TestClient, offer: str) -> None:
    resp = await client.post("/whep?voice=nobody", data=offer, headers=SDP)
    body = await assert_json_error(resp, 400, "unknown_voice")
    assert "joe-us" in body["solution"]
    resp = await client.post("/whep?voice=joe-us", data=offer, headers=SDP)
    assert resp.status == 201


async def test_unknown_session_and_route_are_json_404(client: TestClient) -> None:
    await assert_json_error(
        await client.patch("/whep/nope", data="a=end-of-candidates\r\n", headers=FRAG),
        404,
        "session_not_found",
    )
    await assert_json_error(await client.get("/whep/nope/stats"), 404, "session_not_found")
    await assert_json_error(await client.get("/no/such/page"), 404, "not_found")
    resp = await client.put("/whep", data="x")
    await assert_json_error(resp, 405, "method_not_allowed")


async def test_trickle_patch(client: TestClient, offer: str) -> None:
    resp = await client.post("/whep", data=offer, headers=SDP)
    location, etag = resp.headers["Location"], resp.headers["ETag"]
    current = {**FRAG, "If-Match": etag}
    frag = (
        "a=mid:0\r\n"
        "a=candidate:1 1 udp 2130706431 127.0.0.1 50000 typ host\r\n"
        "a=end-of-candidates\r\n"
    )
    resp = await client.patch(location, data=frag, headers=current)
    assert resp.status == 204 and resp.headers["ETag"] == etag
    resp = await client.patch(location, data=frag, headers={**current, **SDP})
    await assert_json_error(resp, 415, "unsupported_media_type")
    resp = await client.patch(location, data="a=candidate:garbage\r\n", headers=current)
    await assert_json_error(resp, 400, "invalid_candidate")
    # new credentials are an ICE restart; this session never connected, so not now
    restart = "a=ice-ufrag:someoneelse\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n"
    resp = await client.patch(location, data=restart, headers={**FRAG, "If-Match": "*"})
    await assert_json_error(resp, 409, "ice_restart_not_possible")


@pytest.mark.parametrize("settings", [loopback_settings(max_sessions=2)])
async def test_session_limit_is_503_with_retry_after(
    client: TestClient, offer: str, settings: Settings
) -> None:
    for _ in range(2):
        assert (await client.post("/whep", data=offer, headers=SDP)).status == 201
    resp = await client.post("/whep", data=offer, headers=SDP)
    await assert_json_error(resp, 503, "too_many_sessions")
    assert int(resp.headers["Retry-After"]) > 0


async def test_oversized_body_is_413(client: TestClient) -> None:
    resp = await client.post("/whep", data="v=0\r\n" + "a=x\r\n" * 20000, headers=SDP)
    await assert_json_error(resp, 413, "body_too_large")


@pytest.mark.parametrize(
    "settings", [loopback_settings(max_sessions=250, max_pending_sessions_per_client=0)]
)
@pytest.mark.slow
async def test_200_sessions_open_and_close_without_leaks(
    client: TestClient, offer: str, settings: Settings
) -> None:
    await asyncio.sleep(0.1)
    before = set(asyncio.all_tasks())
    baseline = len(before)
    registry = client.app[MEDIA_KEY].sessions
    locations = []
    for _ in range(200):
        resp = await client.post("/whep", data=offer, headers=SDP)
        assert resp.status == 201
        locations.append(resp.headers["Location"])
    assert len(registry) == 200
    assert len(asyncio.all_tasks()) > baseline + 200  # each session runs tasks
    for location in locations:
        assert (await client.delete(location)).status == 200
    assert len(registry) == 0
    for _ in range(100):  # aiortc's own transports wind down asynchronously
        if len(asyncio.all_tasks()) <= baseline:
            break
        await asyncio.sleep(0.05)
    leftover = [t for t in asyncio.all_tasks() - before if not t.done()]
    # only the keep-alive HTTP connection that served the requests may remain
    names = [getattr(t.get_coro(), "__qualname__", "?") for t in leftover]
    assert set(names) <= {"RequestHandler.start"}, names


async def test_health_and_stats(client: TestClient) -> None:
    resp = await client.get("/healthz")
    assert resp.status == 200 and (await resp.json())["engine"] == "piper"
    resp = await client.get("/stats")
    stats = await resp.json()
    assert stats["sessions"] == 0
    # the encode budget is visible: no load yet, so the configured best complexity
    assert stats["opus"]["complexity"] == Settings().opus.complexity
    assert stats["opus"]["encode_budget_cores"] == Settings().opus.encode_budget_pct / 100
    assert stats["opus"]["speaking_streams"] == 0
    # full collections are the server's to schedule (CPython's own are off while it runs)
    assert gc.get_threshold()[2] == NEVER
    assert stats["gc"]["full_collections"] >= 0


async def test_start_up_objects_are_frozen_out_of_gc_while_serving(client: TestClient) -> None:
    # start-up objects (modules, the engine) are never walked by a collection again,
    # so collections during joins stay short; cleanup gives them back
    assert gc.get_freeze_count() > 10_000


async def test_cleanup_unfreezes(piper_engine: Engine) -> None:
    app = create_app(loopback_settings(), engine=piper_engine)
    async with TestClient(TestServer(app, host="127.0.0.1")):
        assert gc.get_freeze_count() > 0
    assert gc.get_freeze_count() == 0


async def test_index_page_is_served(client: TestClient) -> None:
    resp = await client.get("/")
    assert resp.status == 200 and "html" in resp.content_type


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")
@pytest.mark.parametrize("settings", [loopback_settings(heap_trim_idle_s=0.2)])
@pytest.mark.slow
async def test_heap_is_trimmed_once_the_last_session_has_gone(
    client: TestClient, offer: str, settings: Settings
) -> None:
    resp = await client.post("/whep", data=offer, headers=SDP)
    assert resp.status == 201
    await asyncio.sleep(0.5)
    stats = await (await client.get("/stats")).json()
    assert stats["heap"]["idle_trims"] == 0  # never while a session is open
    assert (await client.delete(resp.headers["Location"])).status == 200
    for _ in range(50):
        stats = await (await client.get("/stats")).json()
        if stats["heap"]["idle_trims"]:
            break
        await asyncio.sleep(0.1)
    assert stats["heap"]["idle_trims"] == 1 and stats["heap"]["freed_mb"] >= 0


STATS_TOKEN = "operator-token-0123456789"


@pytest.mark.parametrize("settings", [loopback_settings(api_token=STATS_TOKEN)])
async def test_a_stats_window_is_the_operators_and_reaches_every_session(
    client: TestClient, offer: str
) -> None:
    operator = {"Authorization": f"Bearer {STATS_TOKEN}"}
    resp = await client.post("/whep", data=offer, headers={**SDP, **operator})
    assert resp.status == 201
    session = client.app[MEDIA_KEY].sessions.sessions()[0]
    session.pacer.stats.record(0.25, speech=True)
    await assert_json_error(await client.post("/stats/window"), 401, "token_required")
    assert session.pacer.stats.frames_sent == 1  # refused: nothing was reset

    resp = await client.post("/stats/window", headers=operator)
    assert resp.status == 200 and await resp.json() == {"sessions": 1, "rooms": 0}
    stats = await (await client.get("/stats", headers=operator)).json()
    (figures,) = stats["per_session"]
    assert figures["frames_sent"] == 0 and figures["lateness_max_ms"] == 0
    assert {"lateness_p50_ms", "lateness_p99_ms", "underruns", "speech_frames_sent"} <= set(figures)
