"""A tiny client for voice-agent bots: join a room, speak, stream text, barge in."""

from voice_bot.client import BotError, RoomBot

__all__ = ["BotError", "RoomBot"]
