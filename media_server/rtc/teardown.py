"""Tearing down a closed ``RTCPeerConnection`` so reference counting frees it.

aiortc's objects point at each other (the connection at its transceivers, a sender
at its transport and back, event handlers at their owners, tasks at the objects
they serve), so a closed peer is cyclic garbage: about 650 objects, among them the
sender's history of recent RTP packets. Only a garbage collection frees them, and a
collection holds the event loop while it walks them; with peers coming and going
those collections grew to tens of milliseconds and stalled every stream's audio.

:func:`release_peer` clears the attributes of the connection's own parts once it
is closed, which breaks those cycles: the objects are freed at once, by reference
counting, on the task that closed the peer.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Collection, Mapping
from types import CodeType
from typing import Any, Final

from aiortc import RTCPeerConnection, RTCSctpTransport

logger = logging.getLogger(__name__)

OWN_PARTS: Final = frozenset(
    {
        "aiortc.rtcpeerconnection.RTCPeerConnection",
        "aiortc.rtcrtptransceiver.RTCRtpTransceiver",
        "aiortc.rtcrtpsender.RTCRtpSender",
        "aiortc.rtcrtpreceiver.RTCRtpReceiver",
        "aiortc.rtcrtpreceiver.RemoteStreamTrack",
        "aiortc.rtcdtlstransport.RTCDtlsTransport",
        "aiortc.rtcdtlstransport.RtpRouter",
        "aiortc.rtcicetransport.RTCIceTransport",
        "aiortc.rtcicetransport.RTCIceGatherer",
        "aiortc.rtcsctptransport.RTCSctpTransport",
        "aiortc.rtcdatachannel.RTCDataChannel",
        "aioice.ice.Connection",
    }
)
"""The classes whose instances belong to one connection, and point at each other.

Named one by one: a module also holds objects shared by every connection (enum
members, certificates, aioice's STUN protocol objects that a closed asyncio
transport still calls), and clearing one of those would break the others."""

TASKS_WAIT_S: Final = 2.0
"""How long :func:`release_peer` waits for the connection's last tasks to end."""

_CONTAINERS: Final = (list, tuple, set, frozenset, collections.deque)

UNTRACKED_COROUTINES: Final[Mapping[type, tuple[str, ...]]] = {
    RTCPeerConnection: ("_RTCPeerConnection__connect",),
    RTCSctpTransport: (
        "_data_channel_flush",
        "_send_chunk",
        "_send_reconfig_param",
        "_transmit",
        "_transmit_reconfig",
    ),
}
"""The methods aiortc (1.16) runs with ``asyncio.ensure_future`` without keeping the
task, so that :func:`_parts_of` cannot find it. Named, rather than found by reading
every task's locals: that cost time for every task of every session, on every close
(measured: see docs/performance.md)."""


def _untracked_codes() -> frozenset[CodeType]:
    codes = set()
    for cls, names in UNTRACKED_COROUTINES.items():
        for name in names:
            code = getattr(getattr(cls, name, None), "__code__", None)
            if isinstance(code, CodeType):
                codes.add(code)
    return frozenset(codes)


_UNTRACKED_CODES: Final = _untracked_codes()


async def release_peer(
    pc: RTCPeerConnection,
    wait_s: float = TASKS_WAIT_S,
    busy: Collection[asyncio.Future[Any]] = (),
) -> int:
    """Clear the attributes of a *closed* connection's parts; returns how many.

    Call it after ``await pc.close()``. Every task that can still touch the parts is
    awaited first, for up to ``wait_s``: those the parts hold (an ICE monitor still
    reading its last event, say), those aiortc started without keeping them (the
    connection's ICE handshake, which ``close()`` only wakes), and the caller's
    ``busy`` futures (work of its own inside aiortc, such as a trickled candidate
    being resolved). If one is still running the connection is left whole, for the
    garbage collector. Afterwards ``pc`` and its parts must not be used again.
    """
    if pc.connectionState != "closed":
        raise RuntimeError("release_peer needs a closed RTCPeerConnection")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    while True:  # again after each wait: an ending task may have started another
        parts, tasks = _parts_of(pc)
        running: list[asyncio.Future[Any]] = [task for task in tasks if not task.done()]
        running += _tasks_serving(parts)
        running += [future for future in busy if not future.done()]
        if not running:
            break
        left_s = deadline - loop.time()
        if left_s <= 0:
            logger.warning("a closed peer connection still runs tasks; left to the collector")
            return 0
        await asyncio.wait(running, timeout=left_s)
    for part in parts:
        vars(part).clear()
    logger.debug("released %d parts of a closed peer connection", len(parts))
    return len(parts)


def _parts_of(pc: RTCPeerConnection) -> tuple[list[Any], list[asyncio.Task[Any]]]:
    """Every :data:`OWN_PARTS` object reachable from ``pc`` through its parts'
    attributes, and the tasks those attributes hold: aiortc keeps each part's
    tasks on the part."""
    parts: list[Any] = []
    tasks: list[asyncio.Task[Any]] = []
    seen: set[int] = set()
    todo: list[Any] = [pc]
    while todo:
        obj = todo.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, dict):
            todo.extend(obj.keys())
            todo.extend(obj.values())
        elif isinstance(obj, _CONTAINERS):
            todo.extend(obj)
        elif isinstance(obj, asyncio.Task):
            tasks.append(obj)
        elif _is_own_part(obj):
            parts.append(obj)
            todo.extend(vars(obj).values())
    return parts, tasks


def _tasks_serving(parts: list[Any]) -> list[asyncio.Task[Any]]:
    """Running :data:`UNTRACKED_COROUTINES` tasks started on one of ``parts``."""
    ids = {id(part) for part in parts}
    found: list[asyncio.Task[Any]] = []
    for task in asyncio.all_tasks():
        coro = task.get_coro()
        if getattr(coro, "cr_code", None) not in _UNTRACKED_CODES:
            continue
        frame = getattr(coro, "cr_frame", None)  # None once it has returned
        if frame is not None and id(frame.f_locals.get("self")) in ids:
            found.append(task)
    return found


def _is_own_part(obj: object) -> bool:
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}" in OWN_PARTS
