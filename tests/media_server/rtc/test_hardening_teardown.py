"""Sessions closed before ICE completes tear down without errors.

aiortc runs each connection's ICE handshake in a task it does not keep; clearing the
connection's parts while that task still ran logged an ``AttributeError`` traceback
("Task exception was never retrieved") for every session that never connected.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from aiortc import RTCConfiguration, RTCPeerConnection

from media_server.config import Settings
from media_server.rtc.teardown import _UNTRACKED_CODES, UNTRACKED_COROUTINES
from signaling.keys import MEDIA_KEY
from tests.conftest import loopback_settings

pytestmark = [pytest.mark.loopback, pytest.mark.slow]

SDP = {"Content-Type": "application/sdp"}


@pytest.fixture(params=["complete", "trickled"])
async def offer(request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """A real offer whose peer never takes the answer, so ICE never completes.

    "trickled" leaves out end-of-candidates, as a browser's offer does: the server's
    ICE agent then keeps checking while it waits for more candidates.
    """
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver("audio", direction="recvonly")
    pc.createDataChannel("control")
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    if request.param == "trickled":
        sdp = sdp.replace("a=end-of-candidates\r\n", "")
    yield sdp
    await pc.close()


@pytest.fixture
async def loop_errors() -> AsyncIterator[list[dict[str, Any]]]:
    """What reaches the event loop's exception handler (unretrieved task exceptions)."""
    loop = asyncio.get_running_loop()
    errors: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    yield errors
    loop.set_exception_handler(previous)


async def settle() -> None:
    """Let aiortc's leftover tasks run, then collect, so an unretrieved exception shows."""
    for _ in range(10):
        await asyncio.sleep(0.05)
    gc.collect()
    await asyncio.sleep(0)


def error_records(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


async def test_immediate_delete_logs_no_error(
    client: TestClient,
    offer: str,
    loop_errors: list[dict[str, Any]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    for _ in range(5):
        resp = await client.post("/whep", data=offer, headers=SDP)
        assert resp.status == 201
        assert (await client.delete(resp.headers["Location"])).status == 200
    await settle()
    assert loop_errors == []
    assert error_records(caplog) == []
    assert len(client.app[MEDIA_KEY].sessions) == 0


@pytest.mark.parametrize("settings", [loopback_settings(connect_timeout_s=0.2)])
async def test_connect_timeout_logs_no_error(
    client: TestClient,
    offer: str,
    settings: Settings,
    loop_errors: list[dict[str, Any]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    registry = client.app[MEDIA_KEY].sessions
    for _ in range(3):
        resp = await client.post("/whep", data=offer, headers=SDP)
        assert resp.status == 201
    for _ in range(100):
        if registry.closed_total == 3:
            break
        await asyncio.sleep(0.05)
    assert registry.closed_total == 3  # all three were reaped by the connect timeout
    assert len(registry) == 0
    await settle()
    assert loop_errors == []
    assert error_records(caplog) == []


MDNS_CANDIDATE = "a=mid:0\r\na=candidate:1 1 udp 2122260223 {name}.local 50000 typ host\r\n"


async def test_delete_while_a_trickled_mdns_name_resolves(
    client: TestClient, loop_errors: list[dict[str, Any]], caplog: pytest.LogCaptureFixture
) -> None:
    """aioice resolves a browser's ``.local`` candidate inside the PATCH (up to a
    second); while another session also resolves one, closing the peer does not end
    that resolution, and the teardown must wait for it instead of clearing the ICE
    connection under it (the PATCH then failed with a 500)."""
    caplog.set_level(logging.WARNING)
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver("audio", direction="recvonly")
    pc.createDataChannel("control")
    await pc.setLocalDescription(await pc.createOffer())
    offer = pc.localDescription.sdp.replace("a=end-of-candidates\r\n", "")
    frag = {"Content-Type": "application/trickle-ice-sdpfrag", "If-Match": "*"}
    try:
        locations = []
        for _ in range(2):
            resp = await client.post("/whep", data=offer, headers=SDP)
            assert resp.status == 201
            locations.append(resp.headers["Location"])
        patches = [
            asyncio.ensure_future(
                client.patch(location, data=MDNS_CANDIDATE.format(name=f"peer-{i}"), headers=frag)
            )
            for i, location in enumerate(locations)
        ]
        await asyncio.sleep(0.1)
        assert (await client.delete(locations[0])).status == 200
        statuses = [(await patch).status for patch in patches]
        assert statuses == [204, 204]
        assert (await client.delete(locations[1])).status == 200
    finally:
        await pc.close()
    await settle()
    assert loop_errors == []
    assert error_records(caplog) == []


def test_every_untracked_coroutine_named_exists_in_aiortc() -> None:
    """An aiortc upgrade that renames one would quietly bring the tracebacks back."""
    assert len(_UNTRACKED_CODES) == sum(len(names) for names in UNTRACKED_COROUTINES.values())
