"""What one client address may hold at once, so no anonymous client can starve the others.

Every bound is a setting (``VMS_MAX_*_PER_CLIENT``, ``VMS_CLIENT_UPLOAD_BYTES_PER_S``;
0 turns one off, as load tests from one address need). Requests that carry the
operator token are trusted and never counted. The table of bounds is in
``docs/security.md``.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from media_server.clock import Clock, MonotonicClock
from synthesis import ClientLimit

logger = logging.getLogger(__name__)

RETRY_AFTER_S: Final = 5
UPLOAD_BURST_S: Final = 4
"""A client may send this many seconds' worth of its upload rate at once."""
MAX_TRACKED_CLIENTS: Final = 10_000
"""Upload buckets kept at once; full (idle) buckets are dropped past this, so a flood
of source addresses costs bounded memory."""


class Quota(StrEnum):
    SYNTHESIS = "synthesis"
    """Synthesis streams over HTTP and the TTS WebSocket (``POST /tts``, ``/tts/ws``)."""
    SOCKETS = "sockets"
    """Open WebSockets (``/tts/ws``, room bots)."""


class QuotaExceeded(ClientLimit):
    """A client address already holds its limit of ``quota`` (code ``too_many_<quota>``)."""

    def __init__(self, quota: str, limit: int, setting: str) -> None:
        super().__init__(
            f"too_many_{quota}",
            f"this client already holds {limit} {quota} (the per-client limit)",
            f"wait for one to finish and retry in {RETRY_AFTER_S} s; the operator can raise "
            f"{setting}, or send the operator token",
            retry_after_s=RETRY_AFTER_S,
        )
        self.quota = quota
        self.limit = limit


@dataclass(frozen=True, slots=True)
class QuotaLimits:
    """Per-client bounds; 0 means unbounded."""

    synthesis: int = 2
    sockets: int = 8
    upload_bytes_per_s: int = 4 * 1024 * 1024


_SETTING: Final = {
    Quota.SYNTHESIS: "VMS_MAX_SYNTHESES_PER_CLIENT",
    Quota.SOCKETS: "VMS_MAX_SOCKETS_PER_CLIENT",
}


class _Bucket:
    __slots__ = ("tokens", "last")

    def __init__(self, tokens: float, last: float) -> None:
        self.tokens = tokens
        self.last = last


class ClientQuotas:
    """Counts what each client address holds (:meth:`hold`) and how fast it uploads
    (:meth:`take_upload`). Only counters live here, released by their holders."""

    def __init__(self, limits: QuotaLimits, clock: Clock | None = None) -> None:
        self.limits = limits
        self._clock = clock or MonotonicClock()
        self._held: dict[tuple[Quota, str], int] = {}
        self._uploads: dict[str, _Bucket] = {}
        self.refused_total = 0

    def _limit(self, quota: Quota) -> int:
        return self.limits.synthesis if quota is Quota.SYNTHESIS else self.limits.sockets

    def held(self, quota: Quota, address: str) -> int:
        return self._held.get((quota, address), 0)

    @contextlib.contextmanager
    def hold(self, quota: Quota, address: str | None) -> Iterator[None]:
        """Hold one unit of ``quota`` for ``address`` while the block runs.

        Raises :class:`QuotaExceeded` when the address already holds its limit.
        ``address`` None (a trusted caller) holds nothing.
        """
        limit = self._limit(quota)
        if address is None or limit == 0:
            yield
            return
        key = (quota, address)
        count = self._held.get(key, 0)
        if count >= limit:
            self.refused_total += 1
            raise QuotaExceeded(quota.value, limit, _SETTING[quota])
        self._held[key] = count + 1
        try:
            yield
        finally:
            left = self._held[key] - 1
            if left:
                self._held[key] = left
            else:
                del self._held[key]

    def take_upload(self, address: str | None, size: int) -> float:
        """Charge ``size`` uploaded bytes to ``address``: 0 if allowed, otherwise the
        seconds after which it would be (nothing is charged then).

        A client with any credit left may send one body larger than its credit (a
        reference clip, say) and then owes the difference, so the sustained rate
        holds whatever the size of a single body.
        """
        rate = self.limits.upload_bytes_per_s
        if address is None or rate == 0:
            return 0.0
        burst = float(rate * UPLOAD_BURST_S)
        now = self._clock.now()
        bucket = self._uploads.get(address)
        if bucket is None:
            if len(self._uploads) >= MAX_TRACKED_CLIENTS:
                self._prune(now, rate, burst)
            bucket = self._uploads[address] = _Bucket(burst, now)
        bucket.tokens = min(burst, bucket.tokens + (now - bucket.last) * rate)
        bucket.last = now
        if bucket.tokens <= 0:
            self.refused_total += 1
            return max(-bucket.tokens / rate, 1 / rate)
        bucket.tokens -= size
        return 0.0

    def _prune(self, now: float, rate: int, burst: float) -> None:
        """Forget buckets that have refilled (their clients are idle)."""
        full = [a for a, b in self._uploads.items() if b.tokens + (now - b.last) * rate >= burst]
        for address in full:
            del self._uploads[address]
        if len(self._uploads) >= MAX_TRACKED_CLIENTS:  # all busy: forget the oldest half
            for address in list(self._uploads)[: MAX_TRACKED_CLIENTS // 2]:
                del self._uploads[address]


def upload_refused(retry_after_s: float) -> ClientLimit:
    seconds = max(1, math.ceil(retry_after_s))
    return ClientLimit(
        "upload_rate_limited",
        "this client is sending more bytes per second than the server accepts",
        f"retry in {seconds} s; the operator can raise VMS_CLIENT_UPLOAD_BYTES_PER_S",
        retry_after_s=seconds,
    )
