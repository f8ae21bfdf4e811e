"""Data-channel retransmission that suits a real-time session, not RFC 4960's defaults.

aiortc's SCTP starts with a 3 s retransmission timeout and never goes under 1 s, so an
event lost on a mobile link (``speech.started``, an ``error``) arrives seconds late. The
timeout here starts lower and follows the measured round trip more closely (bounds in
docs/protocol.md). Only this session's association is changed: aiortc's module
constants stay as they are.
"""

from __future__ import annotations

import logging
from typing import Any, Final

logger = logging.getLogger(__name__)

RTO_INITIAL_S: Final = 0.5
"""Before any round trip is measured (RFC 4960: 3 s)."""
RTO_MIN_S: Final = 0.2
"""Never wait less than this (RFC 4960: 1 s); above a mobile link's usual round trip."""
RTO_MAX_S: Final = 2.0
"""Never wait more than this between tries (RFC 4960: 60 s)."""

ASSOCIATION_FIELDS: Final = ("_rto", "_srtt", "_rttvar", "_update_rto")
"""What of aiortc's ``RTCSctpTransport`` this changes (checked by a test on upgrade)."""


def quicken_retransmission(sctp: Any) -> bool:
    """Bound ``sctp``'s retransmission timeout to ``[RTO_MIN_S, RTO_MAX_S]``, starting at
    ``RTO_INITIAL_S``; False (and nothing changed) where aiortc lacks the fields."""
    if sctp is None or not all(hasattr(sctp, name) for name in ASSOCIATION_FIELDS):
        logger.info("aiortc's SCTP differs: data-channel timers stay at RFC 4960's")
        return False
    measured = sctp._update_rto

    def update_rto(round_trip_s: float) -> None:
        measured(round_trip_s)  # aiortc's smoothing (RFC 4960 6.3.1), then our bounds
        sctp._rto = min(RTO_MAX_S, max(RTO_MIN_S, sctp._srtt + 4 * sctp._rttvar))

    sctp._update_rto = update_rto
    sctp._rto = RTO_INITIAL_S
    return True
