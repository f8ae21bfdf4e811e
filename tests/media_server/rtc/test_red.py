"""RED (RFC 2198): the answer takes Chromium's offer, and packets repeat earlier frames."""

from __future__ import annotations

import types
from typing import Any

import pytest
from aiortc.rtcdtlstransport import State

from media_server.audio.frames import FRAME_SAMPLES, OutgoingFrame
from media_server.rtc.red import answer_with_red, offered_red, red_payload, split_red
from media_server.rtc.rtp_writer import SENDER_COUNTERS, TRANSPORT_COUNTERS, RtpWriter

# the audio section of a Chromium 156 offer, as the brief quotes it
CHROMIUM_OFFER = "\r\n".join(
    [
        "v=0",
        "o=- 1 2 IN IP4 127.0.0.1",
        "s=-",
        "t=0 0",
        "a=group:BUNDLE 0 1",
        "m=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126",
        "c=IN IP4 0.0.0.0",
        "a=mid:0",
        "a=recvonly",
        "a=rtpmap:111 opus/48000/2",
        "a=rtcp-fb:111 transport-cc",
        "a=fmtp:111 minptime=10;useinbandfec=1",
        "a=rtpmap:63 red/48000/2",
        "a=fmtp:63 111/111",
        "a=rtpmap:9 G722/8000",
        "m=application 9 UDP/DTLS/SCTP webrtc-datachannel",
        "a=mid:1",
        "",
    ]
)
AIORTC_ANSWER = "\r\n".join(
    [
        "v=0",
        "o=- 3 3 IN IP4 0.0.0.0",
        "s=-",
        "t=0 0",
        "m=audio 9 UDP/TLS/RTP/SAVPF 111 0 8",
        "a=mid:0",
        "a=sendonly",
        "a=rtpmap:111 opus/48000/2",
        "a=rtcp-fb:111 transport-cc",
        "a=fmtp:111 minptime=10;useinbandfec=1",
        "a=rtpmap:0 PCMU/8000",
        "m=application 9 UDP/DTLS/SCTP webrtc-datachannel",
        "a=mid:1",
        "",
    ]
)


def test_the_offers_red_over_opus_is_found() -> None:
    assert offered_red(CHROMIUM_OFFER, 111) == 63
    assert offered_red(CHROMIUM_OFFER, 96) is None  # RED over another codec is not ours
    assert offered_red(CHROMIUM_OFFER.replace("a=fmtp:63 111/111", "a=fmtp:63 111/9"), 111) is None
    assert offered_red(CHROMIUM_OFFER.replace("red/48000", "red/8000"), 111) is None
    assert offered_red("v=0\r\nm=application 9 UDP/DTLS/SCTP x\r\n", 111) is None


def test_the_answer_lists_red_after_opus_in_the_audio_section_only() -> None:
    answer = answer_with_red(AIORTC_ANSWER, 63, 111)
    lines = answer.split("\r\n")
    assert "m=audio 9 UDP/TLS/RTP/SAVPF 111 63 0 8" in lines
    at = lines.index("a=rtpmap:63 red/48000/2")
    assert lines[at - 1] == "a=fmtp:111 minptime=10;useinbandfec=1"
    assert lines[at + 1] == "a=fmtp:63 111/111"
    assert at < lines.index("m=application 9 UDP/DTLS/SCTP webrtc-datachannel")
    assert answer.endswith("\r\n") and "\n\n" not in answer.replace("\r\n", "\n")
    assert answer_with_red(answer, 63, 111) == answer  # already there: unchanged
    assert answer_with_red(AIORTC_ANSWER, 63, 96) == AIORTC_ANSWER  # no such Opus


def test_a_red_payload_splits_back_into_its_frames() -> None:
    payload = red_payload(111, b"primary", [(1920, b"two-back"), (960, b"one-back")])
    assert payload[0] == 0x80 | 111 and payload[8] == 111  # two 4-byte headers, then the last
    assert split_red(payload) == ([(1920, b"two-back"), (960, b"one-back")], b"primary")
    assert split_red(red_payload(111, b"alone", [])) == ([], b"alone")


