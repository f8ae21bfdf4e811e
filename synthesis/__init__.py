"""Text-to-speech engines behind one small interface.

This package never imports aiortc: it knows text and PCM, nothing about WebRTC.
"""

from synthesis.base import Engine, SynthesisError, VoiceInfo
from synthesis.registry import available_engines, create_engine
from synthesis.stream import SynthesisStream
from synthesis.text import split_text
from synthesis.types import AudioChunk

__all__ = [
    "AudioChunk",
    "Engine",
    "SynthesisError",
    "SynthesisStream",
    "VoiceInfo",
    "available_engines",
    "create_engine",
    "split_text",
]
