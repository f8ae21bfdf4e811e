"""A closed session leaves no cyclic garbage: reference counting frees it at once.

Real aiortc peers on 127.0.0.1 that connect, hear speech and go away. What stays
after them would be freed only by a garbage collection, which holds the event loop
(and so every other session's audio) while it runs.
"""

from __future__ import annotations

import asyncio
import gc
from collections import Counter

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from aiortc import RTCConfiguration, RTCPeerConnection

from media_server.rtc.teardown import release_peer
from signaling.keys import MEDIA_KEY
from tests.whep_client import WhepClient

pytestmark = [pytest.mark.loopback, pytest.mark.slow]

PEERS = 4


async def test_closed_sessions_leave_no_cyclic_garbage(
    client: TestClient, http: aiohttp.ClientSession
) -> None:
    base = str(client.make_url("")).rstrip("/")
    registry = client.app[MEDIA_KEY].sessions
    peers = [WhepClient(base) for _ in range(PEERS)]
    for peer in peers:
        await peer.connect(http)
        peer.say("Hello.")
    for peer in peers:
        await peer.next_event("speech.done")
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        for peer in peers:  # DELETE, then the client's own close
            await peer.close(http)
        assert len(registry) == 0
        await asyncio.sleep(0.2)
        gc.collect()
        # the test's client peers are still referenced by `peers`: all that could be
        # garbage is what the server closed
        kinds = Counter(f"{type(o).__module__}.{type(o).__qualname__}" for o in gc.garbage)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    ours = {k: n for k, n in kinds.items() if k.startswith(("aiortc", "aioice", "media_server"))}
    assert ours == {}
    # without the teardown each closed session left about 650 objects
    assert kinds.total() < 30 * PEERS, kinds.most_common(10)


async def test_release_needs_a_closed_connection_and_leaves_shared_objects_alone() -> None:
    from aiortc.rtcdtlstransport import State

    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver("audio", direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    with pytest.raises(RuntimeError, match="closed"):
        await release_peer(pc)
    await pc.close()
    assert await release_peer(pc) >= 5  # connection, transceiver, sender, receiver, transports
    assert vars(pc) == {}
    # enum members and other module-level objects are shared by every connection
    assert str(State.CLOSED) == "State.CLOSED"
    other = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    other.addTransceiver("audio", direction="sendonly")
    await other.setLocalDescription(await other.createOffer())
    await other.close()
    assert other.connectionState == "closed"
