from __future__ import annotations

import pytest

from media_server.rooms.tokens import Role, TokenSigner
from signaling.errors import status_of
from synthesis import ClientError

SECRET = b"0123456789abcdef-test"


class Clock:
    t = 1_800_000_000.0

    def __call__(self) -> float:
        return self.t


def test_a_token_verifies_for_its_room_and_role() -> None:
    signer = TokenSigner(SECRET)
    claims = signer.verify(
        signer.issue("lobby", Role.BOT, "agent-1", voice="joe-us"), "lobby", {Role.BOT}
    )
    assert (claims.room, claims.role, claims.identity, claims.voice) == (
        "lobby", Role.BOT, "agent-1", "joe-us",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("token_room", "role", "room", "roles", "status", "error"),
    [
        ("lobby", Role.LISTENER, "other", {Role.LISTENER}, 403, "wrong_room"),
        ("lobby", Role.LISTENER, "lobby", {Role.BOT}, 403, "wrong_role"),
        ("lobby", Role.BOT, "lobby", {Role.LISTENER, Role.SPEAKER}, 403, "wrong_role"),
    ],
)
def test_out_of_scope_tokens_are_403(
    token_room: str, role: Role, room: str, roles: set[Role], status: int, error: str
) -> None:
    signer = TokenSigner(SECRET)
    with pytest.raises(ClientError) as info:
        signer.verify(signer.issue(token_room, role, "x"), room, roles)
    assert (status_of(info.value), info.value.code) == (status, error)
    assert info.value.solution


def test_expired_missing_tampered_and_foreign_tokens_are_401() -> None:
    clock = Clock()
    signer = TokenSigner(SECRET, clock=clock)
    token = signer.issue("lobby", Role.LISTENER, "x", ttl_s=60)
    clock.t += 61
    cases = {
        "token_expired": token,
        "token_required": "",
        "invalid_token": token[:-2] + ("AA" if not token.endswith("AA") else "BB"),
    }
    foreign = TokenSigner(b"another-secret-of-16+").issue("lobby", Role.LISTENER, "x")
    for error, bad in [*cases.items(), ("invalid_token", foreign), ("invalid_token", "a.b")]:
        with pytest.raises(ClientError) as info:
            signer.verify(bad, "lobby", {Role.LISTENER})
        assert (status_of(info.value), info.value.code) == (401, error)


def test_short_secrets_are_refused() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        TokenSigner(b"short")
