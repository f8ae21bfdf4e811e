"""The HTTP TTS API: ``POST /tts`` (streamed audio), ``GET``/``POST /voices``."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
import time
from collections.abc import Awaitable
from typing import Any, Final

from aiohttp import web

from media_server.audio.containers import AudioFormatter, create_formatter, http_opus
from media_server.speech.protocol import JsonTooDeep, loads_json
from media_server.speech.unpaced import one_piece, speech_pcm
from media_server.telemetry import FirstByte, TtsApi
from signaling.access import client_address
from signaling.body import read_body
from signaling.errors import UnsupportedMediaType
from signaling.keys import MEDIA_KEY, QUOTAS_KEY, SETTINGS_KEY, TTS_FORMAT_KEY
from signaling.quotas import Quota
from synthesis import (
    ClientError,
    Conflict,
    InvalidRequest,
    RequestLimits,
    SynthesisRequest,
    Unsupported,
    check_supported,
    parse_request,
)
from synthesis.capabilities import reference_check
from synthesis.request import ReferenceAudio

logger = logging.getLogger(__name__)

FORMATS: Final = ("pcm", "wav", "ogg")
MAX_BODY_BYTES: Final = 8 * 1024 * 1024
VOICE_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

routes = web.RouteTableDef()


def request_limits(request: web.Request) -> RequestLimits:
    return RequestLimits(max_text_chars=request.app[SETTINGS_KEY].max_text_chars)


async def read_json(request: web.Request) -> dict[str, Any]:
    if request.content_type != "application/json":
        raise UnsupportedMediaType(
            None,
            f"expected Content-Type application/json, got {request.content_type or 'none'}",
            "send the request as JSON with 'Content-Type: application/json'",
        )
    raw = await read_body(request, MAX_BODY_BYTES, "send shorter text or a shorter reference clip")
    try:
        data = loads_json(raw)
    except JsonTooDeep as exc:
        raise InvalidRequest(
            "invalid_json", f"the body {exc}", 'send a flat JSON object, e.g. {"text": ...}'
        ) from None
    except (ValueError, UnicodeDecodeError):
        raise InvalidRequest(
            "invalid_json", "the body is not valid JSON", "send a JSON object"
        ) from None
    if not isinstance(data, dict):
        raise InvalidRequest("invalid_json", "the body must be a JSON object", "send {...}")
    return data


async def parse_checked(request: web.Request, data: dict[str, Any]) -> SynthesisRequest:
    """Validate (decoding reference audio off-loop) and check against the engine.

    Reference audio the engine cannot use is refused before it is decoded: decoding is
    the expensive part, and anyone may call ``POST /tts``.
    """
    service = request.app[MEDIA_KEY].synthesis
    engine = service.engine
    loop = asyncio.get_running_loop()
    check = reference_check(engine.name, engine.capabilities)
    parsed = await loop.run_in_executor(
        None,
        functools.partial(parse_request, data, request_limits(request), check_reference=check),
    )
    check_supported(engine.name, engine.capabilities, engine.voices, parsed)
    return parsed


@routes.post("/tts")
async def tts(request: web.Request) -> web.StreamResponse:
    received_s = time.monotonic()
    with request.app[MEDIA_KEY].tts_request():  # refused, or waited for, while draining
        return await _tts(request, received_s)


async def _tts(request: web.Request, received_s: float) -> web.StreamResponse:
    """``received_s``: ``time.monotonic()`` at the handler's start (first-byte time)."""
    data = await read_json(request)
    fmt = data.pop("format", None) or request.query.get("format", "pcm")
    if fmt not in FORMATS:
        raise InvalidRequest(
            None, f"'format': {fmt!r} is not a format", f"use one of: {', '.join(FORMATS)}"
        )
    request[TTS_FORMAT_KEY] = fmt  # the error middleware counts the answer by format
    first_byte = FirstByte.of(request.app[MEDIA_KEY].metrics, TtsApi.HTTP, fmt, received_s)
    parsed = await parse_checked(request, data)
    service = request.app[MEDIA_KEY].synthesis
    settings = request.app[SETTINGS_KEY]
    formatter = create_formatter(fmt, service.engine.sample_rate_hz, http_opus(settings.opus))
    with contextlib.ExitStack() as held:
        held.enter_context(request.app[QUOTAS_KEY].hold(Quota.SYNTHESIS, client_address(request)))
        return await synthesise_response(request, parsed, fmt, formatter, first_byte)


