"""Reading request bodies whole, but never more than a limit, nor faster than allowed."""

from __future__ import annotations

import math

from aiohttp import web

from signaling.access import client_address
from signaling.errors import BodyTooLarge
from signaling.keys import QUOTAS_KEY
from signaling.quotas import upload_refused
from synthesis import ClientLimit

READ_CHUNK_BYTES = 64 * 1024


def charge_upload(request: web.Request, size: int) -> None:
    """429 when this client has sent more than its share of bytes lately."""
    wait_s = request.app[QUOTAS_KEY].take_upload(client_address(request), size)
    if wait_s > 0:
        raise upload_refused(wait_s)


def message_refused(request: web.Request, size: int) -> ClientLimit | None:
    """For a WebSocket message of ``size`` bytes: the error to send instead of acting on
    it when this client is over its upload rate, else None (the socket stays open)."""
    wait_s = request.app[QUOTAS_KEY].take_upload(client_address(request), size)
    if wait_s <= 0:
        return None
    return ClientLimit(
        "upload_rate_limited",
        "this client is sending more bytes per second than the server accepts; "
        "the message was dropped",
        f"wait {max(1, math.ceil(wait_s))} s before sending more; the operator can raise "
        "VMS_CLIENT_UPLOAD_BYTES_PER_S",
    )


async def read_body(request: web.Request, limit: int, solution: str) -> bytes:
    """The whole body; ``413`` as soon as it is known to exceed ``limit`` bytes."""
    too_large = BodyTooLarge(None, f"the body is over {limit} bytes", solution)
    if request.content_length is not None and request.content_length > limit:
        raise too_large
    declared = request.content_length
    if declared is not None:
        charge_upload(request, declared)
    chunks: list[bytes] = []
    total = 0
    while chunk := await request.content.read(READ_CHUNK_BYTES):
        total += len(chunk)
        if total > limit:
            raise too_large
        chunks.append(chunk)
    if declared is None:
        charge_upload(request, total)
    return b"".join(chunks)
