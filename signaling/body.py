"""Reading request bodies whole, but never more than a limit."""

from __future__ import annotations

from aiohttp import web

from signaling.errors import json_error

READ_CHUNK_BYTES = 64 * 1024


async def read_body(request: web.Request, limit: int, solution: str) -> bytes:
    """The whole body; ``413`` as soon as it is known to exceed ``limit`` bytes."""
    too_large = json_error(413, "body_too_large", f"the body is over {limit} bytes", solution)
    if request.content_length is not None and request.content_length > limit:
        raise too_large
    chunks: list[bytes] = []
    total = 0
    while chunk := await request.content.read(READ_CHUNK_BYTES):
        total += len(chunk)
        if total > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)
