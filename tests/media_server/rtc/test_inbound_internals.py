"""The aiortc internal a caller's shorter jitter buffer relies on, fenced: an aiortc
upgrade that renames or retypes it fails here (``media_server.rtc.inbound``)."""

from __future__ import annotations

from aiortc import RTCConfiguration, RTCPeerConnection
from aiortc.jitterbuffer import JitterBuffer

from media_server.rtc.inbound import CALLER_PREFETCH_FRAMES, shorten_jitter_buffer


async def test_an_audio_receiver_gets_the_shorter_jitter_buffer() -> None:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        receiver = pc.addTransceiver("audio", direction="sendrecv").receiver
        default = receiver._RTCRtpReceiver__jitter_buffer  # type: ignore[attr-defined]
        assert isinstance(default, JitterBuffer) and default._prefetch == 4
        assert shorten_jitter_buffer(receiver)
        shorter = receiver._RTCRtpReceiver__jitter_buffer  # type: ignore[attr-defined]
        assert shorter is not default and shorter._prefetch == CALLER_PREFETCH_FRAMES
        assert shorter.capacity == default.capacity
    finally:
        await pc.close()


async def test_without_the_attribute_the_default_stays() -> None:
    class Receiver:
        pass

    assert not shorten_jitter_buffer(Receiver())  # type: ignore[arg-type]
