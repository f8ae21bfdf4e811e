"""A voice-agent bot that joins a room and speaks: the template for your own agent.

Start the server with a token secret, open the web client, join room "demo" as a
listener (the page's Room field), then run this bot:

    export VMS_TOKEN_SECRET=change-me-to-a-long-secret
    voice-media-server &
    python examples/room_bot.py --room demo

It greets the room with ``say``, then streams a reply word by word the way an
LLM produces it (``text.delta``), printing the room's events as they come.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import AsyncIterator

from voice_bot import BotError, RoomBot

REPLY = (
    "I am a bot in this room. My words arrive a few at a time, like tokens from a "
    "language model, and the server starts speaking at the first complete clause. "
    "Everyone in the room hears the same audio, encoded once."
)


async def fake_llm(text: str, delay_s: float = 0.05) -> AsyncIterator[str]:
    """Stands in for your model: yields the reply a word at a time."""
    for word in text.split(" "):
        await asyncio.sleep(delay_s)
        yield word + " "


def token_from_env(room: str, identity: str) -> str:
    from media_server.rooms.tokens import Role, TokenSigner

    secret = os.environ.get("VMS_TOKEN_SECRET", "")
    if len(secret.encode()) < 16:
        sys.exit("pass --token, or set VMS_TOKEN_SECRET (as for the server) to mint one")
    return TokenSigner(secret.encode()).issue(room, Role.BOT, identity)


async def run(url: str, room: str, token: str, voice: str | None) -> None:
    async with RoomBot(url, room, token, voice=voice) as bot:
        print(f"joined {room!r}: {bot.ready['participants']}")  # noqa: T201
        greeting = await bot.say("Hello everyone, the bot has joined the room.")
        print("speaking:", await bot.wait_for("speech.started", greeting))  # noqa: T201
        print("done:", await bot.wait_for("speech.done", greeting))  # noqa: T201
        reply = await bot.stream(fake_llm(REPLY))
        print("done:", await bot.wait_for("speech.done", reply, wait_s=60))  # noqa: T201


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8080")
    parser.add_argument("--room", default="demo")
    parser.add_argument("--identity", default="example-bot")
    parser.add_argument("--token", help="a bot token (default: minted from VMS_TOKEN_SECRET)")
    parser.add_argument("--voice")
    args = parser.parse_args()
    token = args.token or token_from_env(args.room, args.identity)
    try:
        asyncio.run(run(args.url, args.room, token, args.voice))
    except BotError as exc:
        sys.exit(f"the server refused: {exc}")


if __name__ == "__main__":
    main()
