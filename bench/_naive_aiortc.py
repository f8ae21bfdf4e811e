"""BASELINE ONLY: the naive way Python WebRTC voice stacks send audio, for comparison.

What aiortc's examples, pipecat's SmallWebRTC transport and fastrtc do, so that
``bench.capacity`` measures it beside the server: per peer, an ``AudioStreamTrack``-style
``recv`` that sleeps until ``start + timestamp / rate - time.time()`` and returns a raw
20 ms frame of pre-synthesised, looped 48 kHz speech, which aiortc encodes (96 kbps, no
FEC, a thread-pool hop per frame). ``POST /whep`` (``?idle=1``: silence), ``DELETE`` on the
``Location``; ``GET /stats`` and ``POST /stats/window`` answer as the server's do.
"""

from __future__ import annotations

import asyncio
import fractions
import time
import uuid
from typing import Final

import av
import numpy as np
import numpy.typing as npt
from aiohttp import web
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from media_server.playout.stats import PacingStats

SAMPLE_RATE_HZ: Final = 48_000
FRAME_SAMPLES: Final = 960
FRAME_S: Final = FRAME_SAMPLES / SAMPLE_RATE_HZ
TIME_BASE: Final = fractions.Fraction(1, SAMPLE_RATE_HZ)


class NaiveSpeechTrack(MediaStreamTrack):
    """aiortc's ``AudioStreamTrack`` timing, playing looped speech instead of silence."""

    kind = "audio"

    def __init__(self, pcm: npt.NDArray[np.int16]) -> None:
        super().__init__()
        self._pcm = pcm
        self.stats = PacingStats()
        """Figures as the server keeps them (the same class: a ring of 3000, a window)."""
        self._offset = 0
        self._start = 0.0
        self._timestamp: int | None = None

    async def recv(self) -> av.AudioFrame:
        if self._timestamp is not None:
            self._timestamp += FRAME_SAMPLES
            deadline = self._start + self._timestamp / SAMPLE_RATE_HZ
            await asyncio.sleep(deadline - time.time())
            self.stats.record(max(0.0, time.time() - deadline), speech=True)
        else:
            self._start = time.time()
            self._timestamp = 0
        end = self._offset + FRAME_SAMPLES
        if end > self._pcm.size:
            self._offset, end = 0, FRAME_SAMPLES
        samples = self._pcm[self._offset : end]
        self._offset = end
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.pts = self._timestamp
        frame.sample_rate = SAMPLE_RATE_HZ
        frame.time_base = TIME_BASE
        return frame


PEERS_KEY: Final = web.AppKey("naive_peers", dict[str, tuple[RTCPeerConnection, NaiveSpeechTrack]])
PCM_KEY: Final = web.AppKey("naive_pcm", np.ndarray)


async def _offer(request: web.Request) -> web.Response:
    offer = await request.text()
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    peer_id = uuid.uuid4().hex
    await pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
    # ?idle=1: a session with nothing to say sends silence (aiortc's AudioStreamTrack)
    pcm = request.app[PCM_KEY]
    if request.query.get("idle") == "1":
        pcm = np.zeros(FRAME_SAMPLES, dtype=np.int16)
    track = NaiveSpeechTrack(pcm)
    request.app[PEERS_KEY][peer_id] = (pc, track)
    pc.addTrack(track)
    await pc.setLocalDescription(await pc.createAnswer())
    return web.Response(
        status=201,
        content_type="application/sdp",
        text=pc.localDescription.sdp,
        headers={"Location": f"/whep/{peer_id}"},
    )


async def _delete(request: web.Request) -> web.Response:
    peer = request.app[PEERS_KEY].pop(request.match_info["peer_id"], None)
    if peer is None:
        raise web.HTTPNotFound()
    await peer[0].close()
    return web.Response()


async def _stats(request: web.Request) -> web.Response:
    per_session = [track.stats.snapshot().as_dict() for _, track in request.app[PEERS_KEY].values()]
    return web.json_response({"sessions": len(per_session), "per_session": per_session})


async def _window(request: web.Request) -> web.Response:
    for _, track in request.app[PEERS_KEY].values():
        track.stats.start_window()
    return web.json_response({"sessions": len(request.app[PEERS_KEY]), "rooms": 0})


async def _close_all(app: web.Application) -> None:
    peers = list(app[PEERS_KEY].values())
    app[PEERS_KEY].clear()
    await asyncio.gather(*(pc.close() for pc, _ in peers), return_exceptions=True)


def create_naive_app(pcm_48k: npt.NDArray[np.int16]) -> web.Application:
    app = web.Application()
    app[PEERS_KEY] = {}
    app[PCM_KEY] = pcm_48k
    app.router.add_post("/whep", _offer)
    app.router.add_delete("/whep/{peer_id}", _delete)
    app.router.add_get("/stats", _stats)
    app.router.add_post("/stats/window", _window)
    app.on_shutdown.append(_close_all)
    return app
