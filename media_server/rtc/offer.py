"""An SDP offer's structure, checked before any WebRTC work is done on it."""

from __future__ import annotations

import re
from typing import Final

from media_server.rtc.errors import OfferError

MAX_MEDIA_SECTIONS: Final = 8
"""``m=`` sections an offer may have: a client needs two (audio, data channel)."""

_MID = re.compile(r"^a=mid:(\S+)\s*$", re.MULTILINE)
_BUNDLE = re.compile(r"^a=group:BUNDLE(.*)$", re.MULTILINE)
_MEDIA = re.compile(r"^m=(\w+) ", re.MULTILINE)


def check_offer(sdp: str) -> None:
    """Cheap structural checks before any WebRTC work is done."""
    if not sdp.lstrip().startswith("v=0"):
        raise OfferError("the body is not an SDP offer", "send the offer SDP, starting with 'v=0'")
    kinds = _MEDIA.findall(sdp)
    if len(kinds) > MAX_MEDIA_SECTIONS:
        raise OfferError(
            f"the offer has {len(kinds)} media sections, at most {MAX_MEDIA_SECTIONS} are taken",
            "offer one recvonly audio transceiver and one data channel",
        )
    if "audio" not in kinds:
        raise OfferError(
            "the offer has no audio section",
            "add a recvonly audio transceiver before creating the offer",
        )
    mids = _MID.findall(sdp)
    if len(set(mids)) != len(mids):
        raise OfferError(
            "two media sections of the offer share one a=mid",
            "send the unmodified offer SDP from RTCPeerConnection.createOffer()",
        )
    for group in _BUNDLE.findall(sdp):
        # aiortc bundles onto the transport of the group's first mid; an unknown one
        # would leave the other sections with no transport at all
        unknown = [mid for mid in group.split() if mid not in mids]
        if unknown:
            raise OfferError(
                f"a=group:BUNDLE names media sections the offer lacks: {' '.join(unknown)[:100]}",
                "send the unmodified offer SDP from RTCPeerConnection.createOffer()",
            )
