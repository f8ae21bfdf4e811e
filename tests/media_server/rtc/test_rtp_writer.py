"""RTP written straight from the pacer's tick: what a real aiortc receiver gets.

The server's :class:`~media_server.rtc.rtp_writer.RtpWriter` replaces aiortc's sender
task for our pre-encoded audio, so these tests look at the packets themselves, as
the client's RTP receiver sees them after SRTP: one payload type, one SSRC, the
negotiated ``mid`` extension, unbroken sequence numbers, timestamps 960 apart, the
marker on the first packet and at each talkspurt; and at what aiortc's RTCP sender
reports say, which the writer's counters feed.
"""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from aiortc.rtp import RtpPacket

from media_server.audio.frames import FRAME_SAMPLES, OutgoingFrame
from media_server.config import Settings
from media_server.sessions.session import VoiceSession
from tests.conftest import loopback_settings
from tests.ice_mover import session_of
from tests.whep_client import WhepClient

pytestmark = [pytest.mark.loopback, pytest.mark.slow]


class CapturingClient(WhepClient):
    """A WHEP client that also keeps every RTP packet its audio receiver is handed."""

    packets: list[RtpPacket]

    async def connect(self, http: aiohttp.ClientSession, *args: Any, **kwargs: Any) -> None:
        # Capture from the moment the transceiver exists: RTP may arrive before the data
        # channel opens (which is when connect returns), and its first packet carries
        # the stream's first marker.
        self.packets = []
        add_transceiver = self.pc.addTransceiver

        def add_capturing(*add_args: Any, **add_kwargs: Any) -> Any:
            transceiver = add_transceiver(*add_args, **add_kwargs)
            if transceiver.kind == "audio":
                self._capture(transceiver.receiver)
            return transceiver

        self.pc.addTransceiver = add_capturing  # type: ignore[method-assign]
        await super().connect(http, *args, **kwargs)

    def _capture(self, receiver: Any) -> None:
        handle = receiver._handle_rtp_packet

        async def capture(packet: RtpPacket, arrival_time_ms: int) -> None:
            self.packets.append(packet)
            await handle(packet, arrival_time_ms)

        receiver._handle_rtp_packet = capture


@pytest.fixture
async def peer(client: TestClient, http: aiohttp.ClientSession) -> AsyncIterator[CapturingClient]:
    capturing = CapturingClient(str(client.make_url("")).rstrip("/"))
    await capturing.connect(http)
    yield capturing
    await capturing.close(http)


def server_session(client: TestClient, peer: WhepClient) -> VoiceSession:
    session = session_of(client, peer)
    assert isinstance(session, VoiceSession)
    return session


async def inbound_stats(peer: WhepClient) -> dict[str, Any]:
    report = await peer.pc.getStats()
    found: dict[str, Any] = {}
    for stats in report.values():
        if stats.type in ("inbound-rtp", "remote-outbound-rtp") and stats.kind == "audio":
            found[stats.type] = stats
    return found


