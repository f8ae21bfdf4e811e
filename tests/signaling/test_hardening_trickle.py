"""Trickled ICE candidates are checked and counted before aiortc sees them.

aioice re-sorts its whole check list for each remote candidate (and scans every
known candidate and pair), so a PATCH of 1000 candidates held the event loop for
over a second, and every other session's audio with it. A port past 65535 was taken
and then closed the session's ICE socket (``OverflowError`` in ``sendto``).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from media_server.config import ConfigError, Settings
from media_server.rtc.ice import parse_remote_candidate
from signaling.keys import MEDIA_KEY
from tests.conftest import loopback_settings
from tests.signaling.test_whep_http import assert_json_error
from tests.whep_client import WhepClient

pytestmark = [pytest.mark.loopback, pytest.mark.slow]

SDP = {"Content-Type": "application/sdp"}
FRAG = {"Content-Type": "application/trickle-ice-sdpfrag", "If-Match": "*"}
"""A trickle ``PATCH`` whose precondition always holds: these tests are about the
candidates (``tests/signaling/test_whep_restart.py`` about ``If-Match``)."""
CAP = Settings().max_remote_candidates
FLOOD = 1000
LAG_BOUND_S = 0.2
"""Loose: the flood held the loop for 0.5 to 1.7 s; a capped one takes a few ms."""


def candidate_lines(count: int, first_port: int = 20000) -> str:
    """Distinct host candidates on 127.0.0.2, where nothing answers: checks stay local."""
    return "".join(
        f"a=candidate:{i} 1 udp {2122260223 - i} 127.0.0.2 {first_port + i} typ host\r\n"
        for i in range(count)
    )


class LagProbe:
    """Measures how late a 10 ms sleep wakes up: how long the event loop was held."""

    def __init__(self) -> None:
        self.max_lag_s = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            start = loop.time()
            await asyncio.sleep(0.01)
            self.max_lag_s = max(self.max_lag_s, loop.time() - start - 0.01)

    async def __aenter__(self) -> LagProbe:
        self._task = asyncio.get_running_loop().create_task(self._run())
        await asyncio.sleep(0.02)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        await asyncio.sleep(0.05)  # a wake-up the loop owes the probe is measured too
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


class TrickleClient(WhepClient):
    """A WHEP client whose offer leaves out end-of-candidates, as a browser's does,
    so the server's ICE agent takes what is trickled; ``before_answer`` runs between
    the POST and applying the answer."""

    async def connect_trickled(
        self, http: aiohttp.ClientSession, before_answer: Callable[[str], Awaitable[None]]
    ) -> None:
        await self.connect(http, end_of_candidates=False, before_answer=before_answer)


def base_url(client: TestClient) -> str:
    return str(client.make_url("")).rstrip("/")


async def test_out_of_range_port_is_400_and_the_session_still_works(
    client: TestClient, http: aiohttp.ClientSession
) -> None:
    async def bad_port(location: str) -> None:
        frag = "a=mid:0\r\na=candidate:1 1 udp 2130706431 127.0.0.2 70000 typ host\r\n"
        body = await assert_json_error(
            await client.patch(location, data=frag, headers=FRAG), 400, "invalid_candidate"
        )
        assert "port" in body["message"]

    peer = TrickleClient(base_url(client))
    await peer.connect_trickled(http, bad_port)
    try:
        peer.say("Hello.")
        await peer.next_event("speech.done")
        assert any(f.rms > 0 for f in peer.frames)
        session_id = peer.location.rsplit("/", 1)[1] if peer.location else ""
        session = client.app[MEDIA_KEY].sessions.get(session_id)
        assert session is not None and session.peer.connection_state == "connected"
    finally:
        await peer.close(http)


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("1 1 udp 2130706431 127.0.0.2 0 typ host", "port"),
        ("1 1 udp 2130706431 127.0.0.2 -1 typ host", "port"),
        ("1 1 udp 2130706431 127.0.0.2 65536 typ host", "port"),
        ("1 1 udp 0 127.0.0.2 5000 typ host", "priority"),
        ("1 1 udp 4294967296 127.0.0.2 5000 typ host", "priority"),
        ("1 1 udp 2130706431 127.0.0.2 5000 typ bogus", "type"),
        ("1 1 sctp 2130706431 127.0.0.2 5000 typ host", "transport"),
        ("1 1 udp 2130706431 example.com 5000 typ host", "address"),
        ("1 1 udp 2130706431 0.0.0.0 5000 typ host", "address"),
        ("1 1 udp 2130706431 224.0.0.251 5000 typ host", "address"),
        ("1 0 udp 2130706431 127.0.0.2 5000 typ host", "component"),
        ("1 x udp 2130706431 127.0.0.2 5000 typ host", "component"),
        ("f\u00f6o 1 udp 2130706431 127.0.0.2 5000 typ host", "foundation"),
        ("1 1 udp 2130706431 127.0.0.2 5000 host", "expected"),
        ("1 1 udp 2130706431 127.0.0.2 5000 typ srflx raddr nowhere rport 0", "raddr"),
        ("1 1 udp 2130706431 127.0.0.2 5000 typ srflx raddr 0.0.0.0 rport 70000", "rport"),
    ],
)
async def test_invalid_candidate_is_400_naming_the_problem(
    client: TestClient, offer: str, line: str, problem: str
) -> None:
    resp = await client.post("/whep", data=offer, headers=SDP)
    location = resp.headers["Location"]
    frag = f"a=mid:0\r\na=candidate:{line}\r\n"
    body = await assert_json_error(
        await client.patch(location, data=frag, headers=FRAG), 400, "invalid_candidate"
    )
    assert problem in body["message"]
    assert client.app[MEDIA_KEY].sessions.get(location.rsplit("/", 1)[1]) is not None


@pytest.mark.parametrize(
    "line",
    [
        "1 1 udp 2130706431 127.0.0.2 5000 typ host generation 0 ufrag abcd network-id 1",
        "2 1 UDP 1694498815 192.0.2.7 50000 typ srflx raddr 0.0.0.0 rport 0",
        "3 1 tcp 1518280447 127.0.0.2 9 typ host tcptype active",
        "4 1 udp 2122262783 ::1 5001 typ host",
        "5 1 udp 2122260223 0b1c2d3e-aaaa-bbbb-cccc-0123456789ab.local 5002 typ host",
        "6 1 udp 41885439 192.0.2.9 3478 typ relay raddr 192.0.2.7 rport 50000",
    ],
)
async def test_browser_candidates_are_taken(client: TestClient, offer: str, line: str) -> None:
    resp = await client.post("/whep", data=offer, headers=SDP)
    frag = f"a=mid:0\r\na=candidate:{line}\r\n"
    assert (await client.patch(resp.headers["Location"], data=frag, headers=FRAG)).status == 204


async def test_a_flood_in_one_request_is_refused_without_holding_the_loop(
    client: TestClient, http: aiohttp.ClientSession, trickled_offer: str
) -> None:
    listener = WhepClient(base_url(client))  # another session, hearing speech meanwhile
    await listener.connect(http)
    try:
        listener.say("Good evening everyone, this is a sentence long enough to hear.")
        await listener.next_event("speech.started")
        resp = await client.post("/whep", data=trickled_offer, headers=SDP)
        location = resp.headers["Location"]
        frag = "a=mid:0\r\n" + candidate_lines(FLOOD)
        async with LagProbe() as probe:
            resp = await client.patch(location, data=frag, headers=FRAG)
            body = await assert_json_error(resp, 400, "too_many_candidates")
            assert str(CAP) in body["message"]
        assert probe.max_lag_s < LAG_BOUND_S
        # a refused fragment changes nothing: the session takes its candidates later
        resp = await client.patch(location, data=candidate_lines(4), headers=FRAG)
        assert resp.status == 204
        stats = await (await client.get(f"{listener.location}/stats")).json()
        assert stats["connection_state"] == "connected"
        assert stats["lateness_max_ms"] < LAG_BOUND_S * 1000
        await listener.next_event("speech.done")
    finally:
        await listener.close(http)


async def test_a_flood_over_many_requests_is_refused_past_the_cap(
    client: TestClient, trickled_offer: str
) -> None:
    resp = await client.post("/whep", data=trickled_offer, headers=SDP)
    location = resp.headers["Location"]
    statuses = []
    async with LagProbe() as probe:
        for n in range(FLOOD // 10):
            frag = "a=mid:0\r\n" + candidate_lines(10, first_port=20000 + 10 * n)
            resp = await client.patch(location, data=frag, headers=FRAG)
            statuses.append(resp.status)
            if resp.status != 204:
                await assert_json_error(resp, 400, "too_many_candidates")
    assert probe.max_lag_s < LAG_BOUND_S
    taken = statuses.count(204)
    assert 0 < taken * 10 <= CAP and statuses[taken:] == [400] * (len(statuses) - taken)
    # the same candidates again are no new ones: still taken, as RFC 8838 says
    resp = await client.patch(location, data=candidate_lines(10), headers=FRAG)
    assert resp.status == 204
    assert (await client.get(f"{location}/stats")).status == 200  # the session is up


@pytest.mark.parametrize("settings", [loopback_settings(max_remote_candidates=4)])
async def test_the_cap_is_a_setting_and_counts_the_offers_candidates(
    client: TestClient, trickled_offer: str, settings: Settings
) -> None:
    offer_candidates = trickled_offer.count("a=candidate:")
    assert 0 < offer_candidates < 4
    extra = candidate_lines(5)
    flooded = trickled_offer.replace("a=mid:0\r\n", "a=mid:0\r\n" + extra, 1)
    await assert_json_error(
        await client.post("/whep", data=flooded, headers=SDP), 400, "invalid_offer"
    )
    resp = await client.post("/whep", data=trickled_offer, headers=SDP)
    location = resp.headers["Location"]
    frag = candidate_lines(4 - offer_candidates)
    assert (await client.patch(location, data=frag, headers=FRAG)).status == 204
    resp = await client.patch(location, data=candidate_lines(1, first_port=30000), headers=FRAG)
    await assert_json_error(resp, 400, "too_many_candidates")
    with pytest.raises(ConfigError):
        Settings(max_remote_candidates=0)


async def test_offer_with_an_out_of_range_port_is_400(client: TestClient, offer: str) -> None:
    bad = offer.replace(
        "a=mid:0\r\n", "a=mid:0\r\na=candidate:9 1 udp 2130706431 127.0.0.2 70000 typ host\r\n", 1
    )
    body = await assert_json_error(
        await client.post("/whep", data=bad, headers=SDP), 400, "invalid_offer"
    )
    assert "port" in body["message"]
    assert len(client.app[MEDIA_KEY].sessions) == 0


def test_parsed_candidate_keeps_what_aiortc_needs() -> None:
    candidate, key = parse_remote_candidate(
        "7 1 UDP 1694498815 192.0.2.7 50000 typ srflx raddr 10.0.0.2 rport 40000"
    )
    assert (candidate.foundation, candidate.component, candidate.protocol) == ("7", 1, "udp")
    assert (candidate.ip, candidate.port, candidate.type) == ("192.0.2.7", 50000, "srflx")
    assert (candidate.relatedAddress, candidate.relatedPort) == ("10.0.0.2", 40000)
    assert key == (1, "udp", "192.0.2.7", 50000)
    assert json.dumps(key)  # plain values only
