"""The benchmark's WHEP client, run in its own process with its own event loop.

The parent sends commands over a :class:`multiprocessing.connection.Connection`:
``("say", utterance_id, text)`` and ``("close",)``. The client answers
``("connected", location)``, ``("said", ClientTiming)``, ``("closed", ClientSummary)``
or ``("error", message)``. Times are ``time.monotonic()``, which on Linux is
one system-wide clock, so they compare directly with the server process's stamps.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, Final

import aiohttp

from media_server.audio.frames import FRAME_SAMPLES
from media_server.rtc.ice import restrict_host_addresses
from tests.whep_client import ReceivedFrame, WhepClient

LOOPBACK: Final = ("127.0.0.1",)
AUDIBLE_RMS: Final = 100.0
"""A decoded frame louder than this (int16 RMS, about -50 dBFS) counts as audible."""
EVENT_WAIT_S: Final = 60.0


@dataclass(frozen=True, slots=True)
class ClientTiming:
    """What the client saw for one ``say``."""

    utterance_id: str
    say_sent: float
    started_event: float | None
    done_event: float | None
    stream_ts: int | None
    first_frame: float | None
    """Arrival of the decoded frame at ``stream_ts`` (the first speech frame)."""
    first_audible: float | None
    """Arrival of the first decoded frame from ``stream_ts`` on with RMS > AUDIBLE_RMS."""
    error: str | None = None


@dataclass(frozen=True, slots=True)
class ClientSummary:
    frames_received: int
    pts_gaps: int
    """Places where consecutive decoded frames are not 20 ms apart (lost or skipped)."""


async def recv_message(conn: Connection, timeout_s: float) -> Any:
    """Wait for the next message on ``conn`` without blocking the event loop."""
    loop = asyncio.get_running_loop()
    if not conn.poll():
        ready: asyncio.Future[None] = loop.create_future()

        def on_readable() -> None:
            if not ready.done():
                ready.set_result(None)

        loop.add_reader(conn.fileno(), on_readable)
        try:
            await asyncio.wait_for(ready, timeout_s)
        finally:
            loop.remove_reader(conn.fileno())
    return conn.recv()


def _first_frame(
    frames: list[ReceivedFrame], start: int, stream_ts: int, audible: bool
) -> float | None:
    for frame in frames[start:]:
        if frame.pts >= stream_ts and (not audible or frame.rms > AUDIBLE_RMS):
            return frame.arrival
    return None


async def _say(client: WhepClient, utterance_id: str, text: str) -> ClientTiming:
    frames_before = len(client.frames)
    events_before = len(client.events)
    say_sent = time.monotonic()
    client.say(text, utterance_id)
    error: str | None = None
    while True:
        event = await client.next_event(wait_s=EVENT_WAIT_S)
        if event.get("id") != utterance_id:
            continue
        if event["type"] == "speech.done":
            break
        if event["type"] == "error":
            error = f"{event.get('error')}: {event.get('message')}"
            break
    stamps = {e["type"]: t for t, e in client.events[events_before:] if e.get("id") == utterance_id}
    stream_ts: int | None = None
    for _, event in client.events[events_before:]:
        if event.get("id") == utterance_id and event["type"] == "speech.started":
            stream_ts = int(event["stream_ts"])
    first_frame = first_audible = None
    if stream_ts is not None:
        # The receiver's jitter buffer holds a few frames back: wait for them briefly.
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            first_frame = _first_frame(client.frames, frames_before, stream_ts, audible=False)
            first_audible = _first_frame(client.frames, frames_before, stream_ts, audible=True)
            if first_audible is not None:
                break
            await asyncio.sleep(0.02)
    return ClientTiming(
        utterance_id=utterance_id,
        say_sent=say_sent,
        started_event=stamps.get("speech.started"),
        done_event=stamps.get("speech.done"),
        stream_ts=stream_ts,
        first_frame=first_frame,
        first_audible=first_audible,
        error=error,
    )


def _summary(client: WhepClient) -> ClientSummary:
    frames = client.frames
    gaps = sum(
        1 for a, b in zip(frames, frames[1:], strict=False) if b.pts - a.pts != FRAME_SAMPLES
    )
    return ClientSummary(frames_received=len(client.frames), pts_gaps=gaps)


async def _main(conn: Connection, base_url: str) -> None:
    async with aiohttp.ClientSession() as http:
        client = WhepClient(base_url)
        try:
            await client.connect(http)
            conn.send(("connected", client.location))
            while True:
                command = await recv_message(conn, timeout_s=600)
                if command[0] == "close":
                    break
                _, utterance_id, text = command
                conn.send(("said", await _say(client, utterance_id, text)))
            summary = _summary(client)
            await client.close(http)
            conn.send(("closed", summary))
        except Exception as exc:  # reported to the parent, which prints it and stops
            conn.send(("error", f"{type(exc).__name__}: {exc}"))
            await client.close()


def client_process(conn: Connection, base_url: str) -> None:
    """Entry point of the client process (multiprocessing ``spawn`` target)."""
    logging.basicConfig(level=logging.WARNING)
    # Offer only 127.0.0.1 as an ICE candidate: all traffic stays on loopback.
    restrict_host_addresses(LOOPBACK)
    asyncio.run(_main(conn, base_url))
