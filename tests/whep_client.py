"""A real aiortc WHEP client used by the loopback tests and the benchmarks."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack


@dataclass
class ReceivedFrame:
    pts: int
    """Stream position in 48 kHz samples (0 = first packet received)."""
    rms: float
    arrival: float


@dataclass
class WhepClient:
    base_url: str
    pc: RTCPeerConnection = field(
        # No ICE servers: aiortc's default would contact a public STUN server.
        default_factory=lambda: RTCPeerConnection(RTCConfiguration(iceServers=[]))
    )
    location: str | None = None
    auth: dict[str, str] = field(default_factory=dict)
    """The Authorization header the session was created with: its resource needs it too."""
    frames: list[ReceivedFrame] = field(default_factory=list)
    events: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    _event_queue: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)
    _reader: asyncio.Task[None] | None = None
    _opened: asyncio.Event = field(default_factory=asyncio.Event)
    answer_sdp: str = ""

    async def connect(
        self,
        http: aiohttp.ClientSession,
        query: str = "",
        path: str = "/whep",
        headers: dict[str, str] | None = None,
        *,
        end_of_candidates: bool = True,
        before_answer: Callable[[str], Awaitable[None]] | None = None,
        microphone: MediaStreamTrack | None = None,
    ) -> None:
        """Offer, POST, apply the answer, wait for the data channel.

        Without ``end_of_candidates`` the offer leaves that line out, as a browser's
        does, so the server's ICE agent takes what is trickled; ``before_answer`` runs
        with the session's location between the POST and applying the answer. With a
        ``microphone`` the audio is offered ``sendrecv`` with that track (a caller).
        """
        if microphone is None:
            self.pc.addTransceiver("audio", direction="recvonly")
        else:
            self.pc.addTransceiver(microphone, direction="sendrecv")
        self.channel = self.pc.createDataChannel("control")
        self.channel.on("open", self._opened.set)
        self.channel.on("message", self._on_message)
        self.pc.on("track", self._on_track)
        await self.pc.setLocalDescription(await self.pc.createOffer())
        offer = self.pc.localDescription.sdp
        if not end_of_candidates:
            offer = offer.replace("a=end-of-candidates\r\n", "")
        self.auth = {k: v for k, v in (headers or {}).items() if k.lower() == "authorization"}
        async with http.post(
            f"{self.base_url}{path}{query}",
            data=offer,
            headers={"Content-Type": "application/sdp", **(headers or {})},
        ) as resp:
            assert resp.status == 201, await resp.text()
            assert resp.content_type == "application/sdp"
            self.location = resp.headers["Location"]
            answer = await resp.text()
        if before_answer is not None:
            await before_answer(self.location)
        self.answer_sdp = answer
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        await asyncio.wait_for(self._opened.wait(), 10)

    def _on_message(self, message: str | bytes) -> None:
        event = json.loads(message)
        self.events.append((time.monotonic(), event))
        self._event_queue.put_nowait(event)

    def _on_track(self, track: Any) -> None:
        self._reader = asyncio.ensure_future(self._read(track))

    async def _read(self, track: Any) -> None:
        try:
            while True:
                frame = await track.recv()
                samples = frame.to_ndarray().astype(np.float64)
                rms = float(np.sqrt(np.mean(samples**2))) if samples.size else 0.0
                self.frames.append(ReceivedFrame(int(frame.pts), rms, time.monotonic()))
        except MediaStreamError:
            return

    def say(self, text: str, utterance_id: str | None = None) -> None:
        message: dict[str, Any] = {"type": "say", "text": text}
        if utterance_id is not None:
            message["id"] = utterance_id
        self.channel.send(json.dumps(message))

    def send_raw(self, raw: str) -> None:
        self.channel.send(raw)

    def cancel(self) -> None:
        self.channel.send(json.dumps({"type": "cancel"}))

    async def next_event(self, event_type: str | None = None, wait_s: float = 20) -> dict[str, Any]:
        while True:
            event = await asyncio.wait_for(self._event_queue.get(), wait_s)
            if event_type is None or event["type"] == event_type:
                return event

    def frames_between(self, start_pts: int, end_pts: int) -> list[ReceivedFrame]:
        return [f for f in self.frames if start_pts <= f.pts < end_pts]

    async def close(self, http: aiohttp.ClientSession | None = None) -> None:
        if http is not None and self.location is not None:
            async with http.delete(f"{self.base_url}{self.location}", headers=self.auth) as resp:
                await resp.read()
        await self.pc.close()
        if self._reader is not None:
            self._reader.cancel()
            try:
                await self._reader
            except asyncio.CancelledError:
                pass


async def make_offer(end_of_candidates: bool = True) -> str:
    """A real aiortc offer as a browser makes it: recvonly audio and a data channel.

    Without ``end_of_candidates`` the offer says nothing of its candidates being
    complete, as a browser's does, so the server's ICE agent takes trickled ones.
    """
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver("audio", direction="recvonly")
    pc.createDataChannel("control")
    await pc.setLocalDescription(await pc.createOffer())
    sdp = str(pc.localDescription.sdp)
    await pc.close()
    return sdp if end_of_candidates else sdp.replace("a=end-of-candidates\r\n", "")
