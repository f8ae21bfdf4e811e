"""A real WHEP session's JSON log lines carry its id, from its own code and its tasks."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from signaling.keys import MEDIA_KEY
from signaling.log_format import log_handler
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
