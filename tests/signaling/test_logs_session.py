"""Real WHEP sessions' and room listeners' JSON log lines carry their ids, from their own
code and from their tasks."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from media_server.rooms.tokens import Role, TokenSigner
from signaling.keys import MEDIA_KEY
from signaling.log_format import log_handler
from tests.conftest import loopback_settings
from tests.ice_mover import connected_listener, restart, session_of, wait_nominated
from tests.whep_client import WhepClient


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """Every record (DEBUG and up) as JSON lines, as ``--log-format json`` writes them."""
    stream = io.StringIO()
    handler = log_handler("json", stream)
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield stream
    root.removeHandler(handler)
    root.setLevel(level)


def parsed(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


async def open_session(client: TestClient, http: aiohttp.ClientSession) -> tuple[WhepClient, str]:
    whep = WhepClient(str(client.make_url("")).rstrip("/"))
    await whep.connect(http)
    assert whep.location is not None
    return whep, whep.location.rsplit("/", 1)[-1]


def events(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["event"]: r for r in records if "event" in r}


async def test_session_lines_carry_its_id(
    client: TestClient, http: aiohttp.ClientSession, json_log: io.StringIO
) -> None:
    whep, session_id = await open_session(client, http)
    await whep.close(http)
    assert len(client.app[MEDIA_KEY].sessions) == 0

    records = parsed(json_log)
    by_event = events(records)
    created, closed = by_event["session.created"], by_event["session.closed"]
    assert created["session"] == session_id and created["level"] == "INFO"
    assert closed["session"] == session_id and closed["reason"] == "closed by client"
    # lines logged by code that knows nothing of sessions, inside the session's tasks
    # (aiortc's, the peer's) carry the id the registry bound where the session was made
    from_tasks = [
        r
        for r in records
        if r.get("session") == session_id and r["logger"].startswith(("aiortc", "aioice"))
    ]
    assert from_tasks, "no aiortc/aioice line carried the session id"
    connected = [
        r
        for r in records
        if r["logger"] == "media_server.rtc.peer" and "connection connected" in r["message"]
    ]
    assert connected and all(r["session"] == session_id for r in connected)
    # the binding ended with the request: the test's own client peer logs without it
    client_lines = [r for r in records if r["message"].startswith("RTCPeerConnection()")]
    assert any("session" not in r for r in client_lines)


@pytest.mark.slow
async def test_utterance_lines_carry_the_session_and_utterance_ids(
    client: TestClient, http: aiohttp.ClientSession, json_log: io.StringIO
) -> None:
    """The playout cursor runs in the ticker task all sessions share: the queue keeps the
    ids of the session that made it."""
    whep, session_id = await open_session(client, http)
    whep.say("Hi.", "u-log")
    await whep.next_event("speech.done")
    whep.say("This sentence is cut short before it ends.", "u-cut")
    await whep.next_event("speech.started")
    whep.cancel()
    await whep.next_event("speech.cancelled")
    await whep.close(http)

    records = parsed(json_log)
    lines = [r for r in records if r.get("event", "").startswith("utterance.")]
    seen = {(r["event"], r["utterance"]) for r in lines}
    assert {
        ("utterance.started", "u-log"),
        ("utterance.done", "u-log"),
        ("utterance.started", "u-cut"),
        ("utterance.cancelled", "u-cut"),
    } <= seen
    assert all(r["session"] == session_id and r["level"] == "DEBUG" for r in lines)


ROOM_SECRET = "room-secret-for-log-tests"


@pytest.mark.parametrize("settings", [loopback_settings(token_secret=ROOM_SECRET)])
async def test_room_listener_lines_carry_room_and_listener(
    client: TestClient, http: aiohttp.ClientSession, json_log: io.StringIO
) -> None:
    token = TokenSigner(ROOM_SECRET.encode()).issue("hall", Role.LISTENER, "ears")
    whep = WhepClient(str(client.make_url("")).rstrip("/"))
    await whep.connect(http, path="/rooms/hall/whep", headers={"Authorization": f"Bearer {token}"})
    assert whep.location is not None
    listener_id = whep.location.rsplit("/", 1)[-1]
    await whep.close(http)
    assert not client.app[MEDIA_KEY].rooms.rooms

    records = parsed(json_log)
    by_event = events(records)
    assert by_event["room.created"]["room"] == "hall"
    for name in ("room.joined", "room.left"):
        line = by_event[name]
        assert (line["room"], line["listener"], line["identity"]) == ("hall", listener_id, "ears")
        assert line["role"] == "listener"
    assert by_event["room.left"]["reason"] == "left"
    assert by_event["room.closed"]["room"] == "hall"
    connected = [
        r
        for r in records
        if r["logger"] == "media_server.rtc.peer" and "connection connected" in r["message"]
    ]
    assert connected and all((r["room"], r["listener"]) == ("hall", listener_id) for r in connected)


@pytest.mark.loopback
async def test_an_ice_restart_logs_with_the_session_id(
    client: TestClient, http: aiohttp.ClientSession, json_log: io.StringIO
) -> None:
    """A restart comes in on a request (no session bound there) and runs its checks in a
    task of its own: both log with the id bound where the session was created."""
    async with connected_listener(client, http) as peer:
        session = session_of(client, peer)
        move = await restart(peer, http)
        assert move.status == 200, move.answer
        await wait_nominated(peer, move)
        async with asyncio.timeout(10):
            while session.peer.ice_restarts is None or not session.peer.ice_restarts.completed:
                await asyncio.sleep(0.01)
    ours = [
        r
        for r in parsed(json_log)
        if r.get("event", "").startswith("ice.restart") and session.client_id in r["message"]
    ]
    assert {r["event"] for r in ours} == {"ice.restart", "ice.restart.completed"}
    assert all(r["session"] == session.client_id for r in ours)
