"""Data-channel retransmission timers: what this session's SCTP association waits."""

from __future__ import annotations

import pytest
from aiortc.rtcsctptransport import RTCSctpTransport

from media_server.rtc.peer import PeerSession
from media_server.rtc.sctp import (
    ASSOCIATION_FIELDS,
    RTO_INITIAL_S,
    RTO_MAX_S,
    RTO_MIN_S,
    quicken_retransmission,
)
from media_server.rtc.track import EncodedAudioTrack


def test_aiortc_still_has_what_is_changed() -> None:
    """Fails on an aiortc upgrade that renames the association's timer fields."""
    assert callable(getattr(RTCSctpTransport, "_update_rto", None))
    for name in ("_rto", "_srtt", "_rttvar"):
        assert name in RTCSctpTransport.__init__.__code__.co_names, name
    assert set(ASSOCIATION_FIELDS) == {"_rto", "_srtt", "_rttvar", "_update_rto"}


class Association:
    """aiortc's timer fields and its RFC 4960 update, without a transport under them."""

    def __init__(self) -> None:
        self._rto = 3.0
        self._srtt: float | None = None
        self._rttvar: float | None = None

    def _update_rto(self, round_trip_s: float) -> None:
        RTCSctpTransport._update_rto(self, round_trip_s)  # type: ignore[arg-type]


def test_the_timeout_starts_low_and_stays_within_its_bounds() -> None:
    sctp = Association()
    assert quicken_retransmission(sctp)
    assert sctp._rto == RTO_INITIAL_S
    sctp._update_rto(0.01)  # a LAN: RFC 4960 would wait a whole second
    assert sctp._rto == RTO_MIN_S
    for _ in range(20):
        sctp._update_rto(0.12)  # a mobile round trip
    assert RTO_MIN_S <= sctp._rto < 0.3
    sctp._update_rto(30.0)  # one huge sample: RFC 4960 would allow 60 s
    assert sctp._rto == RTO_MAX_S


def test_another_aiortc_is_left_alone() -> None:
    assert not quicken_retransmission(object())
    assert not quicken_retransmission(None)


@pytest.mark.loopback
async def test_a_sessions_association_is_quickened(offer: str) -> None:
    peer = PeerSession("sctp", (), lambda raw: None, lambda state: None)
    try:
        await peer.answer(offer, EncodedAudioTrack())
        assert peer.pc.sctp is not None and peer.pc.sctp._rto == RTO_INITIAL_S
    finally:
        await peer.close()
