"""The security posture: the operator token, session capabilities, CORS and origins,
per-client bounds and what anonymous ``/stats`` shows (docs/security.md)."""

from __future__ import annotations

import asyncio
import logging

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, make_mocked_request

from media_server.config import ConfigError, Settings
from media_server.rooms.tokens import Role, TokenSigner
from signaling.__main__ import main
from signaling.access import exposure_error
from signaling.access_log import RedactingAccessLogger, redacted_path
from signaling.app import create_app
from synthesis import Engine
from tests.conftest import loopback_settings

SDP = {"Content-Type": "application/sdp"}
TOKEN = "operator-token-0123456789"
OPERATOR = {"Authorization": f"Bearer {TOKEN}"}
SECRET = "room-secret-0123456789abcdef"


async def error_of(resp: aiohttp.ClientResponse, status: int) -> str:
    assert resp.status == status, await resp.text()
    body = await resp.json()
    assert set(body) == {"error", "message", "solution"}
    return str(body["error"])


# -- the operator token --------------------------------------------------------------


@pytest.mark.parametrize("settings", [loopback_settings(api_token=TOKEN)])
async def test_operator_token_guards_sessions_synthesis_and_voices(
    client: TestClient, offer: str
) -> None:
    assert await error_of(await client.post("/whep", data=offer, headers=SDP), 401) == (
        "token_required"
    )
    wrong = {"Authorization": "Bearer someone-elses-token-000"}
    resp = await client.post("/whep", data=offer, headers={**SDP, **wrong})
    assert await error_of(resp, 401) == "invalid_token"
    assert "Bearer" in resp.headers["WWW-Authenticate"]
    tts = {"text": "Hello.", "stream": False}
    assert await error_of(await client.post("/tts", json=tts), 401) == "token_required"
    voice = {"voice_id": "alice", "reference_audio": "AAAA"}
    assert await error_of(await client.post("/voices", json=voice), 401) == "token_required"
    assert await error_of(await client.get("/tts/ws"), 401) == "token_required"
    # what costs nothing and reveals nobody stays open
    assert (await client.get("/voices")).status == 200
    assert (await client.get("/healthz")).status == 200
    assert (await client.get("/openapi.json")).status == 200

    resp = await client.post("/whep", data=offer, headers={**SDP, **OPERATOR})
    assert resp.status == 201
    location = resp.headers["Location"]
    # the session's URL needs the token that made it
    assert await error_of(await client.delete(location), 401) == "token_required"
    assert await error_of(await client.delete(location, headers=wrong), 403) == "wrong_token"
    assert await error_of(await client.get(f"{location}/stats"), 401) == "token_required"
    assert (await client.get(f"{location}/stats", headers=OPERATOR)).status == 200
    assert (await client.delete(location, headers=OPERATOR)).status == 200

    resp = await client.post("/tts", json=tts, headers=OPERATOR)
    assert resp.status == 200 and len(await resp.read()) > 1000


@pytest.mark.parametrize("settings", [loopback_settings(api_token=TOKEN)])
async def test_browser_websocket_sends_the_token_as_a_subprotocol(client: TestClient) -> None:
    async with client.ws_connect("/tts/ws", protocols=("vms", f"vms.token.{TOKEN}")) as ws:
        assert ws.protocol == "vms"  # a browser fails the handshake without one it offered
        assert (await ws.receive_json())["type"] == "ready"
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        async with client.ws_connect("/tts/ws", protocols=("vms", "vms.token.not-the-token-00")):
            pass
    assert refused.value.status == 401


async def test_a_session_made_with_a_token_needs_it_without_an_operator_token(
    client: TestClient, offer: str
) -> None:
    # on loopback without VMS_API_TOKEN, a URL made with a token is still bound to it
    mine = {"Authorization": "Bearer my-own-secret-12345"}
    resp = await client.post("/whep", data=offer, headers={**SDP, **mine})
    assert resp.status == 201
    location = resp.headers["Location"]
    assert await error_of(await client.delete(location), 401) == "token_required"
    patch = await client.patch(
        location,
        data="a=end-of-candidates\r\n",
        headers={"Content-Type": "application/trickle-ice-sdpfrag"},
    )
    assert await error_of(patch, 401) == "token_required"
    assert (await client.delete(location, headers=mine)).status == 200


# -- /stats -----------------------------------------------------------------------------


@pytest.mark.parametrize("settings", [loopback_settings(api_token=TOKEN, token_secret=SECRET)])
async def test_anonymous_stats_show_counts_not_who(client: TestClient, offer: str) -> None:
    resp = await client.post("/whep", data=offer, headers={**SDP, **OPERATOR})
    session_id = resp.headers["Location"].rsplit("/", 1)[1]
    listener = TokenSigner(SECRET.encode()).issue("secret-room", Role.LISTENER, "carol")
    joined = await client.post(
        "/rooms/secret-room/whep",
        data=offer,
        headers={**SDP, "Authorization": f"Bearer {listener}"},
    )
    assert joined.status == 201
    anonymous = await (await client.get("/stats")).text()
    assert session_id not in anonymous and "secret-room" not in anonymous
    assert "carol" not in anonymous
    counts = await (await client.get("/stats")).json()
    assert counts["sessions"] == 1 and counts["rooms_open"] == 1
    full = await (await client.get("/stats", headers=OPERATOR)).json()
    assert [s["session_id"] for s in full["per_session"]] == [session_id]
    assert [r["room"] for r in full["rooms"]] == ["secret-room"]


