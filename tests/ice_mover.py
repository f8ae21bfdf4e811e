"""A real aiortc WHEP client that changes address and restarts ICE, as a phone that
moves from Wi-Fi to cellular does.

aiortc has no ICE restart, so the client side of one is done here on the client's
aioice connection: its old sockets go silent (what leaves or reaches them is dropped,
as on a network that is gone), new ones are bound (a new port: a new address), and
after the WHEP ``PATCH`` with ``If-Match: "*"`` the checks run again with both sides'
new credentials, through :class:`media_server.rtc.ice_restart.IceRestart` in the
controlling role (aggressive nomination). What is measured: when the ``PATCH`` went,
when its answer came, when the client's new pair was nominated, and when RTP arrived
again (:class:`RtpLog` records each packet's sequence number and timestamp).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp.test_utils import TestClient
from aioice.candidate import Candidate

from media_server.rtc.client import PeerClient
from media_server.rtc.ice_restart import IceCredentials, IceRestart
from media_server.tasks import cancel_and_wait
from signaling.keys import MEDIA_KEY
from tests.whep_client import WhepClient

FRAG = "application/trickle-ice-sdpfrag"
LOOPBACK = "127.0.0.1"


@dataclass
class RtpLog:
    """Every RTP packet the client's audio receiver got: (arrival, sequence, timestamp)."""

    packets: list[tuple[float, int, int]] = field(default_factory=list)

    def install(self, client: WhepClient) -> None:
        receiver = next(t.receiver for t in client.pc.getTransceivers() if t.kind == "audio")
        handle = receiver._handle_rtp_packet

        async def logged(packet: Any, arrival_time_ms: int) -> None:
            self.packets.append((time.monotonic(), packet.sequence_number, packet.timestamp))
            await handle(packet, arrival_time_ms=arrival_time_ms)

        receiver._handle_rtp_packet = logged  # this one receiver, for this test

    def first_after(self, moment: float) -> float | None:
        return next((t for t, _, _ in self.packets if t > moment), None)


@dataclass
class Move:
    """The timeline of one address change and restart (``time.monotonic()`` seconds)."""

    status: int
    etag: str | None
    answer: str
    local: IceCredentials
    patch_sent: float = 0.0
    answered: float = 0.0
    nominated: float | None = None
    old_port: int = 0
    new_port: int = 0


def ice_transport(client: WhepClient) -> Any:
    return client.pc.getTransceivers()[0].sender.transport.transport


def silence(protocol: Any) -> None:
    """The old network is gone: nothing this socket sends or gets arrives any more."""

    async def send_data(data: bytes, addr: tuple[str, int]) -> None:
        return None

    protocol.send_data = send_data
    protocol.send_stun = lambda message, addr: None
    protocol.datagram_received = lambda data, addr: None


async def move_away(client: WhepClient) -> tuple[int, int]:
    """Silence the client's sockets and bind new ones; returns (old port, new port).
    The client knows it moved: its consent checks of the old path stop (they would
    end its connection before a slow restart), as its restart starts them again."""
    connection = ice_transport(client)._connection
    consent, connection._query_consent_task = connection._query_consent_task, None
    await cancel_and_wait(consent)
    old = list(connection._protocols)
    for protocol in old:
        silence(protocol)
    candidates = await connection.get_component_candidates(component=1, addresses=[LOOPBACK])
    connection._protocols[:] = [p for p in connection._protocols if p not in old]
    connection._local_candidates[:] = candidates
    client._silenced = old  # type: ignore[attr-defined]  # closed once the new pair is up
    return old[0].local_candidate.port, candidates[0].port


def restart_fragment(local: IceCredentials, client: WhepClient) -> str:
    connection = ice_transport(client)._connection
    lines = ["a=mid:0", f"a=ice-ufrag:{local.ufrag}", f"a=ice-pwd:{local.pwd}"]
    lines += [f"a=candidate:{c.to_sdp()}" for c in connection.local_candidates]
    lines.append("a=end-of-candidates")
    return "\r\n".join(lines) + "\r\n"


def parse_answer(fragment: str) -> tuple[IceCredentials, list[Candidate]]:
    values = dict(line.split(":", 1) for line in fragment.splitlines() if line.startswith("a=ice-"))
    candidates = [
        Candidate.from_sdp(line.removeprefix("a=candidate:"))
        for line in fragment.splitlines()
        if line.startswith("a=candidate:")
    ]
    return IceCredentials(values["a=ice-ufrag"], values["a=ice-pwd"]), candidates


async def restart(
    client: WhepClient,
    http: aiohttp.ClientSession,
    if_match: str = "*",
    *,
    local: IceCredentials | None = None,
    run_checks: bool = True,
) -> Move:
    """PATCH a restart and, when it answers 200, run the client's side of it (unless
    not ``run_checks``: a client gone for good after asking)."""
    assert client.location is not None
    local = local or IceCredentials.generate()
    headers = {"Content-Type": FRAG, "If-Match": if_match, **client.auth}
    sent = time.monotonic()
    async with http.patch(
        f"{client.base_url}{client.location}",
        data=restart_fragment(local, client),
        headers=headers,
    ) as resp:
        move = Move(resp.status, resp.headers.get("ETag"), await resp.text(), local, sent)
    move.answered = time.monotonic()
    if move.status == 200 and run_checks:
        await check_again(client, move)
    return move


async def check_again(client: WhepClient, move: Move) -> None:
    """The client's side of a restart the server answered: its checks, with both
    sides' new credentials, to the server's candidates."""
    remote, candidates = parse_answer(move.answer)
    transport = ice_transport(client)
    restarter = IceRestart(transport, "test-client")
    client._restarter = restarter  # type: ignore[attr-defined]
    await restarter.begin(remote, move.local)
    for candidate in candidates:
        await transport._connection.add_remote_candidate(candidate)
    await transport._connection.add_remote_candidate(None)


async def wait_nominated(client: WhepClient, move: Move, wait_s: float = 10.0) -> None:
    """Wait for the client's new pair, then close its silenced sockets."""
    restarter: IceRestart = client._restarter  # type: ignore[attr-defined]
    deadline = time.monotonic() + wait_s
    while restarter.completed == 0:
        assert time.monotonic() < deadline, "the client's new pair was never nominated"
        await asyncio.sleep(0.005)
    move.nominated = time.monotonic()
    for protocol in getattr(client, "_silenced", []):
        await protocol.close()


async def close_restarter(client: WhepClient) -> None:
    restarter: IceRestart | None = getattr(client, "_restarter", None)
    if restarter is not None:
        await restarter.close()


@contextlib.asynccontextmanager
async def connected_listener(
    client: TestClient, http: aiohttp.ClientSession
) -> AsyncIterator[WhepClient]:
    """A connected WHEP listener, closed (restart machinery included) on the way out."""
    peer = WhepClient(str(client.make_url("")).rstrip("/"))
    await peer.connect(http)
    try:
        yield peer
    finally:
        await close_restarter(peer)
        await peer.close(http)


def session_of(client: TestClient, peer: WhepClient) -> PeerClient:
    """The server's session (or listener) behind ``peer``'s WHEP resource."""
    assert peer.location is not None
    session = client.app[MEDIA_KEY].sessions.get(peer.location.rsplit("/", 1)[-1])
    assert session is not None
    return session
