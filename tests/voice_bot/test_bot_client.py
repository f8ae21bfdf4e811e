"""The shipped bot client and example, against the running server."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from media_server.config import Settings
from media_server.rooms.tokens import Role, TokenSigner
from tests.conftest import loopback_settings
from voice_bot import BotError, RoomBot

SECRET = "bot-client-secret-0123456789"
ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow  # a room with real peers hearing a bot, and a bot process


@pytest.fixture
def settings() -> Settings:
    return loopback_settings(token_secret=SECRET)


def url(client: TestClient) -> str:
    return str(client.make_url("")).rstrip("/")


def token(identity: str, role: Role = Role.BOT, room: str = "demo") -> str:
    return TokenSigner(SECRET.encode()).issue(room, role, identity)


async def words(text: str) -> AsyncIterator[str]:
    for word in text.split(" "):
        yield word + " "


async def test_bot_says_streams_and_barges_in(client: TestClient) -> None:
    async with RoomBot(url(client), "demo", token("agent")) as bot:
        assert bot.ready["room"] == "demo"
        first = await bot.say("Hello room.")
        started = await bot.wait_for("speech.started", first)
        done = await bot.wait_for("speech.done", first)
        assert started["owner"] == done["owner"] == "agent" and done["duration_ms"] > 300
        reply = await bot.stream(words("This reply is streamed, one word at a time, by a model."))
        assert (await bot.wait_for("speech.done", reply))["duration_ms"] > 1000
        long = await bot.say("This is a long sentence that will be interrupted. " * 4)
        await bot.wait_for("speech.started", long)
        await bot.cancel()
        assert (await bot.wait_for("speech.cancelled", long))["played_ms"] > 0


async def test_bot_sees_others_join_and_errors_raise(client: TestClient) -> None:
    async with RoomBot(url(client), "demo", token("first")) as first:
        async with RoomBot(url(client), "demo", token("second")) as second:
            joined = await first.wait_for("participant.joined")
            assert (joined["identity"], joined["role"]) == ("second", "bot")
            assert {"identity": "first", "role": "bot"} in second.ready["participants"]
            with pytest.raises(BotError, match="unsupported"):
                await second.wait_for("speech.done", await second.say("hi", mode="zero_shot"))
        left = await first.wait_for("participant.left")
        assert left["identity"] == "second"


async def test_bad_token_is_a_clear_error(client: TestClient) -> None:
    with pytest.raises(BotError, match="http_403"):
        await RoomBot(url(client), "demo", token("x", Role.LISTENER)).connect()


@pytest.mark.timeout(90)
async def test_the_example_bot_runs_in_one_command(client: TestClient) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(ROOT / "examples" / "room_bot.py"),
        "--url", url(client), "--room", "demo",
        env={**os.environ, "VMS_TOKEN_SECRET": SECRET, "PYTHONPATH": str(ROOT)},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await asyncio.wait_for(proc.communicate(), 80)
    text = output.decode()
    assert proc.returncode == 0, text
    assert "joined 'demo'" in text and text.count("done:") == 2