async def test_packets_from_the_writer_are_a_well_formed_stream(
    client: TestClient, peer: CapturingClient
) -> None:
    session = server_session(client, peer)
    peer.say("Hello there, this is a short sentence.", "s1")
    started = await peer.next_event("speech.started")
    await peer.next_event("speech.done")
    await asyncio.sleep(0.3)

    writer = session.track.writer
    assert writer is not None, "the direct writer was not bound"
    packets = list(peer.packets)
    assert len(packets) > 50
    assert writer.sent >= len(packets)

    answer = peer.pc.remoteDescription.sdp
    audio_pt = int(answer.split("m=audio ", 1)[1].split("\r\n", 1)[0].split()[2])
    mid = next(t.mid for t in peer.pc.getTransceivers() if t.kind == "audio")
    assert {p.payload_type for p in packets} == {audio_pt}
    assert len({p.ssrc for p in packets}) == 1
    assert {p.extensions.mid for p in packets} == {mid}

    for before, after in zip(packets, packets[1:], strict=False):
        assert after.sequence_number == (before.sequence_number + 1) & 0xFFFF
        step = (after.timestamp - before.timestamp) & 0xFFFFFFFF
        # a pacer that skipped ticks after a stall skips their timestamps too
        assert step % FRAME_SAMPLES == 0 and step >= FRAME_SAMPLES
    skipped = session.pacer.stats.snapshot().skipped_frames
    span = (packets[-1].timestamp - packets[0].timestamp) & 0xFFFFFFFF
    assert span == (len(packets) - 1 + skipped) * FRAME_SAMPLES

    # The marker opens the stream and the talkspurt, nowhere else. The stream's first
    # packets may be sent before this client's DTLS is done and never reach it (about
    # one run in ten): the stream opened where speech.started's stream_ts says.
    markers = [i for i, p in enumerate(packets) if p.marker]
    talkspurt = markers[-1]
    origin = (packets[talkspurt].timestamp - started["stream_ts"]) & 0xFFFFFFFF
    opened_here = packets[0].timestamp == origin
    assert markers == ([0, talkspurt] if opened_here else [talkspurt]), markers
    assert talkspurt > 0 and packets[talkspurt].payload != packets[0].payload

    stats = await inbound_stats(peer)
    assert stats["inbound-rtp"].packetsLost == 0


async def test_sender_reports_count_what_the_writer_sent(
    client: TestClient, peer: CapturingClient
) -> None:
    session = server_session(client, peer)
    # aiortc sends a sender report every 0.5-1.5 s from the counters the writer keeps
    async with asyncio.timeout(6):
        while True:
            stats = await inbound_stats(peer)
            remote = stats.get("remote-outbound-rtp")
            if remote is not None and remote.packetsSent > 0:
                break
            await asyncio.sleep(0.2)
    writer = session.track.writer
    assert writer is not None
    assert 0 < remote.packetsSent <= writer.sent
    # the report was taken within the last 1.5 s: at most ~75 packets ago
    assert writer.sent - remote.packetsSent <= 100
    sender = next(t.sender for t in session.peer.pc.getTransceivers() if t.kind == "audio")
    outbound = [s for s in (await sender.getStats()).values() if s.type == "outbound-rtp"]
    assert outbound[0].packetsSent == writer.sent
    # the report's NTP time is the wall clock when a packet went out
    age = datetime.datetime.now(datetime.UTC) - remote.remoteTimestamp
    assert datetime.timedelta(0) <= age < datetime.timedelta(seconds=3), age


async def test_a_writer_whose_peer_went_away_counts_instead_of_raising(
    client: TestClient, peer: CapturingClient
) -> None:
    session = server_session(client, peer)
    await asyncio.sleep(0.2)
    writer = session.track.writer
    assert writer is not None
    await peer.pc.close()  # the client vanishes; the server notices by itself
    async with asyncio.timeout(15):
        while session.peer.connection_state not in ("closed", "failed"):
            await asyncio.sleep(0.1)
    before = writer.unsent
    writer.write(OutgoingFrame(b"\xf8\xff\xfe", 0, False))
    assert writer.unsent == before + 1


@pytest.mark.parametrize("settings", [loopback_settings(direct_rtp=False)])
async def test_without_the_writer_aiortc_sends_the_same_audio(
    client: TestClient, peer: CapturingClient, settings: Settings
) -> None:
    session = server_session(client, peer)
    peer.say("Hello there.", "s1")
    started = await peer.next_event("speech.started")
    done = await peer.next_event("speech.done")
    await asyncio.sleep(0.2)
    assert session.track.writer is None
    assert done["end_ts"] > started["stream_ts"]
    speech = [f for f in peer.frames if started["stream_ts"] <= f.pts < done["end_ts"]]
    assert len(speech) * FRAME_SAMPLES >= done["end_ts"] - started["stream_ts"] - FRAME_SAMPLES
    sequence = [p.sequence_number for p in peer.packets]
    assert all((b - a) & 0xFFFF == 1 for a, b in zip(sequence, sequence[1:], strict=False))
