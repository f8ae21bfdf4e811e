"""The audio network adaptor: one per receiver, driven by its RTCP receiver reports.

It makes the decisions libwebrtc's audio network adaptor makes for a sender, from what a
receiver report says (fraction lost, jitter, round-trip time): in-band FEC and the loss
libopus should expect, the Opus bitrate, DTX, and how many earlier frames each RED packet
repeats. A clean link pays nothing: no RED, no FEC, the configured bitrate. Loss is smoothed
up fast and down slowly, so one lucky report does not drop the protection a lossy link needs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Final

from media_server.audio.opus import CodingTarget, OpusSettings

MAX_RED_DISTANCE: Final = 2
"""Earlier frames a RED packet may repeat (libwebrtc sends one; two also survive a lost pair)."""
LOSS_RISE_WEIGHT: Final = 0.7
"""Weight of a report whose loss is above the smoothed loss (protection comes quickly)."""
LOSS_FALL_WEIGHT: Final = 0.25
"""Weight of a report below it (protection goes slowly: Chromium reports every ~5 s)."""
PROTECT_LOSS: Final = 0.01
"""Smoothed loss from which FEC is on and RED repeats one frame."""
RED_TWO_LOSS: Final = 0.04
"""Smoothed loss from which RED repeats two frames (a lost pair is then recovered too)."""
HYSTERESIS: Final = 0.5
"""A step down waits until the loss is under this share of the step's threshold."""
MAX_EXPECTED_LOSS_PCT: Final = 30
MAX_BITRATE_BPS: Final = 48_000
"""The most the adaptor raises the bitrate to, so FEC does not starve the primary frames."""
MIN_BITRATE_BPS: Final = 16_000
"""The least it lowers it to on a congested link (SILK wideband is still clear here)."""
CONGESTED_RTT_MS: Final = 400.0
CONGESTED_JITTER_MS: Final = 60.0
"""Round-trip time or jitter beyond which the link counts as congested: queues are
building, so fewer bytes (lower bitrate, DTX, at most one RED frame) help more than
more redundancy."""
CONGESTED_BITRATE_SHARE: Final = 0.75


@dataclass(frozen=True, slots=True)
class LinkReport:
    """What one receiver report says of a listener's link."""

    fraction_lost: float
    """0..1: the share of packets lost since the receiver's previous report."""
    jitter_ms: float
    rtt_ms: float | None
    """None until a report answers one of our sender reports."""
    packets_lost: int
    """Cumulative, as the receiver counts it."""


@dataclass(frozen=True, slots=True)
class AudioDecision:
    """How the audio sent to one receiver is coded, as the adaptor last decided."""

    red_distance: int
    """Earlier frames each packet repeats (0: plain Opus)."""
    inband_fec: bool
    expected_loss_pct: int
    bitrate_bps: int
    dtx: bool
    congested: bool = False
    """The report's round-trip time or jitter showed queues building. Said apart from
    ``dtx``, which the operator may also have turned on for a clean link."""

    @property
    def coding(self) -> CodingTarget:
        """What the encoder is to do (RED is the writer's, per packet)."""
        return CodingTarget(self.bitrate_bps, self.inband_fec, self.expected_loss_pct, self.dtx)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def merged(decisions: list[AudioDecision]) -> CodingTarget | None:
    """One encoder's coding for many receivers (a room): the most protection any needs
    (None without decisions: the configured settings). RED stays each listener's own."""
    if not decisions:
        return None
    return CodingTarget(
        bitrate_bps=max(d.bitrate_bps for d in decisions),
        inband_fec=any(d.inband_fec for d in decisions),
        expected_loss_pct=max(d.expected_loss_pct for d in decisions),
        dtx=all(d.dtx for d in decisions),
    )


class AudioNetworkAdaptor:
    """Turns one receiver's reports into an :class:`AudioDecision`.

    Before the first report it keeps the configured settings (``opus``: in-band FEC at
    its expected loss) and no RED. With ``adaptive`` off it never changes them, but RED
    stays at ``red_max_distance`` (the operator's fixed choice). Not thread-safe: the
    event loop owns it.
    """

    def __init__(self, opus: OpusSettings, red_max_distance: int, *, adaptive: bool = True) -> None:
        self._opus = opus
        self._red_max = red_max_distance
        self.adaptive = adaptive
        self.loss: float | None = None
        """The smoothed fraction lost (None before the first report)."""
        self.reports = 0
        self.last: LinkReport | None = None
        self.decision = AudioDecision(
            red_distance=0 if adaptive else red_max_distance,
            inband_fec=opus.inband_fec,
            expected_loss_pct=opus.expected_loss_pct,
            bitrate_bps=opus.bitrate_bps,
            dtx=opus.dtx,
        )

    def update(self, report: LinkReport) -> AudioDecision:
        """Take a new report; returns the decision (the same object if nothing changed)."""
        self.reports += 1
        self.last = report
        lost = min(1.0, max(0.0, report.fraction_lost))
        if self.loss is None:
            self.loss = lost
        else:
            weight = LOSS_RISE_WEIGHT if lost > self.loss else LOSS_FALL_WEIGHT
            self.loss += weight * (lost - self.loss)
        if not self.adaptive:
            return self.decision
        decision = self._decide(self.loss, report)
        if decision != self.decision:
            self.decision = decision
        return self.decision

    def _decide(self, loss: float, report: LinkReport) -> AudioDecision:
        congested = report.jitter_ms > CONGESTED_JITTER_MS or (
            report.rtt_ms is not None and report.rtt_ms > CONGESTED_RTT_MS
        )
        red = self._red_distance(loss)
        protect = loss >= PROTECT_LOSS * (HYSTERESIS if self.decision.inband_fec else 1.0)
        base = self._opus.bitrate_bps
        if congested:
            red = min(red, 1)
            bitrate = max(MIN_BITRATE_BPS, int(base * CONGESTED_BITRATE_SHARE))
        elif protect:
            # libopus takes FEC's bits from the primary frames: give some back
            bitrate = min(max(base, MAX_BITRATE_BPS), int(base * (1 + 2 * min(loss, 0.25))))
        else:
            bitrate = base
        return AudioDecision(
            red_distance=min(red, self._red_max),
            inband_fec=protect,
            expected_loss_pct=(
                min(MAX_EXPECTED_LOSS_PCT, max(1, round(loss * 100))) if protect else 0
            ),
            bitrate_bps=bitrate,
            dtx=congested,
            congested=congested,
        )

    def _red_distance(self, loss: float) -> int:
        current = self.decision.red_distance
        for distance, threshold in ((2, RED_TWO_LOSS), (1, PROTECT_LOSS)):
            if loss >= threshold * (HYSTERESIS if current >= distance else 1.0):
                return distance
        return 0

    def snapshot(self) -> dict[str, Any]:
        """For per-session stats: the decision and what it was made from."""
        last = self.last
        return {
            "adaptive": self.adaptive,
            "reports": self.reports,
            "loss_pct": None if self.loss is None else round(self.loss * 100, 2),
            "jitter_ms": None if last is None else round(last.jitter_ms, 1),
            "rtt_ms": None if last is None or last.rtt_ms is None else round(last.rtt_ms, 1),
            "packets_lost": None if last is None else last.packets_lost,
            **self.decision.as_dict(),
        }