class ClientGone(ConnectionError):
    """The client disconnected, or took no audio for the write timeout."""


CLIENT_CLOSED_REQUEST: Final = 499
"""The status logged for a client that left before its answer (nginx's convention);
the client itself never sees it."""
WRITE_SLICE_BYTES: Final = 64 * 1024
"""Audio is written this much at a time, so the write timeout bounds each step of
progress (a slow but reading client is fine), never a whole long body."""


def check_connected(request: web.Request) -> None:
    """Raise :class:`ClientGone` once the client has left.

    aiohttp (``run_app``'s default) does not cancel a handler whose client
    disconnected, so a handler that keeps synthesising must look for itself.
    """
    transport = request.transport
    if transport is None or transport.is_closing():
        raise ClientGone("disconnected")


def abort_connection(request: web.Request) -> None:
    """Drop the connection now, discarding what is unsent (``close`` would wait for a
    client that reads nothing to take it)."""
    if request.transport is not None:
        request.transport.abort()


async def within_write_timeout(step: Awaitable[object], timeout_s: float) -> None:
    """Await a write to a client; :class:`ClientGone` if it is closed or stays blocked
    (the client reads nothing) for ``timeout_s``."""
    try:
        async with asyncio.timeout(timeout_s):
            await step
    except TimeoutError:
        raise ClientGone(f"took no audio for {timeout_s:g} s") from None
    except ConnectionError:  # reset, or "Connection lost" while waiting to drain
        raise ClientGone("disconnected") from None


async def write_audio(
    request: web.Request,
    response: web.StreamResponse,
    data: bytes,
    timeout_s: float,
    first_byte: FirstByte | None = None,
) -> None:
    """Write ``data``; ``first_byte`` (when ``data`` carries audio) is told once the
    first slice has been written."""
    view = memoryview(data)
    for start in range(0, len(view), WRITE_SLICE_BYTES):
        check_connected(request)
        piece = view[start : start + WRITE_SLICE_BYTES]
        await within_write_timeout(response.write(piece), timeout_s)
        if first_byte is not None:
            first_byte.sent()


async def synthesise_response(
    request: web.Request,
    parsed: SynthesisRequest,
    fmt: str,
    formatter: AudioFormatter,
    first_byte: FirstByte | None = None,
) -> web.StreamResponse:
    """Synthesise ``parsed`` into the answer, streamed or whole.

    Synthesis stops (and gives its slot back) as soon as the client is gone or
    takes no audio for ``http_write_timeout_s``: that is logged at INFO, and the
    connection is dropped. ``first_byte`` is told when the first write that carries
    audio (not only a container's header) has been handed to the connection: with
    ``stream: false``, the first slice of the whole body.
    """
    service = request.app[MEDIA_KEY].synthesis
    timeout_s = request.app[SETTINGS_KEY].http_write_timeout_s
    headers = audio_headers(formatter, fmt, service)
    loop = asyncio.get_running_loop()
    audio = speech_pcm(service, parsed, one_piece(parsed.text))
    response: web.StreamResponse | None = None
    try:
        # Wait for the first chunk before answering, so a refused or failed
        # request still gets a proper status and JSON error.
        first = await anext(audio, None)
        header = body = formatter.header()
        if first is not None:
            body += await loop.run_in_executor(None, formatter.feed, first)
        if parsed.stream:
            response = web.StreamResponse(headers=headers)
            await within_write_timeout(response.prepare(request), timeout_s)
            audio_in_body = len(body) > len(header)
            await write_audio(
                request, response, body, timeout_s, first_byte if audio_in_body else None
            )
        async for pcm in audio:
            check_connected(request)
            data = await loop.run_in_executor(None, formatter.feed, pcm)
            if response is None:
                body += data
            else:
                await write_audio(request, response, data, timeout_s, first_byte)
        tail = await loop.run_in_executor(None, formatter.finish)
        if response is None:
            body += tail
            response = web.StreamResponse(headers=headers)
            response.content_length = len(body)
            await within_write_timeout(response.prepare(request), timeout_s)
            heard = first_byte if first is not None else None
            await write_audio(request, response, body, timeout_s, heard)
        else:
            await write_audio(request, response, tail, timeout_s, first_byte)
        await within_write_timeout(response.write_eof(), timeout_s)
        return response
    except ClientGone as exc:
        logger.info("TTS client went away (%s): synthesis stopped", exc)
        abort_connection(request)
        if response is not None and response.prepared:
            return response
        return web.Response(status=CLIENT_CLOSED_REQUEST)
    except asyncio.CancelledError:
        logger.info("TTS request cancelled (client gone or server stopping): synthesis stopped")
        raise
    except ClientError as exc:
        if response is None:
            raise
        # Headers are gone: all we can do is cut the stream short.
        logger.warning("TTS stream failed after %s: %s", fmt, exc)
        if request.transport is not None:
            request.transport.close()
        return response
    finally:
        with contextlib.suppress(Exception):
            await audio.aclose()


