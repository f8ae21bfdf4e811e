"""ICE: host-candidate selection, and checking the candidates a client sends.

aioice gathers host candidates on every interface except loopback. A server
in a container, or a test on one machine, often needs to offer exactly one
address; :func:`restrict_host_addresses` makes aioice offer only those. It is
process-wide (aioice has no per-connection hook), so it is applied once at start.

:func:`parse_remote_candidate` checks a client's candidate before aiortc sees it:
aiortc and aioice take its numbers as they come, and a port past 65535 made the
session's ICE socket fail (``OverflowError`` in ``sendto``) and close.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from typing import Final

from aiortc import RTCIceCandidate

MIN_CANDIDATE_FIELDS: Final = 8
"""``foundation component transport priority address port typ type`` (RFC 8839 5.1)."""

MAX_COMPONENT_ID: Final = 256
MAX_PORT: Final = 65535
MAX_PRIORITY: Final = 2**32 - 1
CANDIDATE_TYPES: Final = frozenset({"host", "srflx", "prflx", "relay"})
TRANSPORTS: Final = frozenset({"udp", "tcp"})
"""aioice pairs only UDP; TCP candidates (which browsers send too) are kept but unused."""
TCP_TYPES: Final = frozenset({"active", "passive", "so"})

_FOUNDATION: Final = re.compile(r"[A-Za-z0-9+/]{1,32}")
_NUMBER: Final = re.compile(r"[0-9]{1,10}")
_MDNS_NAME: Final = re.compile(r"[A-Za-z0-9-]{1,63}\.local")
"""A browser's mDNS host name (aioice resolves those, its own pattern)."""
_LIMITED_BROADCAST: Final = ipaddress.ip_address("255.255.255.255")

CandidateKey = tuple[int, str, str, int]
"""What makes a remote candidate distinct: component, transport, address, port."""


def restrict_host_addresses(addresses: Sequence[str]) -> None:
    import aioice.ice

    chosen = [str(ipaddress.ip_address(a)) for a in addresses]

    def get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return [
            a
            for a in chosen
            if (use_ipv4 and ipaddress.ip_address(a).version == 4)
            or (use_ipv6 and ipaddress.ip_address(a).version == 6)
        ]

    aioice.ice.get_host_addresses = get_host_addresses


def parse_remote_candidate(sdp: str) -> tuple[RTCIceCandidate, CandidateKey]:
    """A candidate attribute's value (after ``a=candidate:``) as aiortc's candidate,
    and its :data:`CandidateKey`; ``ValueError`` names the first problem."""
    bits = sdp.split()
    if len(bits) < MIN_CANDIDATE_FIELDS or bits[6] != "typ":
        raise ValueError("expected 'foundation component transport priority address port typ type'")
    foundation, component, transport, priority, address, port, _, kind = bits[:8]
    if not _FOUNDATION.fullmatch(foundation):
        raise ValueError(f"foundation {foundation!r} is not 1 to 32 ice-chars")
    component_id = _number("component", component, 1, MAX_COMPONENT_ID)
    transport = transport.lower()
    if transport not in TRANSPORTS:
        raise ValueError(f"transport {transport!r} is not udp or tcp")
    priority_value = _number("priority", priority, 1, MAX_PRIORITY)
    host = _address("address", address, connectable=True)
    port_number = _number("port", port, 1, MAX_PORT)
    if kind not in CANDIDATE_TYPES:
        raise ValueError(f"type {kind!r} is not one of {', '.join(sorted(CANDIDATE_TYPES))}")
    candidate = RTCIceCandidate(
        component=component_id,
        foundation=foundation,
        ip=host,
        port=port_number,
        priority=priority_value,
        protocol=transport,
        type=kind,
    )
    # extension attributes come in name/value pairs; unknown ones are ignored
    for name, value in zip(bits[8::2], bits[9::2], strict=False):
        if name == "raddr":
            candidate.relatedAddress = _address("raddr", value, connectable=False)
        elif name == "rport":
            candidate.relatedPort = _number("rport", value, 0, MAX_PORT)
        elif name == "tcptype":
            if value not in TCP_TYPES:
                raise ValueError(f"tcptype {value!r} is not active, passive or so")
            candidate.tcpType = value
    return candidate, (component_id, transport, host.lower(), port_number)


def _number(name: str, text: str, low: int, high: int) -> int:
    if not _NUMBER.fullmatch(text) or not low <= int(text) <= high:
        raise ValueError(f"{name} {text!r} is not a number from {low} to {high}")
    return int(text)


def _address(name: str, text: str, *, connectable: bool) -> str:
    """An IP address in canonical form, or a browser's mDNS name. A connection
    address must be one the server could send a check to."""
    if _MDNS_NAME.fullmatch(text):
        return text
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        raise ValueError(f"{name} {text!r} is not an IP address or an mDNS .local name") from None
    if connectable and (ip.is_unspecified or ip.is_multicast or ip == _LIMITED_BROADCAST):
        raise ValueError(f"{name} {text!r} is not a unicast address")
    return str(ip)
