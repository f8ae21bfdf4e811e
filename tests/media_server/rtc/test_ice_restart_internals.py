"""The aiortc/aioice internals ICE restart relies on, fenced: this fails loudly on an
upgrade that renames, retypes or reshapes one (``media_server.rtc.ice_restart``).

Checked on a real connected pair of aiortc peers, not on the classes alone: most
of what is used are instance attributes that only exist once the objects are built.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator

import aioice
import aiortc
import pytest
from aioice.ice import CandidatePair, Connection
from aiortc import RTCConfiguration, RTCPeerConnection

from media_server.rtc.ice_restart import (
    CONNECTION_ATTRIBUTES,
    CONNECTION_METHODS,
    PAIR_ATTRIBUTES,
    TRANSPORT_ATTRIBUTES,
    IceCredentials,
    IceRestart,
    missing_internals,
)

pytestmark = [pytest.mark.loopback]


@pytest.fixture
async def connected() -> AsyncIterator[tuple[RTCPeerConnection, RTCPeerConnection]]:
    offerer = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    answerer = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    offerer.addTransceiver("audio", direction="recvonly")
    offerer.createDataChannel("control")
    await offerer.setLocalDescription(await offerer.createOffer())
    await answerer.setRemoteDescription(offerer.localDescription)
    await answerer.setLocalDescription(await answerer.createAnswer())
    await offerer.setRemoteDescription(answerer.localDescription)
    async with asyncio.timeout(10):
        while "connected" not in (offerer.connectionState, answerer.connectionState) or (
            offerer.connectionState != answerer.connectionState
        ):
            await asyncio.sleep(0.02)
    yield offerer, answerer
    await offerer.close()
    await answerer.close()


def ice_transport(pc: RTCPeerConnection) -> aiortc.RTCIceTransport:
    return pc.getTransceivers()[0].sender.transport.transport


def test_the_versions_this_was_written_for() -> None:
    """A new major/minor version gets read (``aioice/ice.py``, ``rtcicetransport.py``)
    before this test is changed; the checks below say what to look for."""
    assert aiortc.__version__.startswith("1.16"), aiortc.__version__
    assert aioice.__version__.startswith("0.13"), aioice.__version__


async def test_everything_a_restart_touches_is_there_with_its_shape(
    connected: tuple[RTCPeerConnection, RTCPeerConnection],
) -> None:
    for pc in connected:
        transport = ice_transport(pc)
        assert missing_internals(transport) == []
        assert all(hasattr(transport, name) for name in TRANSPORT_ATTRIBUTES)
        assert transport.state == "completed"
        assert isinstance(transport.iceGatherer._remote_candidates_end, bool)
        connection = transport._connection
        assert isinstance(connection, Connection)
        assert all(hasattr(connection, name) for name in CONNECTION_ATTRIBUTES)
        assert isinstance(connection._nominated, dict) and set(connection._nominated) == {1}
        assert isinstance(connection._check_list, list)
        assert isinstance(connection._remote_candidates, list)
        assert isinstance(connection._nominating, set) and isinstance(connection._components, set)
        assert connection._check_list_done is True  # connect() has returned
        assert isinstance(connection._query_consent_task, asyncio.Task)
        assert connection._closing is False
        pair = connection._nominated[1]
        assert isinstance(pair, CandidatePair)
        assert all(hasattr(pair, name) for name in PAIR_ATTRIBUTES)
        assert pair.nominated is True and pair.state == CandidatePair.State.SUCCEEDED
        # the credentials are read through properties backed by the private fields
        assert connection.local_username == connection._local_username
        assert connection.local_password == connection._local_password
        fresh = IceCredentials.generate()
        fresh.check()
        saved = connection._local_username
        connection._local_username = fresh.ufrag
        assert connection.local_username == fresh.ufrag
        assert transport.iceGatherer.getLocalParameters().usernameFragment == fresh.ufrag
        connection._local_username = saved


def test_the_methods_a_restart_calls_keep_their_kind() -> None:
    for name in CONNECTION_METHODS:
        assert callable(getattr(Connection, name)), name
    assert inspect.iscoroutinefunction(Connection.query_consent)
    assert not inspect.iscoroutinefunction(Connection.check_start_task)
    assert not inspect.iscoroutinefunction(Connection.request_received)
    assert list(inspect.signature(Connection.check_start_task).parameters) == ["self", "pair"]
    assert list(inspect.signature(Connection.query_consent).parameters) == ["self"]
    states = {s.name for s in CandidatePair.State}
    assert {"FROZEN", "WAITING", "IN_PROGRESS", "SUCCEEDED", "FAILED"} <= states


async def test_missing_internals_are_named(
    connected: tuple[RTCPeerConnection, RTCPeerConnection],
) -> None:
    transport = ice_transport(connected[1])
    connection = transport._connection
    saved = connection._check_list
    del connection._check_list
    try:
        assert missing_internals(transport) == ["Connection._check_list"]
    finally:
        connection._check_list = saved
    assert missing_internals(object()) == [f"RTCIceTransport.{n}" for n in TRANSPORT_ATTRIBUTES]


def test_credentials_are_checked_as_rfc_8839_says() -> None:
    IceCredentials("abcd", "a" * 22).check()
    for ufrag, pwd in [
        ("abc", "a" * 22),
        ("abcd", "a" * 21),
        ("ab:d", "a" * 22),
        ("abcd", "é" * 22),
    ]:
        with pytest.raises(ValueError):
            IceCredentials(ufrag, pwd).check()
    one, two = IceCredentials.generate(), IceCredentials.generate()
    assert one != two and len(one.ufrag) >= 4 and len(one.pwd) >= 22


async def test_a_restart_ended_without_candidates_is_not_complete_at_once(
    connected: tuple[RTCPeerConnection, RTCPeerConnection],
) -> None:
    """End-of-candidates before any candidate of the new generation: aioice drops the
    component, and the restart must still wait for a new nominated pair (it used to
    count as complete at once, its checks as 0 ms: the web client sent just that)."""
    _, answerer = connected
    restart = IceRestart(ice_transport(answerer), "test")
    await restart.begin(IceCredentials.generate())
    await answerer.addIceCandidate(None)  # type: ignore[arg-type]  # aiortc: end-of-candidates
    await asyncio.sleep(0.2)
    assert ice_transport(answerer)._connection._components == set()  # what aioice does
    assert (restart.completed, restart.last_checks_s, restart.running) == (0, None, True)
    await restart.close()