def audio_headers(formatter: Any, fmt: str, service: Any) -> dict[str, str]:
    rate = 48_000 if fmt == "ogg" else service.engine.sample_rate_hz
    return {
        "Content-Type": formatter.content_type,
        "X-Sample-Rate": str(rate),
        "X-Channels": "1",
        "X-Engine": service.engine.name,
        "Cache-Control": "no-store",
        "X-Accel-Buffering": "no",
    }


@routes.get("/voices")
async def list_voices(request: web.Request) -> web.Response:
    engine = request.app[MEDIA_KEY].engine
    return web.json_response(
        {
            "engine": engine.name,
            "capabilities": engine.capabilities.as_dict(),
            "voices": [
                {
                    "voice_id": v.voice_id,
                    "language": v.language,
                    "sample_rate_hz": v.sample_rate_hz,
                    "cloned": v.cloned,
                }
                for v in engine.voices
            ],
        }
    )


@routes.post("/voices")
async def register_voice(request: web.Request) -> web.Response:
    engine = request.app[MEDIA_KEY].engine
    if not engine.capabilities.cloning:
        raise Unsupported(
            None,
            f"the {engine.name} engine cannot clone voices",
            "voice cloning needs the cosyvoice engine (VMS_ENGINE=cosyvoice)",
        )
    data = await read_json(request)
    voice_id = data.get("voice_id")
    if not isinstance(voice_id, str) or not VOICE_ID.fullmatch(voice_id):
        raise InvalidRequest(
            None,
            "'voice_id': must be 1-64 letters, digits, '_' or '-'",
            "name the voice, e.g. 'alice'",
        )
    if any(v.voice_id == voice_id for v in engine.voices):
        raise Conflict(
            "voice_exists", f"a voice {voice_id!r} already exists", "choose another voice_id"
        )
    if not isinstance(data.get("reference_audio"), str):
        raise InvalidRequest(
            None,
            "'reference_audio': required (base64 WAV/MP3/OGG/FLAC)",
            "send a clip of the voice, 3-30 s, base64-encoded",
        )
    fields = {
        "text": "-",
        "reference_audio": data["reference_audio"],
        "reference_text": data.get("reference_text"),
    }
    loop = asyncio.get_running_loop()
    parsed = await loop.run_in_executor(None, parse_request, fields, request_limits(request))
    reference: ReferenceAudio | None = parsed.reference_audio
    assert reference is not None
    # a concurrent registration of the same id that won raises Conflict (409)
    voice = await loop.run_in_executor(
        None, engine.register_voice, voice_id, reference, parsed.reference_text
    )
    return web.json_response(
        {"voice_id": voice.voice_id, "language": voice.language, "cloned": True}, status=201
    )
