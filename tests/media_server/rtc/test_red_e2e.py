"""RED and the link adaptor with a real aiortc client over real HTTP and RTP.

The client's offer carries RED as Chromium's does (aiortc's own offer has none); aiortc's
router drops the RED packets it cannot decode, so the test lets them through to its receiver
and reads the packets before the receiver (which cannot decode them either) drops them.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.rtp import RtpPacket

from media_server.audio.frames import FRAME_SAMPLES
from media_server.config import Settings
from media_server.rtc.red import split_red
from signaling.keys import MEDIA_KEY
from tests.conftest import loopback_settings

pytestmark = [pytest.mark.loopback, pytest.mark.slow]

RED_PT = 63


def offer_red(sdp: str) -> str:
    """aiortc's offer with ``red/48000/2`` over its Opus, the way Chromium offers it."""
    lines = sdp.split("\r\n")
    media = next(i for i, line in enumerate(lines) if line.startswith("m=audio "))
    opus = next(line for line in lines if " opus/48000/2" in line).split()[0].split(":")[1]
    lines[media] += f" {RED_PT}"
    at = lines.index(next(line for line in lines if " opus/48000/2" in line)) + 1
    lines[at:at] = [f"a=rtpmap:{RED_PT} red/48000/2", f"a=fmtp:{RED_PT} {opus}/{opus}"]
    return "\r\n".join(lines)


class RedClient:
    """Offers RED, answers with what the server says, keeps every RTP packet it gets."""

    def __init__(self) -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.packets: list[RtpPacket] = []
        self.events: asyncio.Queue[str] = asyncio.Queue()
        self.answer = ""
        self.location = ""

    async def connect(self, http: aiohttp.ClientSession, base_url: str, red: bool = True) -> None:
        transceiver = self.pc.addTransceiver("audio", direction="recvonly")
        handle = transceiver.receiver._handle_rtp_packet

        async def capture(packet: RtpPacket, arrival_time_ms: int) -> None:
            self.packets.append(packet)
            await handle(packet, arrival_time_ms)

        transceiver.receiver._handle_rtp_packet = capture  # type: ignore[method-assign]
        self.channel = self.pc.createDataChannel("control")
        opened = asyncio.Event()
        self.channel.on("open", opened.set)
        self.channel.on("message", self.events.put_nowait)
        await self.pc.setLocalDescription(await self.pc.createOffer())
        offer = self.pc.localDescription.sdp
        async with http.post(
            f"{base_url}/whep",
            data=offer_red(offer) if red else offer,
            headers={"Content-Type": "application/sdp"},
        ) as resp:
            assert resp.status == 201, await resp.text()
            self.answer = await resp.text()
            self.location = resp.headers["Location"]
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=self.answer, type="answer"))
        await asyncio.wait_for(opened.wait(), 10)
        # aiortc's router drops a payload type its receiver does not decode: let RED through
        router = transceiver.receiver.transport._rtp_router
        router.payload_type_table.setdefault(RED_PT, set()).add(transceiver.receiver)

    async def until(self, event_type: str) -> None:
        while json.loads(await asyncio.wait_for(self.events.get(), 20))["type"] != event_type:
            pass


async def spoken(client: TestClient, http: aiohttp.ClientSession, red: bool = True) -> RedClient:
    peer = RedClient()
    await peer.connect(http, str(client.make_url("")).rstrip("/"), red)
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
        assert len(red) == len(peer.packets) > 50, "every packet goes as RED"

        primaries = {p.timestamp: split_red(p.payload)[1] for p in red}
        repeated = 0
        for packet in red:
            for offset, block in split_red(packet.payload)[0]:
                assert offset in (FRAME_SAMPLES, 2 * FRAME_SAMPLES)
                earlier = (packet.timestamp - offset) & 0xFFFFFFFF
                if earlier in primaries:  # a block repeats the primary frame sent then
                    assert primaries[earlier] == block
                    repeated += 1
        assert repeated >= 2 * (len(red) - 3)
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
