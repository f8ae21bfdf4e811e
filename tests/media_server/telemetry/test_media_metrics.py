"""``GET /metrics`` after real work: a 1:1 session and a room, real aiortc peers, real Piper."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from media_server.config import Settings
from media_server.rooms.tokens import Role, TokenSigner
from tests.conftest import loopback_settings
from tests.ice_mover import connected_listener, restart, wait_nominated
from tests.media_server.telemetry.scrape import Samples, scrape
from tests.whep_client import WhepClient

pytestmark = [pytest.mark.loopback, pytest.mark.slow]

SECRET = "metrics-test-secret-0123456789"
SHORT = ["Hello there.", "This is the second sentence."]
LONG = (
    "This third sentence goes on for a long while, so that it is still playing when the "
    "client decides to cancel it, well before its natural end arrives."
)
SESSION = "kind=session"
ROOM = "kind=room"
RTCP_WAIT_S = 30


@pytest.fixture
def settings() -> Settings:
    return loopback_settings(token_secret=SECRET)


async def poll(client: TestClient, ready: str, timeout_s: float = RTCP_WAIT_S) -> Samples:
    """Scrape until the sample ``ready`` is above 0 (RTCP comes every few seconds)."""
    async with asyncio.timeout(timeout_s):
        while (samples := await scrape(client))[ready] <= 0:
            await asyncio.sleep(0.5)
    return samples


@pytest.mark.timeout(120)
async def test_a_session_moves_its_metrics(client: TestClient, http: aiohttp.ClientSession) -> None:
    whep = WhepClient(str(client.make_url("")).rstrip("/"))
    await whep.connect(http)
    samples = await scrape(client)
    assert samples["vms_sessions_started_total{}"] == 1
    assert samples["vms_sessions{}"] == 1
    for text in SHORT:
        whep.say(text)
        await whep.next_event("speech.done")
    assert (await scrape(client))["vms_speaking_streams{}"] == 0
    whep.say(LONG, "long")
    started = await whep.next_event("speech.started")
    assert started["id"] == "long"
    during = await scrape(client)
    assert during["vms_speaking_streams{}"] == 1
    assert during["vms_opus_complexity{}"] >= 1
    await asyncio.sleep(0.6)
    whep.cancel()
    cancelled = await whep.next_event("speech.cancelled")
    assert cancelled["played_ms"] > 0

    samples = await scrape(client)
    assert samples[f"vms_utterances_started_total{{{SESSION}}}"] == 3
    assert samples[f"vms_utterances_done_total{{{SESSION}}}"] == 2
    assert samples[f"vms_utterances_cancelled_total{{{SESSION}}}"] == 1
    assert samples[f"vms_cancelled_played_seconds_count{{{SESSION}}}"] == 1
    played_s = samples[f"vms_cancelled_played_seconds_sum{{{SESSION}}}"]
    assert played_s == pytest.approx(cancelled["played_ms"] / 1000)
    assert samples[f"vms_text_to_first_rtp_seconds_count{{{SESSION}}}"] == 3
    first_rtp_s = samples[f"vms_text_to_first_rtp_seconds_sum{{{SESSION}}}"]
    assert 0 < first_rtp_s < 3 * 10  # seconds, not ms
    assert samples[f"vms_utterances_started_total{{{ROOM}}}"] == 0
    frames = samples["vms_frame_send_lateness_seconds_count{}"]
    assert frames > 0
    assert samples["vms_frame_send_lateness_seconds_bucket{le=+Inf}"] == frames
    assert samples["vms_event_loop_lag_seconds_count{}"] > 0

    # aiortc's receiver reports come every 0.5-1.5 s; the server looks once a second
    samples = await poll(client, "vms_rtcp_round_trip_time_seconds_count{}")
    assert samples["vms_rtcp_fraction_lost_count{}"] > 0
    assert samples["vms_rtcp_fraction_lost_bucket{le=0.0}"] > 0  # loopback loses nothing
    assert samples["vms_rtcp_jitter_seconds_count{}"] > 0
    assert (
        samples["vms_rtcp_round_trip_time_seconds_sum{}"]
        < samples["vms_rtcp_round_trip_time_seconds_count{}"]
    )  # under a second each on loopback
    # the first report changes the configured coding (FEC at 10 % expected loss): on a
    # clean link FEC goes, so one decision is counted, with its bitrate
    decisions = {k: v for k, v in samples.items() if k.startswith("vms_link_decisions_total")}
    assert sum(decisions.values()) >= 1
    assert samples["vms_link_target_bitrate_bits_per_second_count{}"] == sum(decisions.values())
    assert all(",fec=" in k and "red_distance=" in k for k in decisions)
    assert samples["vms_ice_restarts_total{}"] == 0

    await whep.close(http)
    samples = await scrape(client)
    assert samples["vms_sessions_closed_total{}"] == 1
    assert samples["vms_sessions{}"] == 0
    assert samples["vms_speaking_streams{}"] == 0


async def bot_event(ws: aiohttp.ClientWebSocketResponse, kind: str) -> dict[str, Any]:
    async with asyncio.timeout(20):
        while True:
            event = json.loads((await ws.receive()).data)
            if event["type"] == kind:
                return event  # type: ignore[no-any-return]


@pytest.mark.timeout(120)
async def test_a_room_moves_its_metrics(client: TestClient, http: aiohttp.ClientSession) -> None:
    signer = TokenSigner(SECRET.encode())
    token = signer.issue("hall", Role.LISTENER, "guest")
    listener = WhepClient(str(client.make_url("")).rstrip("/"))
    await listener.connect(
        http, path="/rooms/hall/whep", headers={"Authorization": f"Bearer {token}"}
    )
    await listener.next_event("room.joined")
    bot_token = signer.issue("hall", Role.BOT, "host-bot")
    async with client.ws_connect(f"/rooms/hall/bot?token={bot_token}") as bot:
        assert (await bot.receive_json())["type"] == "ready"
        samples = await scrape(client)
        assert samples["vms_rooms{}"] == 1
        assert samples["vms_room_participants{role=listener}"] == 1
        assert samples["vms_room_participants{role=bot}"] == 1
        assert samples.get("vms_room_participants{role=speaker}") == 0
        await bot.send_json({"type": "say", "text": SHORT[1], "id": "hi"})
        await bot_event(bot, "speech.started")
        assert (await scrape(client))["vms_speaking_streams{}"] == 1
        await bot_event(bot, "speech.done")
        samples = await scrape(client)
        assert samples[f"vms_text_to_first_rtp_seconds_count{{{ROOM}}}"] == 1
        assert samples[f"vms_utterances_started_total{{{ROOM}}}"] == 1
        assert samples[f"vms_utterances_done_total{{{ROOM}}}"] == 1
        assert samples[f"vms_utterances_started_total{{{SESSION}}}"] == 0
        assert samples["vms_speaking_streams{}"] == 0
        assert samples["vms_frame_send_lateness_seconds_count{}"] > 0
        # the listener's peer reports RTCP like a session's
        await poll(client, "vms_rtcp_jitter_seconds_count{}")
    await listener.close(http)
    samples = await scrape(client)
    assert samples["vms_rooms{}"] == 0
    roles = ("bot", "listener", "speaker")
    assert [samples.get(f"vms_room_participants{{role={role}}}") for role in roles] == [0, 0, 0]
    assert samples["vms_sessions_started_total{}"] == 0  # a listener is not a 1:1 session


@pytest.mark.timeout(60)
async def test_an_ice_restart_is_counted(client: TestClient, http: aiohttp.ClientSession) -> None:
    async with connected_listener(client, http) as peer:
        assert (await scrape(client))["vms_ice_restarts_total{}"] == 0
        move = await restart(peer, http)
        assert move.status == 200, move.answer
        await wait_nominated(peer, move)
        assert (await scrape(client))["vms_ice_restarts_total{}"] == 1


@pytest.mark.timeout(60)
async def test_a_socket_counts_its_utterances_without_rtp(client: TestClient) -> None:
    async with client.ws_connect("/tts/ws") as ws:
        assert (await ws.receive_json())["type"] == "ready"
        await ws.send_json({"type": "say", "text": SHORT[0], "id": "a"})
        async with asyncio.timeout(20):
            while True:
                message = await ws.receive()
                if message.type is aiohttp.WSMsgType.TEXT:
                    if json.loads(message.data)["type"] == "speech.done":
                        break
    samples = await scrape(client)
    assert samples["vms_utterances_started_total{kind=socket}"] == 1
    assert samples["vms_utterances_done_total{kind=socket}"] == 1
    assert samples["vms_text_to_first_rtp_seconds_count{kind=socket}"] == 0  # no RTP
    assert samples[f"vms_utterances_started_total{{{SESSION}}}"] == 0