def test_blocks_the_header_cannot_describe_are_left_out() -> None:
    too_far = (1 << 14, b"x")
    too_long = (960, b"y" * 1024)
    assert split_red(red_payload(111, b"p", [too_far, too_long, (960, b"ok")])) == (
        [(960, b"ok")],
        b"p",
    )


@pytest.mark.parametrize("payload", [b"", b"\xef", b"\xef\x00\x3c", b"\xef\x00\x3c\x05\x6f"])
def test_a_malformed_red_payload_is_refused(payload: bytes) -> None:
    with pytest.raises(ValueError):
        split_red(payload)


class Wire:
    """The socket a writer sends to, keeping each packet's payload type and payload."""

    def __init__(self) -> None:
        self.packets: list[tuple[int, bytes]] = []

    def sendto(self, data: bytes, addr: Any) -> None:
        header = 12 + 4 + 4  # fixed header, one-byte extension header, the mid element
        self.packets.append((data[1] & 0x7F, data[header:]))


def bare_writer(red_payload_type: int | None) -> tuple[RtpWriter, Wire]:
    """A writer over stand-ins for aiortc's parts: SRTP that protects nothing."""
    wire = Wire()
    pair = types.SimpleNamespace(protocol=types.SimpleNamespace(transport=wire), remote_addr=None)
    ice = types.SimpleNamespace(_nominated={1: pair})
    srtp = types.SimpleNamespace(protect=lambda data: data)
    dtls = types.SimpleNamespace(_tx_srtp=srtp, _state=State.CONNECTED)
    sender = types.SimpleNamespace()
    for name in SENDER_COUNTERS:
        setattr(sender, name, 0)
    for name in TRANSPORT_COUNTERS:
        setattr(dtls, name, 0)
    header = bytes([0x90, 111]) + bytes(10) + bytes([0xBE, 0xDE, 0, 1, 0x10, ord("0"), 0, 0])
    return RtpWriter(sender, dtls, ice, 111, header, red_payload_type), wire


def frame(n: int, speech: bool = True) -> OutgoingFrame:
    return OutgoingFrame(f"frame{n}".encode(), n * FRAME_SAMPLES, speech)


def test_speech_packets_repeat_the_frames_before_them() -> None:
    writer, wire = bare_writer(63)
    writer.red_distance = 2
    for n in range(4):
        writer.write(frame(n))
    assert [pt for pt, _ in wire.packets] == [63] * 4
    assert split_red(wire.packets[0][1]) == ([], b"frame0")
    assert split_red(wire.packets[1][1]) == ([(960, b"frame0")], b"frame1")
    assert split_red(wire.packets[3][1]) == ([(1920, b"frame1"), (960, b"frame2")], b"frame3")
    assert writer.red_packets == 4


def test_a_clean_link_goes_as_plain_opus_and_a_lossy_one_repeats_silence_too() -> None:
    writer, wire = bare_writer(63)
    writer.write(frame(0))  # distance 0: the link is clean
    writer.red_distance = 1
    writer.write(frame(1, speech=False))  # lost silence is concealed too: repeated
    writer.write(frame(2))
    writer.write(frame(4))  # ticks skipped by the pacer: the offset says so
    assert [pt for pt, _ in wire.packets] == [111, 63, 63, 63]
    assert wire.packets[0][1] == b"frame0"
    assert split_red(wire.packets[1][1]) == ([(960, b"frame0")], b"frame1")
    assert split_red(wire.packets[2][1]) == ([(960, b"frame1")], b"frame2")
    assert split_red(wire.packets[3][1]) == ([(1920, b"frame2")], b"frame4")
    writer.red_distance = 0
    writer.write(frame(5))
    assert wire.packets[-1] == (111, b"frame5")


def test_without_negotiated_red_the_distance_changes_nothing() -> None:
    writer, wire = bare_writer(None)
    writer.red_distance = 2
    writer.write(frame(0))
    writer.write(frame(1))
    assert wire.packets == [(111, b"frame0"), (111, b"frame1")]
