"""What a client is told when its offer or a trickle fragment cannot be used, or its
ICE cannot be restarted: each an ``InvalidRequest`` with a code (statuses in
``signaling.errors``). Raised by :class:`~media_server.rtc.peer.PeerSession`; a
refused request changes nothing of the session."""

from __future__ import annotations

from synthesis.errors import InvalidRequest


class OfferError(InvalidRequest):
    """An SDP offer (or trickle fragment) that cannot be used."""

    default_code = "invalid_offer"

    def __init__(self, message: str, solution: str) -> None:
        super().__init__(None, message, solution)


class InvalidCandidate(OfferError):
    default_code = "invalid_candidate"


class IceRestartUnsupported(OfferError):
    """This session cannot be restarted at all (HTTP 422, as the WHEP draft says for
    a server that does trickle but no restart): nothing of it was changed."""

    default_code = "ice_restart_unsupported"


class IceRestartRefused(OfferError):
    """This session cannot be restarted now (not connected yet, or closing)."""

    default_code = "ice_restart_not_possible"


class StaleIceCredentials(OfferError):
    """A trickle fragment with credentials a restart has replaced (HTTP 412): late
    candidates of an older ICE generation, which must not restart ICE again."""

    default_code = "stale_ice_credentials"


class TooManyCandidates(OfferError):
    """More remote candidates than a session takes: aioice re-sorts its whole check
    list on each one, so an unbounded number would hold the event loop."""

    default_code = "too_many_candidates"
