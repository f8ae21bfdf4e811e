"""A listener's RTCP receiver reports, read from aiortc's sender as :class:`LinkReport`s."""

from __future__ import annotations

import datetime
from typing import Final

from aiortc import RTCRtpSender

from media_server.audio.frames import SAMPLE_RATE_HZ
from media_server.link.adaptor import LinkReport

FRACTION_LOST_SCALE: Final = 256
"""RTCP's fraction lost is 8-bit fixed point; aiortc passes the raw integer on."""


class ReportReader:
    """Gives each receiver report of one sender once (aiortc keeps only the latest).

    Reads aiortc's public ``getStats()``: the ``remote-inbound-rtp`` entry it makes from
    each receiver or sender report that describes our stream.
    """

    def __init__(self, sender: RTCRtpSender) -> None:
        self._sender = sender
        self._seen: datetime.datetime | None = None

    async def read(self) -> LinkReport | None:
        """The newest report if it is one not read before, else None."""
        stats = await self._sender.getStats()
        remote = next((s for s in stats.values() if s.type == "remote-inbound-rtp"), None)
        if remote is None or remote.timestamp == self._seen:
            return None
        self._seen = remote.timestamp
        lost = remote.fractionLost
        rtt = getattr(remote, "roundTripTime", None)
        return LinkReport(
            fraction_lost=lost / FRACTION_LOST_SCALE if isinstance(lost, int) else float(lost),
            jitter_ms=1000 * remote.jitter / SAMPLE_RATE_HZ,
            rtt_ms=None if rtt is None else 1000 * rtt,
            packets_lost=int(remote.packetsLost),
        )
