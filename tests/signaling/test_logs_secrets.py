"""The server's JSON log (a real process, DEBUG) never holds a token, wherever one travels."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from media_server.rooms.tokens import Role, TokenSigner
from tests.signaling.test_hardening_synthesis_shutdown import ROOT, free_port, wait_ready
from tests.whep_client import WhepClient

API_TOKEN = "apitok-Q1w2E3r4T5y6U7i8O9p0"
TOKEN_SECRET = "tokensecret-Z9x8C7v6B5n4M3"
WRONG_TOKEN = "wrongtok-A1s2D3f4G5h6J7k8"
ACCESS_FIELDS = ("method", "path", "status", "size", "duration_ms", "remote")


async def exercise(url: str, port: int, join_bot: str, join_listener: str) -> None:
    """Requests that carry each credential in each place a client may put it."""
    operator = {"Authorization": f"Bearer {API_TOKEN}"}
    async with aiohttp.ClientSession() as http:
        for headers, query in (
            (operator, ""),
            ({"Authorization": f"Bearer {WRONG_TOKEN}"}, ""),
            ({}, f"?token={API_TOKEN}"),
        ):
            async with http.get(f"{url}/stats{query}", headers=headers) as resp:
                await resp.read()
        async with http.get(f"{url}/metrics", headers=operator) as resp:
            assert resp.status == 200
        whep = WhepClient(url)
        await whep.connect(http, headers=operator)  # a 1:1 session, DELETE with the token
        await whep.close(http)
        async with http.ws_connect(f"{url}/tts/ws", protocols=[f"vms.token.{API_TOKEN}"]) as ws:
            await ws.close()
        async with http.ws_connect(f"{url}/rooms/lobby/bot?token={join_bot}") as ws:
            assert (await ws.receive_json())["type"] == "ready"
            listener = WhepClient(url)
            await listener.connect(
                http, path="/rooms/lobby/whep", headers={"Authorization": f"Bearer {join_listener}"}
            )
            await listener.close(http)
            await ws.close()
        async with http.get(f"{url}/rooms/lobby/bot?token={WRONG_TOKEN}") as resp:
            assert resp.status in (400, 401)
    # a request aiohttp's parser refuses, with the token in the line it quotes
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"GET /stats?token={API_TOKEN} HTTP/1.1\r\nHost: x\r\nBad\x01: {API_TOKEN}\r\n\r\n".encode()
    )
    await writer.drain()
    await reader.read()
    writer.close()


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_json_logs_hold_no_secret(tmp_path: Path) -> None:
    signer = TokenSigner(TOKEN_SECRET.encode())
    join_bot = signer.issue("lobby", Role.BOT, "bot-1")
    join_listener = signer.issue("lobby", Role.LISTENER, "ears-1")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "VMS_API_TOKEN": API_TOKEN,
        "VMS_TOKEN_SECRET": TOKEN_SECRET,
        "VMS_ICE_HOST_ADDRESSES": "127.0.0.1",
        "VMS_LOG_FORMAT": "json",
    }
    stderr_path = tmp_path / "stderr.log"
    with stderr_path.open("wb") as stderr:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "signaling",
            "--port",
            str(port),
            "--log-level",
            "DEBUG",
            cwd=ROOT,
            env=env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=stderr,
        )
        try:
            await wait_ready(url, proc, 60)
            await exercise(url, port, join_bot, join_listener)
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(proc.wait(), 30)

    text = stderr_path.read_text()
    for secret in (API_TOKEN, TOKEN_SECRET, WRONG_TOKEN, join_bot, join_listener):
        assert secret not in text
        assert secret.split(".")[-1] not in text  # nor a join token's signature alone
    records: list[dict[str, Any]] = [json.loads(line) for line in text.splitlines()]
    assert all({"ts", "level", "logger", "message"} <= r.keys() for r in records)
    events = [r.get("event") for r in records]
    for event in ("server.started", "session.created", "session.closed", "room.created"):
        assert event in events
    assert ("room.joined", "ears-1") in {(r.get("event"), r.get("identity")) for r in records}
    access = [r for r in records if r.get("event") == "http.access"]
    assert all(set(ACCESS_FIELDS) <= r.keys() for r in access)
    paths = {r["path"] for r in access}
    assert "/stats?token=REDACTED" in paths and "/rooms/lobby/bot?token=REDACTED" in paths
    assert {r["status"] for r in access} >= {200, 201, 401}
