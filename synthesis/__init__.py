"""Text-to-speech engines behind one small interface.

This package never imports aiortc: it knows text and PCM, nothing about WebRTC.
"""

from synthesis.base import Engine, EngineCapabilities, VoiceInfo
from synthesis.capabilities import check_supported
from synthesis.errors import (
    ClientError,
    ClientLimit,
    Conflict,
    Forbidden,
    InvalidRequest,
    NotFound,
    ServerBusy,
    SynthesisError,
    SynthesisTimeout,
    Unauthorized,
    Unsupported,
)
from synthesis.factory import available_engines, create_engine
from synthesis.observer import SynthesisObserver, SynthesisOutcome, SynthesisReport
from synthesis.request import (
    Mode,
    ReferenceAudio,
    RequestError,
    RequestLimits,
    SynthesisRequest,
    parse_request,
)
from synthesis.service import EngineBusy, SynthesisService
from synthesis.stream import SynthesisStream
from synthesis.text import split_text
from synthesis.types import AudioChunk

__all__ = [
    "ClientError",
    "ClientLimit",
    "Conflict",
    "Forbidden",
    "InvalidRequest",
    "NotFound",
    "ServerBusy",
    "SynthesisTimeout",
    "Unauthorized",
    "Unsupported",
    "AudioChunk",
    "Engine",
    "EngineBusy",
    "SynthesisService",
    "EngineCapabilities",
    "Mode",
    "ReferenceAudio",
    "RequestError",
    "RequestLimits",
    "SynthesisRequest",
    "check_supported",
    "parse_request",
    "SynthesisError",
    "SynthesisStream",
    "SynthesisObserver",
    "SynthesisOutcome",
    "SynthesisReport",
    "VoiceInfo",
    "available_engines",
    "create_engine",
    "split_text",
]
