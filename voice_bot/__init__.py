"""A tiny client for voice-agent bots: join a room, speak, stream text, barge in, hear callers."""

from voice_bot.client import BotError, RoomBot
from voice_bot.hearing import (
    CallerAudio,
    CallerAudioDropped,
    CallerSpeechStarted,
    CallerSpeechStopped,
    Heard,
)

__all__ = [
    "BotError",
    "CallerAudio",
    "CallerAudioDropped",
    "CallerSpeechStarted",
    "CallerSpeechStopped",
    "Heard",
    "RoomBot",
]
