"""Offers aiortc cannot answer are the client's error: 400 ``invalid_offer``, never a 500.

An offer with a second ``m=application`` section passed ``setRemoteDescription`` and
then made ``setLocalDescription`` raise ``ValueError``, which reached the client as
500 ``internal_error``. The half-built session must also go away quietly.
"""

from __future__ import annotations

import asyncio
import logging

import pytest
from aiohttp.test_utils import TestClient

from media_server.config import Settings
from media_server.rooms.tokens import Role, TokenSigner
from media_server.rtc.offer import MAX_MEDIA_SECTIONS
from signaling.keys import MEDIA_KEY
from tests.conftest import loopback_settings
from tests.signaling.test_whep_http import assert_json_error

SDP = {"Content-Type": "application/sdp"}
SECRET = "hardening-secret-0123456789"


def with_second_data_section(offer: str) -> str:
    """The offer's data-channel section again, as a second one (mid 2, bundled)."""
    section = offer[offer.index("m=application") :]
    assert "a=mid:1\r\n" in section and "a=group:BUNDLE 0 1\r\n" in offer
    doubled = offer + section.replace("a=mid:1\r\n", "a=mid:2\r\n")
    return doubled.replace("a=group:BUNDLE 0 1\r\n", "a=group:BUNDLE 0 1 2\r\n")


def errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


async def test_two_data_sections_are_400_and_the_server_goes_on(
    client: TestClient, offer: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    resp = await client.post("/whep", data=with_second_data_section(offer), headers=SDP)
    body = await assert_json_error(resp, 400, "invalid_offer")
    assert "answered" in body["message"]
    assert len(client.app[MEDIA_KEY].sessions) == 0
    resp = await client.post("/whep", data=offer, headers=SDP)
    assert resp.status == 201
    assert (await client.delete(resp.headers["Location"])).status == 200
    await asyncio.sleep(0.2)  # what the refused session's teardown might still log
    assert errors(caplog) == []


async def test_too_many_media_sections_are_400(client: TestClient, offer: str) -> None:
    head, audio = offer.split("m=audio", 1)
    audio_section = "m=audio" + audio[: audio.index("m=application")]
    many = head + audio_section * (MAX_MEDIA_SECTIONS + 1)
    body = await assert_json_error(
        await client.post("/whep", data=many, headers=SDP), 400, "invalid_offer"
    )
    assert "media sections" in body["message"]


@pytest.mark.parametrize("settings", [loopback_settings(token_secret=SECRET)])
async def test_room_listener_with_two_data_sections_is_400(
    client: TestClient, offer: str, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    token = TokenSigner(SECRET.encode()).issue("hall", Role.LISTENER, "ann")
    headers = {**SDP, "Authorization": f"Bearer {token}"}
    resp = await client.post(
        "/rooms/hall/whep", data=with_second_data_section(offer), headers=headers
    )
    await assert_json_error(resp, 400, "invalid_offer")
    assert "hall" not in client.app[MEDIA_KEY].rooms.rooms  # the room it opened is gone again
    resp = await client.post("/rooms/hall/whep", data=offer, headers=headers)
    assert resp.status == 201
    await asyncio.sleep(0.2)
    assert errors(caplog) == []


@pytest.mark.parametrize(
    "mangle",
    [
        # aiortc bundled the data channel onto the transport of an unknown first mid
        # (none), and closing the half-built connection then raised: a 500 (found by
        # tests/fuzz)
        lambda sdp: sdp.replace("a=group:BUNDLE 0 1", "a=group:BUNDLE 70000 1"),
        lambda sdp: sdp.replace("a=mid:1", "a=mid:0"),
    ],
    ids=["bundle-names-an-unknown-mid", "two-sections-share-a-mid"],
)
async def test_inconsistent_mids_are_400(
    client: TestClient, offer: str, mangle: object, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    assert callable(mangle)
    resp = await client.post("/whep", data=mangle(offer), headers=SDP)
    await assert_json_error(resp, 400, "invalid_offer")
    assert len(client.app[MEDIA_KEY].sessions) == 0
    assert errors(caplog) == []
