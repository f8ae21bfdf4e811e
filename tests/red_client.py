"""A WHEP client that offers RED as Chromium does, and can lose packets on purpose."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.rtp import RtpPacket

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
    """Offers RED, answers with what the server says, keeps every RTP packet it gets.

    With ``drop_every`` it loses every n-th packet before its receiver counts it, so its
    RTCP receiver reports tell the server of a lossy link, as a mobile client's do.
    """

    def __init__(self, drop_every: int = 0) -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.packets: list[RtpPacket] = []
        self.events: asyncio.Queue[str] = asyncio.Queue()
        self.answer = ""
        self.location = ""
        self.drop_every = drop_every

    async def connect(
        self,
        http: aiohttp.ClientSession,
        url: str,
        red: bool = True,
        headers: dict[str, str] | None = None,
    ) -> None:
        transceiver = self.pc.addTransceiver("audio", direction="recvonly")
        handle = transceiver.receiver._handle_rtp_packet
        arrived = 0

        async def capture(packet: RtpPacket, arrival_time_ms: int) -> None:
            nonlocal arrived
            arrived += 1
            if self.drop_every and arrived % self.drop_every == 0:
                return
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
            url,
            data=offer_red(offer) if red else offer,
            headers={"Content-Type": "application/sdp", **(headers or {})},
        ) as resp:
            assert resp.status == 201, await resp.text()
            self.answer = await resp.text()
            self.location = resp.headers["Location"]
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=self.answer, type="answer"))
        await asyncio.wait_for(opened.wait(), 10)
        # aiortc's router drops a payload type its receiver does not decode: let RED through
        # to the capture above (the receiver itself then drops it, undecoded)
        router = transceiver.receiver.transport._rtp_router
        router.payload_type_table.setdefault(RED_PT, set()).add(transceiver.receiver)

    async def until(self, event_type: str) -> dict[str, Any]:
        while True:
            event: dict[str, Any] = json.loads(await asyncio.wait_for(self.events.get(), 20))
            if event["type"] == event_type:
                return event

    @property
    def opus_pt(self) -> int:
        """Opus's payload type in the server's answer."""
        line = next(line for line in self.answer.split("\r\n") if " opus/48000/2" in line)
        return int(line.split()[0].split(":")[1])

    def payload_types(self, since: int = 0) -> set[int]:
        return {p.payload_type for p in self.packets[since:]}


async def until_link(stats: Any, ready: Any, wait_s: float = 15) -> dict[str, Any]:
    """The ``link`` stats once ``ready(link)`` holds (reports come every 0.5-1.5 s)."""
    async with asyncio.timeout(wait_s):
        while not ready(link := stats()["link"]):
            await asyncio.sleep(0.2)
    return dict(link)