async def test_stats_never_list_sessions_without_an_operator_token(
    client: TestClient, offer: str
) -> None:
    resp = await client.post("/whep", data=offer, headers=SDP)
    session_id = resp.headers["Location"].rsplit("/", 1)[1]
    stats = await (await client.get("/stats")).text()
    assert session_id not in stats and "per_session" not in stats
    assert (await client.delete(resp.headers["Location"])).status == 200


# -- rooms: a listener's URL needs its join token -------------------------------------------


@pytest.mark.parametrize("settings", [loopback_settings(token_secret=SECRET)])
async def test_a_room_listener_is_ended_only_with_its_join_token(
    client: TestClient, offer: str
) -> None:
    signer = TokenSigner(SECRET.encode())
    token = signer.issue("hall", Role.LISTENER, "dave")
    other = signer.issue("hall", Role.LISTENER, "eve")
    resp = await client.post(
        "/rooms/hall/whep", data=offer, headers={**SDP, "Authorization": f"Bearer {token}"}
    )
    assert resp.status == 201
    location = resp.headers["Location"]
    assert await error_of(await client.delete(location), 401) == "token_required"
    eve = {"Authorization": f"Bearer {other}"}
    assert await error_of(await client.delete(location, headers=eve), 403) == "wrong_token"
    assert (await client.delete(location, headers={"Authorization": f"Bearer {token}"})).ok


# -- CORS and WebSocket origins -------------------------------------------------------------


