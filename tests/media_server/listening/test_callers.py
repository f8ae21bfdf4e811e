"""Callers over loopback: a real aiortc peer whose microphone plays a Piper sentence; the
room decodes it, hands 16 kHz frames and voice activity to its sinks, and frees it all
on leave."""

from __future__ import annotations

import asyncio
import fractions
import time
from typing import Final

import aiohttp
import av
import numpy as np
import numpy.typing as npt
import pytest
from aiohttp.test_utils import TestClient
from aiortc.mediastreams import MediaStreamTrack

from media_server.config import Settings
from media_server.listening.caller_audio import (
    INPUT_FRAME_MS,
    INPUT_FRAME_SAMPLES,
    INPUT_RATE_HZ,
    CallerFrame,
    VoiceActivity,
)
from media_server.rooms.room import Room
from media_server.rooms.tokens import Role, TokenSigner
from signaling.keys import MEDIA_KEY
from synthesis import Engine
from tests.conftest import loopback_settings
from tests.media_server.listening.speech import rms, spoken
from tests.whep_client import WhepClient, make_offer

pytestmark = [pytest.mark.loopback, pytest.mark.slow]

SECRET = "caller-test-secret-0123456789"
MIC_RATE_HZ: Final = 48_000
MIC_FRAME: Final = 960
LEAD_S: Final = 0.6
TAIL_S: Final = 1.2
MS: Final = INPUT_RATE_HZ // 1000


