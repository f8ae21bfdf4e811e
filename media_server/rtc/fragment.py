"""The ``application/trickle-ice-sdpfrag`` bodies of WHEP (RFC 8840): what a ``PATCH``
carries (candidates, and new credentials for an ICE restart) and what a restart answers.

Parsing only: nothing here touches a connection. Bounds on how many candidates a
session takes are the caller's (:class:`~media_server.rtc.peer.PeerSession`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from aiortc import RTCIceCandidate
from aiortc.sdp import candidate_to_sdp

from media_server.rtc.ice import CandidateKey, parse_remote_candidate
from media_server.rtc.ice_restart import IceCredentials

_UFRAG: Final = re.compile(r"^a=ice-ufrag:(\S+)", re.MULTILINE)
_PASSWORD: Final = re.compile(r"^a=ice-pwd:(\S+)", re.MULTILINE)
_MID: Final = re.compile(r"^a=mid:(\S+)", re.MULTILINE)


@dataclass(frozen=True)
class Candidates:
    """A fragment's candidates that were not known yet, their keys, and whether it
    ended the candidates (``a=end-of-candidates``)."""

    new: tuple[RTCIceCandidate, ...]
    keys: frozenset[CandidateKey]
    end: bool


def ufrag_of(sdpfrag: str) -> str | None:
    found = _UFRAG.search(sdpfrag)
    return found.group(1) if found else None


def credentials_of(sdpfrag: str) -> IceCredentials | None:
    """The fragment's ``a=ice-ufrag``/``a=ice-pwd``, unchecked; None unless both are there."""
    ufrag, pwd = _UFRAG.search(sdpfrag), _PASSWORD.search(sdpfrag)
    if ufrag is None or pwd is None:
        return None
    return IceCredentials(ufrag.group(1), pwd.group(1))


def parse_candidate(line: str) -> tuple[RTCIceCandidate, CandidateKey]:
    """A checked candidate from an ``a=candidate:`` line (``ValueError`` names the problem)."""
    try:
        return parse_remote_candidate(line.removeprefix("a=candidate:"))
    except ValueError as exc:
        raise ValueError(f"bad candidate line {line[:200]!r}: {exc}") from None


def parse_candidates(sdpfrag: str, known: Iterable[CandidateKey], default_mid: str) -> Candidates:
    """Every candidate of ``sdpfrag`` not in ``known`` (nor twice in it), each with its
    section's ``a=mid`` (else ``default_mid``); raises ``ValueError`` for a bad one.
    Candidates after ``a=end-of-candidates`` are ignored (RFC 8838 section 13)."""
    seen = set(known)
    mid_match = _MID.search(sdpfrag)
    mid = mid_match.group(1) if mid_match else default_mid
    new: list[RTCIceCandidate] = []
    keys: set[CandidateKey] = set()
    end = False
    for line in sdpfrag.splitlines():
        line = line.strip()
        if line.startswith("a=mid:"):
            mid = line[len("a=mid:") :]
        elif line.startswith("a=candidate:"):
            candidate, key = parse_candidate(line)
            if key in keys or key in seen:
                continue
            keys.add(key)
            candidate.sdpMid = mid
            new.append(candidate)
        elif line == "a=end-of-candidates":
            end = True
            break
    return Candidates(tuple(new), frozenset(keys), end)


def restart_answer(
    kind: str, mid: str, local: IceCredentials, candidates: Iterable[RTCIceCandidate]
) -> str:
    """The answer to an ICE restart, shaped as RFC 9725 section 4.3.2's example: the
    bundle's first media section, the new credentials, every local candidate."""
    lines = [
        "a=ice-options:trickle",
        f"m={kind} 9 UDP/TLS/RTP/SAVPF 0",
        f"a=mid:{mid}",
        f"a=ice-ufrag:{local.ufrag}",
        f"a=ice-pwd:{local.pwd}",
    ]
    lines += [f"a=candidate:{candidate_to_sdp(c)}" for c in candidates]
    lines.append("a=end-of-candidates")
    return "\r\n".join(lines) + "\r\n"
