"""RED for Opus (RFC 2198): negotiating it in the answer and packing redundant frames.

Chromium offers ``red/48000/2`` with ``a=fmtp:PT 111/111`` in every audio offer; with it a
packet also carries the one or two frames before its own, so a lost packet costs nothing
when a later one arrives in time. aiortc knows no RED and drops it from its answer:
:func:`answer_with_red` puts it back, and the ``RtpWriter`` sends RED payloads only while
the link needs them (plain Opus otherwise, which a receiver that negotiated RED still takes).
"""

from __future__ import annotations

import re
import struct
from collections.abc import Sequence
from typing import Final

MAX_BLOCK_BYTES: Final = 1023
"""A redundant block's length field has 10 bits."""
MAX_OFFSET_SAMPLES: Final = (1 << 14) - 1
"""A redundant block's timestamp offset has 14 bits (over 300 ms at 48 kHz)."""

_RTPMAP = re.compile(r"^a=rtpmap:(\d+) ([\w-]+)/(\d+)(?:/(\d+))?\s*$", re.IGNORECASE)
_FMTP = re.compile(r"^a=fmtp:(\d+) (.*?)\s*$")
_MEDIA = re.compile(r"^m=audio (\S+) (\S+)((?: \d+)*)\s*$")


def _audio_section(lines: Sequence[str]) -> tuple[int, int] | None:
    """Line indexes ``[start, end)`` of the first ``m=audio`` section."""
    start = next((i for i, line in enumerate(lines) if line.startswith("m=audio ")), None)
    if start is None:
        return None
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("m=")), len(lines))
    return start, end


def offered_red(offer_sdp: str, opus_payload_type: int) -> int | None:
    """The payload type of RED over ``opus_payload_type`` in the offer's audio, or None.

    Only RED whose every block is that Opus (``a=fmtp:63 111/111``) is taken: the writer
    puts nothing else in it.
    """
    lines = offer_sdp.splitlines()
    section = _audio_section(lines)
    if section is None:
        return None
    red: set[int] = set()
    blocks: dict[int, str] = {}
    for line in lines[section[0] : section[1]]:
        rtpmap = _RTPMAP.match(line)
        if rtpmap and rtpmap.group(2).lower() == "red" and rtpmap.group(3) == "48000":
            red.add(int(rtpmap.group(1)))
        fmtp = _FMTP.match(line)
        if fmtp:
            blocks[int(fmtp.group(1))] = fmtp.group(2)
    for payload_type in sorted(red):
        parts = blocks.get(payload_type, "").split("/")
        if parts and all(part == str(opus_payload_type) for part in parts):
            return payload_type
    return None


def answer_with_red(answer_sdp: str, red_payload_type: int, opus_payload_type: int) -> str:
    """``answer_sdp`` with RED (over Opus) added to its audio section, after Opus.

    aiortc never reads its own answer again (no renegotiation), so the text the client
    gets may say more than aiortc knows: RED changes only what the writer sends.
    """
    newline = "\r\n" if "\r\n" in answer_sdp else "\n"
    lines = answer_sdp.splitlines()
    section = _audio_section(lines)
    if section is None:
        return answer_sdp
    start, end = section
    media = _MEDIA.match(lines[start])
    if media is None or str(red_payload_type) in media.group(3).split():
        return answer_sdp
    formats = media.group(3).split()
    if str(opus_payload_type) not in formats:
        return answer_sdp
    formats.insert(formats.index(str(opus_payload_type)) + 1, str(red_payload_type))
    lines[start] = f"m=audio {media.group(1)} {media.group(2)} {' '.join(formats)}"
    opus_lines = [
        i
        for i in range(start, end)
        if re.match(rf"^a=(rtpmap|fmtp|rtcp-fb):{opus_payload_type} ", lines[i])
    ]
    at = (opus_lines[-1] + 1) if opus_lines else end
    lines[at:at] = [
        f"a=rtpmap:{red_payload_type} red/48000/2",
        f"a=fmtp:{red_payload_type} {opus_payload_type}/{opus_payload_type}",
    ]
    return newline.join(lines) + newline


_BLOCK_HEADER: Final = struct.Struct("!BHB")  # F|PT, offset (14) | length (10), spread over 4 bytes


def red_payload(payload_type: int, primary: bytes, redundant: Sequence[tuple[int, bytes]]) -> bytes:
    """An RFC 2198 payload: ``redundant`` ((timestamp offset in samples, Opus frame),
    oldest first), then ``primary``. Blocks that do not fit the header's fields are left out."""
    headers = bytearray()
    blocks = bytearray()
    for offset, frame in redundant:
        if not 0 < offset <= MAX_OFFSET_SAMPLES or not 0 < len(frame) <= MAX_BLOCK_BYTES:
            continue
        word = (offset << 10) | len(frame)  # 24 bits: offset, then length
        headers += _BLOCK_HEADER.pack(0x80 | payload_type, word >> 8, word & 0xFF)
        blocks += frame
    headers.append(payload_type & 0x7F)
    return bytes(headers + blocks + primary)


def split_red(payload: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """The inverse of :func:`red_payload`: ((offset, frame) oldest first, primary).

    For tests and tools (a receiver's view); raises ``ValueError`` on a malformed payload.
    """
    headers: list[tuple[int, int]] = []
    at = 0
    while True:
        if at >= len(payload):
            raise ValueError("RED payload ends inside its headers")
        if not payload[at] & 0x80:
            at += 1
            break
        if at + 4 > len(payload):
            raise ValueError("RED payload ends inside a block header")
        word = int.from_bytes(payload[at + 1 : at + 4], "big")
        headers.append((word >> 10, word & 0x3FF))
        at += 4
    redundant: list[tuple[int, bytes]] = []
    for offset, length in headers:
        if at + length > len(payload):
            raise ValueError("RED block runs past the payload")
        redundant.append((offset, payload[at : at + length]))
        at += length
    return redundant, payload[at:]