class Microphone(MediaStreamTrack):
    """A caller's microphone: plays ``pcm`` (mono s16 at 48 kHz) in real time from its
    first frame on, then silence, as a browser's would."""

    kind = "audio"

    def __init__(self, pcm: npt.NDArray[np.int16]) -> None:
        super().__init__()
        self._pcm = pcm
        self.sent = 0
        """Samples handed to the sender (48 kHz)."""
        self._start: float | None = None

    async def recv(self) -> av.AudioFrame:
        if self._start is None:
            self._start = time.monotonic()
        else:
            await asyncio.sleep(max(0.0, self._start + self.sent / MIC_RATE_HZ - time.monotonic()))
        chunk = self._pcm[self.sent : self.sent + MIC_FRAME]
        chunk = np.concatenate([chunk, np.zeros(MIC_FRAME - chunk.size, np.int16)])
        frame = av.AudioFrame.from_ndarray(chunk.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = MIC_RATE_HZ
        frame.pts = self.sent
        frame.time_base = fractions.Fraction(1, MIC_RATE_HZ)
        self.sent += MIC_FRAME
        return frame


class GarbageMicrophone(MediaStreamTrack):
    """Sends random bytes as Opus packets, 50 a second (aiortc's sender passes an
    ``av.Packet`` through as it is)."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self.sent = 0
        self._rng = np.random.default_rng(19)
        self._start: float | None = None

    async def recv(self) -> av.Packet:
        if self._start is None:
            self._start = time.monotonic()
        else:
            await asyncio.sleep(max(0.0, self._start + self.sent * 0.02 - time.monotonic()))
        packet = av.Packet(
            self._rng.integers(0, 256, int(self._rng.integers(1, 200))).astype(np.uint8).tobytes()
        )
        packet.pts = self.sent * MIC_FRAME
        packet.time_base = fractions.Fraction(1, MIC_RATE_HZ)
        self.sent += 1
        return packet


class Sink:
    def __init__(self) -> None:
        self.frames: list[CallerFrame] = []
        self.activity: list[VoiceActivity] = []

    def caller_frame(self, frame: CallerFrame) -> None:
        self.frames.append(frame)

    def voice_activity(self, activity: VoiceActivity) -> None:
        self.activity.append(activity)

    def pcm_between(self, start: int, end: int) -> npt.NDArray[np.int16]:
        return np.frombuffer(
            b"".join(f.pcm for f in self.frames if start <= f.position < end), np.int16
        )


@pytest.fixture
def settings() -> Settings:
    return loopback_settings(token_secret=SECRET)


@pytest.fixture
def signer() -> TokenSigner:
    return TokenSigner(SECRET.encode())


@pytest.fixture(scope="module")
def sentence(piper_engine: Engine) -> npt.NDArray[np.int16]:
    return spoken(piper_engine, MIC_RATE_HZ)


def member(
    client: TestClient, signer: TokenSigner, room: str, role: Role, name: str
) -> tuple[WhepClient, dict[str, str]]:
    token = signer.issue(room, role, name)
    return WhepClient(str(client.make_url("")).rstrip("/")), {"Authorization": f"Bearer {token}"}


def audio_direction(sdp: str) -> str:
    audio = sdp.split("m=audio", 1)[1].split("\r\nm=", 1)[0]
    return next(d for d in ("sendrecv", "sendonly", "recvonly", "inactive") if f"a={d}" in audio)


async def test_a_callers_voice_reaches_the_rooms_sinks(
    client: TestClient,
    http: aiohttp.ClientSession,
    signer: TokenSigner,
    sentence: npt.NDArray[np.int16],
) -> None:
    room: Room = client.app[MEDIA_KEY].rooms.get_or_create("hall")
    sink = Sink()
    room.add_caller_sink(sink)

    # a listener offering its microphone is answered sendonly: nothing is read from it
    listener, auth = member(client, signer, "hall", Role.LISTENER, "guest")
    await listener.connect(
        http, path="/rooms/hall/whep", headers=auth, microphone=Microphone(sentence)
    )
    assert audio_direction(listener.answer_sdp) == "sendonly"

    lead = np.zeros(int(LEAD_S * MIC_RATE_HZ), np.int16)
    tail = np.zeros(int(TAIL_S * MIC_RATE_HZ), np.int16)
    mic = Microphone(np.concatenate([lead, sentence, tail]).astype(np.int16))
    caller, auth = member(client, signer, "hall", Role.CALLER, "caller")
    await caller.connect(http, path="/rooms/hall/whep", headers=auth, microphone=mic)
    assert audio_direction(caller.answer_sdp) == "sendrecv"
    joined = await caller.next_event("room.joined")
    entry = next(p for p in joined["participants"] if p["identity"] == "caller")
    assert entry["role"] == "caller"
    participant = entry["member"]
    announced = await listener.next_event("participant.joined")
    while announced["identity"] != "caller":  # its own join came first
        announced = await listener.next_event("participant.joined")
    assert (announced["identity"], announced["member"]) == ("caller", participant)
    sessions = {s.identity: s for s in room.listeners.values()}
    assert sessions["guest"].peer.inbound is None and sessions["guest"].caller is None
    receiver = sessions["caller"].peer.pc.getTransceivers()[0].receiver
    assert receiver._RTCRtpReceiver__jitter_buffer._prefetch == 1  # a caller's frames go on at once

    # the whole script plays, then the frames that carry its end arrive
    script_end = (lead.size + sentence.size + tail.size) // 3
    async with asyncio.timeout(20):
        while not sink.frames or sink.frames[-1].position < script_end:
            await asyncio.sleep(0.05)
    played_ms = mic.sent * 1000 // MIC_RATE_HZ
    heard_ms = len(sink.frames) * INPUT_FRAME_MS

    positions = [f.position for f in sink.frames]
    assert all(f.participant == participant for f in sink.frames)
    assert positions == sorted(set(positions))
    assert positions[0] <= 100 * MS  # the stream starts with the microphone's first frame
    # loopback loses nothing: what was heard is what was played, less what is in flight
    assert played_ms - 600 <= heard_ms <= played_ms
    gaps = (positions[-1] - positions[0]) // INPUT_FRAME_SAMPLES + 1 - len(positions)
    assert gaps <= 5

    start, end = lead.size // 3, (lead.size + sentence.size) // 3
    assert rms(sink.pcm_between(start, end)) > 0.5 * rms(sentence)
    assert rms(sink.pcm_between(0, start - 100 * MS)) < 50  # the lead-in was silence

    # one start before the sentence's middle, one stop after it
    assert [a.speaking for a in sink.activity] == [True, False], sink.activity
    began, stopped = (a.position for a in sink.activity)
    middle = (start + end) // 2
    assert start - 100 * MS <= began < middle < stopped <= end + 500 * MS
    assert all(a.participant == participant for a in sink.activity)

    stats = room.stats()["callers"]
    assert len(stats) == 1
    assert stats[0]["member"] == participant and stats[0]["receiving"]
    assert stats[0]["frames"] == len(sink.frames) and not stats[0]["speaking"]

    # leaving frees the reader: its task ends, the room has no callers
    session = sessions["caller"]
    await caller.close(http)
    assert session.closed and not session._tasks
    assert room.callers == [] and room.stats()["callers"] == []
    room.remove_caller_sink(sink)
    await listener.close(http)


@pytest.mark.parametrize(
    "settings", [loopback_settings(token_secret=SECRET, max_callers_per_room=1)]
)
async def test_a_recvonly_caller_is_fine_and_the_caller_limit_refuses_the_next(
    client: TestClient, http: aiohttp.ClientSession, signer: TokenSigner, settings: Settings
) -> None:
    first, auth = member(client, signer, "small", Role.CALLER, "first")
    await first.connect(http, path="/rooms/small/whep", headers=auth)  # no microphone
    assert audio_direction(first.answer_sdp) == "sendonly"
    room = client.app[MEDIA_KEY].rooms.rooms["small"]
    assert room.stats()["callers"][0]["receiving"] is False

    token = signer.issue("small", Role.CALLER, "second")
    resp = await client.post(
        "/rooms/small/whep",
        data=await make_offer(),
        headers={"Content-Type": "application/sdp", "Authorization": f"Bearer {token}"},
    )
    body = await resp.json()
    assert (resp.status, body["error"]) == (503, "too_many_callers")
    assert resp.headers["Retry-After"] and "VMS_MAX_CALLERS_PER_ROOM" in body["solution"]
    # a listener still gets in
    listener, auth = member(client, signer, "small", Role.LISTENER, "third")
    await listener.connect(http, path="/rooms/small/whep", headers=auth)
    for peer in (first, listener):
        await peer.close(http)


async def test_a_caller_sending_garbage_stays_and_leaves_cleanly(
    client: TestClient, http: aiohttp.ClientSession, signer: TokenSigner
) -> None:
    room: Room = client.app[MEDIA_KEY].rooms.get_or_create("junk")
    sink = Sink()
    room.add_caller_sink(sink)
    mic = GarbageMicrophone()
    caller, auth = member(client, signer, "junk", Role.CALLER, "noisy")
    await caller.connect(http, path="/rooms/junk/whep", headers=auth, microphone=mic)
    await caller.next_event("room.joined")
    async with asyncio.timeout(10):
        while mic.sent < 100:  # 2 s of it
            await asyncio.sleep(0.05)
    # whatever libopus made of it (noise, or packets it refused), the caller is still
    # there, its reader still reads, and its frames are well formed
    (session,) = room.callers
    assert not session.closed and len(session._tasks) == 4  # connect, media, link, inbound
    assert all(len(f.pcm) == 2 * INPUT_FRAME_SAMPLES for f in sink.frames)
    await caller.close(http)
    assert session.closed and not session._tasks
    assert "junk" not in client.app[MEDIA_KEY].rooms.rooms  # its last member left
