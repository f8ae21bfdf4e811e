"""``voice-media-server`` / ``python -m signaling``: run the server."""

from __future__ import annotations

import argparse
import sys

from media_server.config import LOG_FORMATS, ConfigError, settings_from_env
from signaling.access import exposure_error
from signaling.app import create_app
from signaling.log_format import configure_logging
from signaling.runner import run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="voice-media-server",
        description="Real-time WebRTC voice media server (settings also from VMS_* env vars).",
    )
    parser.add_argument("--host", help="address to listen on (VMS_HOST, default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to listen on (VMS_PORT, default 8080)")
    parser.add_argument("--engine", help="TTS engine (VMS_ENGINE, default piper)")
    parser.add_argument("--max-sessions", type=int, help="session limit (VMS_MAX_SESSIONS)")
    parser.add_argument(
        "--ice-host-address",
        action="append",
        help="offer only this host address as ICE candidate (repeatable; VMS_ICE_HOST_ADDRESSES)",
    )
    parser.add_argument(
        "--api-token",
        help="operator token clients must send as 'Authorization: Bearer' (VMS_API_TOKEN; "
        "prefer the variable: arguments are visible to other users of the machine)",
    )
    parser.add_argument(
        "--allow-anonymous",
        action="store_true",
        default=None,
        help="serve clients without a token on a non-loopback address (VMS_ALLOW_ANONYMOUS)",
    )
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        help="text, or json: one object per line on stderr (VMS_LOG_FORMAT, default text)",
    )
    args = parser.parse_args(argv)
    try:
        settings = settings_from_env().with_overrides(
            host=args.host,
            port=args.port,
            engine=args.engine,
            max_sessions=args.max_sessions,
            ice_host_addresses=tuple(args.ice_host_address) if args.ice_host_address else None,
            api_token=args.api_token,
            allow_anonymous=args.allow_anonymous,
            log_format=args.log_format,
        )
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)  # noqa: T201
        return 2
    configure_logging(
        args.log_level, settings.log_format, secrets=(settings.api_token, settings.token_secret)
    )
    refusal = exposure_error(settings)
    if refusal is not None:
        print(f"configuration error: {refusal}", file=sys.stderr)  # noqa: T201
        return 2
    return run(create_app(settings), settings)


if __name__ == "__main__":
    sys.exit(main())
