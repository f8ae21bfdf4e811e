"""A room's listeners on different links: one encoding, each its own redundancy."""

from __future__ import annotations

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from media_server.config import Settings
from media_server.rooms.tokens import Role, TokenSigner
from signaling.keys import MEDIA_KEY
from tests.conftest import loopback_settings
from tests.red_client import RED_PT, RedClient, until_link

pytestmark = [pytest.mark.loopback, pytest.mark.slow]

SECRET = "room-links-secret-0123456789"


@pytest.fixture
def settings() -> Settings:
    return loopback_settings(token_secret=SECRET)


async def join(client: TestClient, http: aiohttp.ClientSession, name: str, drop: int) -> RedClient:
    token = TokenSigner(SECRET.encode()).issue("hall", Role.SPEAKER, name)
    listener = RedClient(drop_every=drop)
    await listener.connect(
        http, str(client.make_url("/rooms/hall/whep")), headers={"Authorization": f"Bearer {token}"}
    )
    await listener.until("room.joined")
    return listener


async def test_the_lossy_listener_gets_red_and_the_room_codes_with_fec_for_it(
    client: TestClient, http: aiohttp.ClientSession
) -> None:
    clean = await join(client, http, "fibre", drop=0)
    lossy = await join(client, http, "train", drop=6)
    try:
        registry = client.app[MEDIA_KEY].rooms
        room = registry.rooms.get("hall")
        assert room is not None
        by_name = {listener.identity: listener for listener in room.listeners.values()}
        await until_link(by_name["train"].stats, lambda link: link["red_distance"] == 2)
        clean_link = await until_link(by_name["fibre"].stats, lambda link: link["reports"] > 0)
        assert clean_link["red_distance"] == 0 and not clean_link["inband_fec"]
        target = room.speech.encoder.target
        assert target is not None and target.inband_fec and target.expected_loss_pct >= 5

        marks = len(clean.packets), len(lossy.packets)
        clean.channel.send('{"type": "say", "text": "One voice for two links.", "id": "h1"}')
        await clean.until("speech.done")
        await lossy.until("speech.done")
        assert clean.payload_types(marks[0]) == {clean.opus_pt}
        assert lossy.payload_types(marks[1]) == {RED_PT}
        encoder = room.speech.encoder.current
        assert encoder is not None and encoder.get(encoder.ctl.get_inband_fec) == 1

        # the lossy listener leaves: the room codes for the clean one again
        await lossy.pc.close()
        train = next(k for k, v in room.listeners.items() if v.identity == "train")
        assert await registry.remove_listener("hall", train)  # as its DELETE would
        target = room.speech.encoder.target
        assert target is not None and not target.inband_fec
    finally:
        await clean.pc.close()
        await lossy.pc.close()
