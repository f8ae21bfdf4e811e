"""Everything between text and packets: speech queues, 48 kHz Opus frames, pacing, peers,
1:1 sessions and rooms, composed by :class:`MediaServer`.

Stages, in the order audio flows: ``speech/`` (text becomes speech frames), ``audio/``
(PCM becomes Opus), ``playout/`` (frames are paced), ``rtc/`` (packets are sent; the only
package that touches aiortc), ``sessions/`` and ``rooms/`` (who hears what), ``runtime/``
(process tuning).
"""

from media_server.config import ConfigError, Settings
from media_server.rooms.room import ListenerSession, Room, RoomFull
from media_server.rooms.tokens import Claims, Role, TokenSigner
from media_server.rtc.errors import (
    IceRestartRefused,
    IceRestartUnsupported,
    OfferError,
    StaleIceCredentials,
    TooManyCandidates,
)
from media_server.server import MediaServer, RoomsDisabled
from media_server.sessions.registry import ClientSessionLimit, SessionLimitReached
from media_server.sessions.session import VoiceSession

__all__ = [
    "Claims",
    "ClientSessionLimit",
    "ConfigError",
    "IceRestartRefused",
    "IceRestartUnsupported",
    "ListenerSession",
    "MediaServer",
    "OfferError",
    "Role",
    "Room",
    "RoomFull",
    "RoomsDisabled",
    "SessionLimitReached",
    "StaleIceCredentials",
    "Settings",
    "TokenSigner",
    "TooManyCandidates",
    "VoiceSession",
]
