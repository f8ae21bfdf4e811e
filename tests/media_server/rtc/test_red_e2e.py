"""RED and the link adaptor with a real aiortc client over real HTTP and RTP
(``tests/red_client.py``: its offer carries RED as Chromium's does)."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from media_server.audio.frames import FRAME_SAMPLES
from media_server.config import Settings
from media_server.rtc.red import split_red
from signaling.keys import MEDIA_KEY
from tests.conftest import loopback_settings
from tests.red_client import RED_PT, RedClient, until_link

pytestmark = [pytest.mark.loopback, pytest.mark.slow]


async def spoken(client: TestClient, http: aiohttp.ClientSession, red: bool = True) -> RedClient:
    peer = RedClient()
    await peer.connect(http, str(client.make_url("/whep")), red)
    peer.channel.send('{"type": "say", "text": "Hello there, this is RED.", "id": "r1"}')
    await peer.until("speech.done")
    await asyncio.sleep(0.2)
    return peer


@pytest.mark.parametrize("settings", [loopback_settings(audio_adaptation=False)])
async def test_speech_repeats_the_two_frames_before_it(
    client: TestClient, http: aiohttp.ClientSession, settings: Settings
) -> None:
    peer = await spoken(client, http)
    try:
        assert f"a=rtpmap:{RED_PT} red/48000/2" in peer.answer
        red = [p for p in peer.packets if p.payload_type == RED_PT]
        kinds = {pt: sum(p.payload_type == pt for p in peer.packets) for pt in peer.payload_types()}
        assert len(red) == len(peer.packets) > 50, f"not every packet went as RED: {kinds}"

        primaries = {p.timestamp: split_red(p.payload)[1] for p in red}
        for packet in red[2:]:
            blocks = split_red(packet.payload)[0]
            assert len(blocks) == 2, "each packet repeats the two frames before it"
            for offset, block in blocks:
                # a frame earlier: 960 samples per tick (more where a stalled pacer skipped)
                assert offset > 0 and offset % FRAME_SAMPLES == 0, offset
                earlier = (packet.timestamp - offset) & 0xFFFFFFFF
                if earlier in primaries:  # a block repeats the primary frame sent then
                    assert primaries[earlier] == block
        session = client.app[MEDIA_KEY].sessions.get(peer.location.rsplit("/", 1)[-1])
        assert session is not None
        link = session.stats()["link"]
        assert link["red_negotiated"] and link["red_distance"] == 2
        assert link["red_packets"] >= len(red)
    finally:
        await peer.pc.close()


async def test_a_clean_link_gets_plain_opus_and_no_fec(
    client: TestClient, http: aiohttp.ClientSession
) -> None:
    peer = await spoken(client, http)
    try:
        assert f"a=rtpmap:{RED_PT} red/48000/2" in peer.answer
        session = client.app[MEDIA_KEY].sessions.get(peer.location.rsplit("/", 1)[-1])
        assert session is not None
        # aiortc's receiver reports every 0.5-1.5 s, with a round trip once it has had
        # one of our sender reports; the server looks each second
        async with asyncio.timeout(10):
            while session.stats()["link"]["rtt_ms"] is None:
                await asyncio.sleep(0.2)
        link: dict[str, Any] = session.stats()["link"]
        assert link["loss_pct"] == 0.0 and link["rtt_ms"] is not None
        assert link["red_distance"] == 0 and not link["inband_fec"]
        assert link["expected_loss_pct"] == 0
        assert not [p for p in peer.packets if p.payload_type == RED_PT]
    finally:
        await peer.pc.close()


@pytest.mark.parametrize("settings", [loopback_settings(red_max_distance=0)])
async def test_red_off_answers_without_it(
    client: TestClient, http: aiohttp.ClientSession, settings: Settings
) -> None:
    peer = await spoken(client, http)
    try:
        assert "red/48000" not in peer.answer
        assert {p.payload_type for p in peer.packets} != {RED_PT}
    finally:
        await peer.pc.close()


async def test_a_lossy_link_gets_red_and_fec_from_its_own_reports(
    client: TestClient, http: aiohttp.ClientSession
) -> None:
    peer = RedClient(drop_every=6)  # about 17 % of packets never reach its receiver
    await peer.connect(http, str(client.make_url("/whep")))
    try:
        session = client.app[MEDIA_KEY].sessions.get(peer.location.rsplit("/", 1)[-1])
        assert session is not None
        link = await until_link(session.stats, lambda link: link["red_distance"] == 2)
        assert 5 < link["loss_pct"] < 30 and link["packets_lost"] > 0
        assert link["inband_fec"] and link["expected_loss_pct"] >= 5
        assert link["bitrate_bps"] > session._settings.opus.bitrate_bps
        since = len(peer.packets)
        peer.channel.send('{"type": "say", "text": "Hello over a lossy link.", "id": "l1"}')
        await peer.until("speech.done")
        assert peer.payload_types(since) == {RED_PT}
        encoder = session.speech.encoder.current
        assert encoder is not None and encoder.get(encoder.ctl.get_inband_fec) == 1
        assert encoder.get(encoder.ctl.get_packet_loss_perc) == link["expected_loss_pct"]
    finally:
        await peer.pc.close()