async def test_no_cross_origin_access_by_default(client: TestClient) -> None:
    resp = await client.get("/stats", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in resp.headers
    preflight = await client.options(
        "/whep",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert "Access-Control-Allow-Origin" not in preflight.headers
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        async with client.ws_connect("/tts/ws", origin="https://evil.example"):
            pass
    assert refused.value.status == 403
    # programs send no Origin; the bundled page is same-origin
    async with client.ws_connect("/tts/ws") as ws:
        assert (await ws.receive_json())["type"] == "ready"
    own = f"http://{client.host}:{client.port}"
    async with client.ws_connect("/tts/ws", origin=own) as ws:
        assert (await ws.receive_json())["type"] == "ready"


@pytest.mark.parametrize("settings", [loopback_settings(cors_origins=("https://app.example",))])
async def test_cors_follows_the_allow_list(client: TestClient) -> None:
    allowed = {"Origin": "https://app.example"}
    resp = await client.get("/stats", headers=allowed)
    assert resp.headers["Access-Control-Allow-Origin"] == "https://app.example"
    assert "Location" in resp.headers["Access-Control-Expose-Headers"]
    preflight = await client.options(
        "/whep", headers={**allowed, "Access-Control-Request-Method": "POST"}
    )
    assert preflight.status == 204
    assert "Authorization" in preflight.headers["Access-Control-Allow-Headers"]
    other = await client.get("/stats", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in other.headers
    async with client.ws_connect("/tts/ws", origin="https://app.example") as ws:
        assert (await ws.receive_json())["type"] == "ready"


# -- per-client bounds ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "settings", [loopback_settings(max_pending_sessions_per_client=2, api_token=TOKEN)]
)
async def test_the_operator_is_not_bounded_per_client(client: TestClient, offer: str) -> None:
    locations = []
    for _ in range(3):  # one more than an anonymous client may have unconnected
        resp = await client.post("/whep", data=offer, headers={**SDP, **OPERATOR})
        assert resp.status == 201
        locations.append(resp.headers["Location"])
    for location in locations:
        assert (await client.delete(location, headers=OPERATOR)).status == 200


@pytest.mark.parametrize("settings", [loopback_settings(max_pending_sessions_per_client=2)])
async def test_anonymous_unconnected_sessions_are_bounded(client: TestClient, offer: str) -> None:
    locations = []
    for _ in range(2):
        resp = await client.post("/whep", data=offer, headers=SDP)
        assert resp.status == 201
        locations.append(resp.headers["Location"])
    resp = await client.post("/whep", data=offer, headers=SDP)
    assert await error_of(resp, 429) == "too_many_pending_sessions"
    assert resp.headers["Retry-After"]
    assert (await client.delete(locations.pop())).status == 200
    resp = await client.post("/whep", data=offer, headers=SDP)
    assert resp.status == 201  # one was ended: room for another
    locations.append(resp.headers["Location"])
    for location in locations:
        assert (await client.delete(location)).status == 200


@pytest.mark.parametrize("settings", [loopback_settings(max_sockets_per_client=1)])
async def test_open_websockets_are_bounded_per_client(client: TestClient) -> None:
    async with client.ws_connect("/tts/ws") as first:
        assert (await first.receive_json())["type"] == "ready"
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            async with client.ws_connect("/tts/ws"):
                pass
        assert refused.value.status == 429
    for _ in range(50):  # the server notices the close on its own schedule
        try:
            async with client.ws_connect("/tts/ws") as again:
                assert (await again.receive_json())["type"] == "ready"
            break
        except aiohttp.WSServerHandshakeError:
            await asyncio.sleep(0.05)
    else:
        pytest.fail("the socket's slot was never given back")


@pytest.mark.parametrize("settings", [loopback_settings(client_upload_bytes_per_s=1000)])
async def test_upload_rate_is_bounded_per_client(client: TestClient, offer: str) -> None:
    # 4 s of credit (4000 bytes): an offer of a few kB goes through, then the debt shows
    statuses = []
    for _ in range(4):
        resp = await client.post("/whep", data=offer, headers=SDP)
        statuses.append(resp.status)
        if resp.status == 201:
            assert (await client.delete(resp.headers["Location"])).status == 200
        else:
            assert await error_of(resp, 429) == "upload_rate_limited"
            assert int(resp.headers["Retry-After"]) >= 1
    assert statuses[0] == 201 and 429 in statuses


# -- starting up exposed, and the access log -------------------------------------------------


def test_an_exposed_server_needs_a_token_or_an_explicit_opt_in(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert exposure_error(Settings(host="127.0.0.1")) is None
    assert exposure_error(Settings(host="::1")) is None
    assert exposure_error(Settings(host="localhost")) is None
    refusal = exposure_error(Settings(host="0.0.0.0"))
    assert refusal is not None and "VMS_API_TOKEN" in refusal
    assert exposure_error(Settings(host="0.0.0.0", api_token=TOKEN)) is None
    assert exposure_error(Settings(host="0.0.0.0", allow_anonymous=True)) is None
    # the command refuses before loading anything
    assert main(["--host", "0.0.0.0", "--port", "18999"]) == 2
    assert "VMS_ALLOW_ANONYMOUS" in capsys.readouterr().err


def test_operator_tokens_must_be_long_and_header_safe() -> None:
    with pytest.raises(ConfigError):
        Settings(api_token="short")
    with pytest.raises(ConfigError):
        Settings(api_token="has spaces in it, quite long")


def test_join_tokens_are_redacted_from_the_access_log(caplog: pytest.LogCaptureFixture) -> None:
    request = make_mocked_request("GET", "/rooms/hall/bot?token=SECRETSECRET&voice=amy")
    assert "SECRETSECRET" not in redacted_path(request)
    assert "voice=amy" in redacted_path(request)
    logger = logging.getLogger("test.access")
    response = aiohttp.web.Response(status=101)
    with caplog.at_level(logging.INFO, logger="test.access"):
        RedactingAccessLogger(logger, "").log(request, response, 0.01)
    assert "SECRETSECRET" not in caplog.text and "/rooms/hall/bot" in caplog.text


async def test_the_server_logs_no_token_when_a_bot_joins(
    piper_engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    settings = loopback_settings(token_secret=SECRET)
    runner = aiohttp.web.AppRunner(
        create_app(settings, engine=piper_engine), access_log_class=RedactingAccessLogger
    )
    await runner.setup()
    site = aiohttp.web.TCPSite(runner, "127.0.0.1", 0)
    token = TokenSigner(SECRET.encode()).issue("hall", Role.BOT, "bot-1")
    try:
        with caplog.at_level(logging.INFO, logger="aiohttp.access"):
            await site.start()
            port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            url = f"http://127.0.0.1:{port}/rooms/hall/bot?token={token}"
            async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
                assert (await ws.receive_json())["type"] == "ready"
            for _ in range(50):  # the line is written once the handler has returned
                if "/rooms/hall/bot" in caplog.text:
                    break
                await asyncio.sleep(0.05)
    finally:
        await runner.cleanup()
    assert "/rooms/hall/bot" in caplog.text
    assert token not in caplog.text


@pytest.mark.parametrize("settings", [loopback_settings(client_upload_bytes_per_s=500)])
async def test_websocket_messages_count_against_the_upload_rate(client: TestClient) -> None:
    # 2000 bytes of credit: a 1900-byte message leaves a little, the next runs into debt,
    # the third is dropped with an event, and the socket stays up
    padded = {"type": "cancel", "padding": "x" * 1900}
    async with client.ws_connect("/tts/ws") as ws:
        assert (await ws.receive_json())["type"] == "ready"
        for _ in range(3):
            await ws.send_json(padded)
        async with asyncio.timeout(10):
            event = await ws.receive_json()
        assert event["type"] == "error" and event["error"] == "upload_rate_limited"
        assert event["solution"] and not ws.closed
