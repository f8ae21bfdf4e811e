"""BASELINE ONLY: the naive way Python WebRTC voice stacks send audio, for comparison.

What aiortc's examples, pipecat's SmallWebRTC transport and fastrtc do, so that
``bench.capacity`` measures it beside the server: per peer, an ``AudioStreamTrack``-style
``recv`` that sleeps until ``start + timestamp / rate - time.time()`` and returns a raw
20 ms frame of pre-synthesised, looped 48 kHz speech, which aiortc encodes (96 kbps, no
FEC, a thread-pool hop per frame). ``POST /whep`` (``?idle=1``: silence), ``DELETE`` on the
``Location``; ``GET /stats`` and ``POST /stats/window`` answer as the server's do.

With an engine (``python -m bench._naive_aiortc --port N``, for ``bench.browser``) it
speaks instead: silence while idle, and on a data-channel ``say`` the WHOLE text
synthesised in a thread, then played; ``speech.started``/``speech.done`` as the server's.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import fractions
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import av
import numpy as np
import numpy.typing as npt
from aiohttp import web
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from media_server.audio.resampler import StreamResampler
from media_server.playout.stats import PacingStats
from media_server.rtc.ice import restrict_host_addresses
from synthesis import Engine, SynthesisRequest, create_engine

SAMPLE_RATE_HZ: Final = 48_000
FRAME_SAMPLES: Final = 960
FRAME_S: Final = FRAME_SAMPLES / SAMPLE_RATE_HZ
TIME_BASE: Final = fractions.Fraction(1, SAMPLE_RATE_HZ)


@dataclass(slots=True)
class Utterance:
    """One ``say``, synthesised whole: its 48 kHz PCM and when (monotonic s) it arrived."""

    id: str
    pcm: npt.NDArray[np.int16]
    received: float
    synthesised: float
    played: int = 0


class NaiveSpeechTrack(MediaStreamTrack):
    """aiortc's ``AudioStreamTrack`` timing, playing looped speech instead of silence."""

    kind = "audio"

    def __init__(self, pcm: npt.NDArray[np.int16]) -> None:
        super().__init__()
        self._pcm = pcm
        self.utterances: collections.deque[Utterance] = collections.deque()
        """Played in turn instead of ``pcm``; ``notify`` gets their speech events."""
        self.notify: Callable[[dict[str, Any]], None] = lambda event: None
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
        samples = self._speech() if self.utterances else self._looped()
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.pts = self._timestamp
        frame.sample_rate = SAMPLE_RATE_HZ
        frame.time_base = TIME_BASE
        return frame

    def _looped(self) -> npt.NDArray[np.int16]:
        end = self._offset + FRAME_SAMPLES
        if end > self._pcm.size:
            self._offset, end = 0, FRAME_SAMPLES
        samples = self._pcm[self._offset : end]
        self._offset = end
        return samples

    def _speech(self) -> npt.NDArray[np.int16]:
        u = self.utterances[0]
        if not u.played:  # handed to aiortc's encoder now: as "sent" as this design knows
            ms = {"synthesised": u.synthesised, "first_frame": time.monotonic()}
            server_ms = {k: round((v - u.received) * 1000, 1) for k, v in ms.items()}
            self.notify({"type": "speech.started", "id": u.id, "server_ms": server_ms})
        samples = u.pcm[u.played : u.played + FRAME_SAMPLES]
        u.played += FRAME_SAMPLES
        if u.played >= u.pcm.size:
            self.utterances.popleft()
            duration_ms = round(u.pcm.size / SAMPLE_RATE_HZ * 1000)
            self.notify({"type": "speech.done", "id": u.id, "duration_ms": duration_ms})
        return np.pad(samples, (0, FRAME_SAMPLES - samples.size))


def synthesise_whole(engine: Engine, text: str) -> npt.NDArray[np.int16]:
    """The naive voice agent's TTS call: all of the text, as 48 kHz PCM, before any plays."""
    resampler = StreamResampler(engine.sample_rate_hz)
    chunks = engine.synthesize(SynthesisRequest(text=text), threading.Event())
    pcm = [*(resampler.resample(c.pcm) for c in chunks), resampler.flush()]
    return np.concatenate(pcm).astype(np.int16)


PEERS_KEY: Final = web.AppKey("naive_peers", dict[str, tuple[RTCPeerConnection, NaiveSpeechTrack]])
PCM_KEY: Final = web.AppKey("naive_pcm", np.ndarray)
ENGINE_KEY: Final = web.AppKey("naive_engine", Engine)


def _listen(app: web.Application, pc: RTCPeerConnection, track: NaiveSpeechTrack) -> None:
    """Speak each data-channel ``say``: all of it synthesised in a thread, then queued."""
    tasks: set[asyncio.Task[None]] = set()

    async def say(said: str, text: str, received: float) -> None:
        pcm = await asyncio.to_thread(synthesise_whole, app[ENGINE_KEY], text)
        track.utterances.append(Utterance(said, pcm, received, time.monotonic()))

    def on_message(raw: str | bytes) -> None:
        message = json.loads(raw)
        if message.get("type") == "say":
            said = say(message.get("id", "u"), message["text"], time.monotonic())
            tasks.add(task := asyncio.create_task(said))
            task.add_done_callback(tasks.discard)

    def on_channel(channel: Any) -> None:
        track.notify = lambda event: channel.send(json.dumps(event))
        channel.on("message", on_message)

    pc.on("datachannel", on_channel)


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
    if ENGINE_KEY in request.app:
        _listen(request.app, pc, track)
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


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"sessions": len(request.app[PEERS_KEY])})


def create_naive_app(
    pcm_48k: npt.NDArray[np.int16], engine: Engine | None = None
) -> web.Application:
    app = web.Application()
    app[PEERS_KEY] = {}
    app[PCM_KEY] = pcm_48k
    if engine is not None:
        app[ENGINE_KEY] = engine
    app.router.add_get("/healthz", _healthz)
    app.router.add_post("/whep", _offer)
    app.router.add_delete("/whep/{peer_id}", _delete)
    app.router.add_get("/stats", _stats)
    app.router.add_post("/stats/window", _window)
    app.on_shutdown.append(_close_all)
    return app


def main() -> None:
    """The speaking baseline as its own server process, with ``python -m signaling``'s flags."""
    parser = argparse.ArgumentParser(prog="python -m bench._naive_aiortc")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--ice-host-address", action="append", default=[])
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args()
    logging.basicConfig(level=args.log_level)
    if args.ice_host_address:
        restrict_host_addresses(args.ice_host_address)
    engine = create_engine("piper")
    silence = np.zeros(FRAME_SAMPLES, dtype=np.int16)
    app = create_naive_app(silence, engine)
    web.run_app(app, host=args.host, port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
