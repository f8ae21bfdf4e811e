"""``voice-media-token``: mint a room join token with the server's ``VMS_TOKEN_SECRET``."""

from __future__ import annotations

import argparse
import os
import sys

from media_server.rooms.tokens import DEFAULT_TTL_S, Role, TokenSigner


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="voice-media-token",
        description="Print a join token for a room (HMAC-signed with VMS_TOKEN_SECRET).",
    )
    parser.add_argument("--room", required=True)
    parser.add_argument("--role", required=True, choices=[r.value for r in Role])
    parser.add_argument("--identity", required=True, help="who joins (shown to the room)")
    parser.add_argument("--ttl", type=float, default=DEFAULT_TTL_S, help="seconds it is valid")
    parser.add_argument("--voice", help="default voice for this member's speech")
    args = parser.parse_args(argv)
    secret = os.environ.get("VMS_TOKEN_SECRET")
    if not secret or len(secret.encode()) < 16:
        print("set VMS_TOKEN_SECRET (at least 16 bytes), as for the server", file=sys.stderr)  # noqa: T201
        return 2
    token = TokenSigner(secret.encode()).issue(
        args.room, Role(args.role), args.identity, args.ttl, args.voice
    )
    print(token)  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main())
