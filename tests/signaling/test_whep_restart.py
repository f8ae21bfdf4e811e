"""WHEP's conditional PATCH and ICE restart over real HTTP, with real aiortc clients.

``ETag`` on every ``POST`` answer; a ``PATCH`` needs ``If-Match`` (``428``), a stale
one is ``412``; ``If-Match: *`` with new credentials restarts ICE (``200``, new
credentials and candidates, new ``ETag``). Refused restarts are 4xx JSON and change
nothing; a restart whose checks never succeed ends no session.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from media_server.config import Settings
from media_server.rooms.tokens import Role, TokenSigner
from tests.conftest import loopback_settings
from tests.ice_mover import (
    RtpLog,
    close_restarter,
    connected_listener,
    move_away,
    restart,
    session_of,
    wait_nominated,
)
from tests.signaling.test_whep_http import SDP, assert_json_error
from tests.whep_client import WhepClient

pytestmark = [pytest.mark.loopback]

FRAG = {"Content-Type": "application/trickle-ice-sdpfrag"}
CANDIDATE = "a=candidate:1 1 udp 2130706431 127.0.0.1 50000 typ host\r\n"
NEW_CREDENTIALS = "a=ice-ufrag:n3wU\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n"
SECRET = "room-test-secret-0123456789"


@pytest.fixture
async def listener(client: TestClient, http: aiohttp.ClientSession) -> AsyncIterator[WhepClient]:
    async with connected_listener(client, http) as peer:
        yield peer


def ufrag(sdp: str) -> str:
    found = re.search(r"^a=ice-ufrag:(\S+)", sdp, re.MULTILINE)
    assert found is not None
    return found.group(1)


async def test_post_has_an_etag_and_a_patch_needs_if_match(client: TestClient, offer: str) -> None:
    resp = await client.post("/whep", data=offer, headers=SDP)
    assert resp.status == 201
    location, etag = resp.headers["Location"], resp.headers["ETag"]
    assert re.fullmatch(r'"[0-9a-f]{16}"', etag)
    assert resp.headers["Accept-Patch"] == FRAG["Content-Type"]
    body = await assert_json_error(
        await client.patch(location, data=CANDIDATE, headers=FRAG), 428, "if_match_required"
    )
    assert "If-Match" in body["solution"]
    for stale in ('"0000000000000000"', f"W/{etag}", etag.strip('"')):
        resp = await client.patch(location, data=CANDIDATE, headers={**FRAG, "If-Match": stale})
        await assert_json_error(resp, 412, "stale_etag")
    for good in (etag, f'"other", {etag}', "*", '"*"'):
        resp = await client.patch(location, data=CANDIDATE, headers={**FRAG, "If-Match": good})
        assert resp.status == 204, await resp.text()
        assert resp.headers["ETag"] == etag
    # a missing precondition is reported before the body is looked at, a bad body after
    resp = await client.patch(location, data="a=candidate:bad\r\n", headers=FRAG)
    await assert_json_error(resp, 428, "if_match_required")
    resp = await client.patch(
        location, data="a=candidate:bad\r\n", headers={**FRAG, "If-Match": etag}
    )
    await assert_json_error(resp, 400, "invalid_candidate")


async def test_options_name_what_post_and_patch_take(client: TestClient, offer: str) -> None:
    resp = await client.options("/whep")
    assert resp.status == 204 and resp.headers["Accept-Post"] == "application/sdp"
    location = (await client.post("/whep", data=offer, headers=SDP)).headers["Location"]
    resp = await client.options(location)
    assert resp.status == 204
    assert resp.headers["Accept-Patch"] == "application/trickle-ice-sdpfrag"


@pytest.mark.parametrize("settings", [loopback_settings(token_secret=SECRET)])
async def test_a_room_listener_has_an_etag_too(
    client: TestClient, offer: str, settings: Settings
) -> None:
    token = TokenSigner(SECRET.encode()).issue("hall", Role.LISTENER, "ann")
    auth = {"Authorization": f"Bearer {token}"}
    resp = await client.post("/rooms/hall/whep", data=offer, headers={**SDP, **auth})
    assert resp.status == 201
    location, etag = resp.headers["Location"], resp.headers["ETag"]
    assert (await client.options("/rooms/hall/whep")).headers["Accept-Post"] == "application/sdp"
    resp = await client.patch(location, data=CANDIDATE, headers={**FRAG, **auth})
    await assert_json_error(resp, 428, "if_match_required")
    resp = await client.patch(location, data=CANDIDATE, headers={**FRAG, **auth, "If-Match": '"x"'})
    await assert_json_error(resp, 412, "stale_etag")
    resp = await client.patch(location, data=CANDIDATE, headers={**FRAG, **auth, "If-Match": etag})
    assert resp.status == 204
    resp = await client.patch(
        location, data=NEW_CREDENTIALS, headers={**FRAG, **auth, "If-Match": "*"}
    )
    await assert_json_error(resp, 409, "ice_restart_not_possible")  # never connected


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ("a=ice-ufrag:n3wU\r\n", "invalid_offer"),  # no password
        ("a=ice-ufrag:n3wU\r\na=ice-pwd:short\r\n", "invalid_offer"),
        ("a=ice-ufrag:n3\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n", "invalid_offer"),
        (
            NEW_CREDENTIALS + "a=candidate:1 1 udp 1 127.0.0.1 70000 typ host\r\n",
            "invalid_candidate",
        ),
        (
            NEW_CREDENTIALS + "a=candidate:1 1 udp 1 127.0.0.1 1 typ host\r\n" * 33,
            "too_many_candidates",
        ),
    ],
    ids=["no-pwd", "short-pwd", "short-ufrag", "bad-candidate", "too-many"],
)
async def test_a_refused_restart_changes_nothing(
    client: TestClient, listener: WhepClient, http: aiohttp.ClientSession, body: str, error: str
) -> None:
    session = session_of(client, listener)
    etag = session.ice_etag
    resp = await client.patch(listener.location, data=body, headers={**FRAG, "If-Match": "*"})  # type: ignore[arg-type]
    await assert_json_error(resp, 400, error)
    assert session.ice_etag == etag and session.peer.ice_restarts is None
    assert session.peer.connection_state == "connected"
    listener.say("Still here.", "s1")
    assert (await listener.next_event("speech.started"))["id"] == "s1"


async def test_a_restart_answers_new_credentials_and_a_new_etag(
    client: TestClient, listener: WhepClient, http: aiohttp.ClientSession
) -> None:
    session = session_of(client, listener)
    old_etag = session.ice_etag
    first_ufrag = ufrag(session.peer.pc.localDescription.sdp)
    move = await restart(listener, http)
    assert move.status == 200, move.answer
    assert move.etag == session.ice_etag != old_etag
    assert ufrag(move.answer) != first_ufrag
    assert re.search(r"^a=ice-pwd:[A-Za-z0-9+/]{22,}\r?$", move.answer, re.MULTILINE)
    assert re.search(r"^a=candidate:\S+ 1 udp \d+ 127\.0\.0\.1 \d+ typ host", move.answer, re.M)
    assert move.answer.rstrip().endswith("a=end-of-candidates")
    await wait_nominated(listener, move)
    # trickle for the old generation is stale now, even with If-Match: * (it is no
    # new restart); for the new one it is taken
    late = f"a=ice-ufrag:{ufrag(listener.pc.localDescription.sdp)}\r\n{CANDIDATE}"
    resp = await client.patch(listener.location, data=late, headers={**FRAG, "If-Match": "*"})  # type: ignore[arg-type]
    await assert_json_error(resp, 412, "stale_ice_credentials")
    assert session.ice_etag == move.etag
    resp = await client.patch(
        listener.location, data=CANDIDATE, headers={**FRAG, "If-Match": old_etag}
    )  # type: ignore[arg-type]
    await assert_json_error(resp, 412, "stale_etag")
    resp = await client.patch(
        listener.location, data=CANDIDATE, headers={**FRAG, "If-Match": move.etag or ""}
    )  # type: ignore[arg-type]
    assert resp.status == 204
    listener.say("After the restart.", "s1")
    assert (await listener.next_event("speech.started"))["id"] == "s1"
    stats = await (await client.get(f"{listener.location}/stats")).json()
    assert stats["ice_restarts"] == 1 and stats["ice_restarts_failed"] == 0
    assert 0 < stats["ice_restart_checks_ms"] < 5000


@pytest.mark.slow
async def test_a_failed_restart_keeps_the_session_and_a_later_one_succeeds(
    client: TestClient, listener: WhepClient, http: aiohttp.ClientSession
) -> None:
    session = session_of(client, listener)
    session.peer.ice_restart_timeout_s = 0.5
    connection = session.peer.pc.getTransceivers()[0].sender.transport.transport._connection
    # the restart is asked for, but the client never runs its checks
    resp = await client.patch(
        listener.location, data=NEW_CREDENTIALS, headers={**FRAG, "If-Match": "*"}
    )  # type: ignore[arg-type]
    assert resp.status == 200
    restarts = session.peer.ice_restarts
    assert restarts is not None and restarts.running
    assert connection._query_consent_task is None  # no consent expiry mid-restart
    async with asyncio.timeout(3):
        while restarts.failed == 0:
            await asyncio.sleep(0.02)
    assert not restarts.running and restarts.completed == 0
    # consent freshness is back on the old pair: it decides, as without a restart
    assert connection._query_consent_task is not None and not connection._query_consent_task.done()
    assert session.peer.connection_state == "connected" and not session.closed
    stats = await (await client.get(f"{listener.location}/stats")).json()
    assert stats["ice_restarts"] == 0 and stats["ice_restarts_failed"] == 1
    listener.say("The old path still carries audio.", "s1")
    assert (await listener.next_event("speech.started"))["id"] == "s1"
    # then the listener really moves, and its restart succeeds
    session.peer.ice_restart_timeout_s = 10.0
    await move_away(listener)
    move = await restart(listener, http)
    assert move.status == 200
    await wait_nominated(listener, move)
    async with asyncio.timeout(2):
        while restarts.completed == 0:
            await asyncio.sleep(0.02)
    listener.say("And the new one too.", "s2")
    assert (await listener.next_event("speech.started", wait_s=10))["id"] == "s2"


async def test_delete_during_a_restart_ends_it(
    client: TestClient, listener: WhepClient, http: aiohttp.ClientSession
) -> None:
    session = session_of(client, listener)
    resp = await client.patch(
        listener.location, data=NEW_CREDENTIALS, headers={**FRAG, "If-Match": "*"}
    )  # type: ignore[arg-type]
    assert resp.status == 200
    restarts = session.peer.ice_restarts
    assert restarts is not None and restarts.running
    assert (await client.delete(listener.location)).status == 200  # type: ignore[arg-type]
    assert not restarts.running and session.closed
    listener.location = None


async def test_missing_internals_refuse_a_restart_and_keep_the_session(
    client: TestClient, listener: WhepClient, http: aiohttp.ClientSession
) -> None:
    session = session_of(client, listener)
    connection = session.peer.pc.getTransceivers()[0].sender.transport.transport._connection
    nominating = connection._nominating
    del connection._nominating  # as if aioice had renamed it
    try:
        resp = await client.patch(
            listener.location, data=NEW_CREDENTIALS, headers={**FRAG, "If-Match": "*"}
        )  # type: ignore[arg-type]
        body = await assert_json_error(resp, 422, "ice_restart_unsupported")
        assert "POST a new offer" in body["solution"]
    finally:
        connection._nominating = nominating
    assert session.peer.connection_state == "connected" and session.peer.ice_restarts is None
    listener.say("Still here.", "s1")
    assert (await listener.next_event("speech.started"))["id"] == "s1"


async def test_a_restart_racing_a_delete_leaves_no_task(
    client: TestClient, listener: WhepClient, http: aiohttp.ClientSession
) -> None:
    assert listener.location is not None
    patch = client.patch(listener.location, data=NEW_CREDENTIALS, headers={**FRAG, "If-Match": "*"})
    restarted, deleted = await asyncio.gather(patch, client.delete(listener.location))
    assert deleted.status == 200
    assert restarted.status in (200, 404, 409), await restarted.text()
    await asyncio.sleep(0.1)
    left = [t for t in asyncio.all_tasks() if t.get_name().startswith("ice-restart-")]
    assert left == []
    listener.location = None


@pytest.mark.parametrize("settings", [loopback_settings(token_secret=SECRET)])
async def test_a_room_listener_restarts_with_its_token(
    client: TestClient, http: aiohttp.ClientSession, settings: Settings
) -> None:
    """The room's WHEP resource restarts the same way (with the join token it was
    created with), and the room's stream reaches the listener's new address."""
    token = TokenSigner(SECRET.encode()).issue("hall", Role.LISTENER, "ann")
    peer = WhepClient(str(client.make_url("")).rstrip("/"))
    await peer.connect(http, path="/rooms/hall/whep", headers={"Authorization": f"Bearer {token}"})
    try:
        rtp = RtpLog()
        rtp.install(peer)
        async with asyncio.timeout(5):
            while len(rtp.packets) < 10:
                await asyncio.sleep(0.02)
        await move_away(peer)
        resp = await client.patch(
            peer.location, data=NEW_CREDENTIALS, headers={**FRAG, "If-Match": "*"}
        )  # type: ignore[arg-type]
        await assert_json_error(resp, 401, "token_required")
        move = await restart(peer, http)
        assert move.status == 200, move.answer
        await wait_nominated(peer, move)
        assert move.nominated is not None
        async with asyncio.timeout(1):
            while rtp.first_after(move.nominated) is None:
                await asyncio.sleep(0.01)
    finally:
        await close_restarter(peer)
        await peer.close(http)
