"""The audio network adaptor: what it decides from receiver reports."""

from __future__ import annotations

from media_server.audio.opus import OpusSettings
from media_server.link.adaptor import (
    MAX_BITRATE_BPS,
    AudioDecision,
    AudioNetworkAdaptor,
    LinkReport,
    merged,
)

OPUS = OpusSettings()


def report(lost: float, jitter_ms: float = 5.0, rtt_ms: float | None = 80.0) -> LinkReport:
    return LinkReport(fraction_lost=lost, jitter_ms=jitter_ms, rtt_ms=rtt_ms, packets_lost=0)


def settle(adaptor: AudioNetworkAdaptor, lost: float, reports: int = 8) -> AudioDecision:
    for _ in range(reports):
        decision = adaptor.update(report(lost))
    return decision


def test_before_any_report_the_configured_settings_hold_and_no_red() -> None:
    decision = AudioNetworkAdaptor(OPUS, 2).decision
    assert decision.red_distance == 0
    assert decision.inband_fec and decision.expected_loss_pct == OPUS.expected_loss_pct
    assert decision.bitrate_bps == OPUS.bitrate_bps and not decision.dtx
    assert not decision.congested


def test_a_clean_link_pays_nothing() -> None:
    decision = settle(AudioNetworkAdaptor(OPUS, 2), 0.0)
    assert decision == AudioDecision(0, False, 0, OPUS.bitrate_bps, False)


def test_loss_raises_protection_with_its_level() -> None:
    light = settle(AudioNetworkAdaptor(OPUS, 2), 0.02)
    assert light.red_distance == 1 and light.inband_fec and light.expected_loss_pct == 2
    heavy = settle(AudioNetworkAdaptor(OPUS, 2), 0.15)
    assert heavy.red_distance == 2 and heavy.inband_fec and heavy.expected_loss_pct == 15
    assert OPUS.bitrate_bps < heavy.bitrate_bps <= MAX_BITRATE_BPS
    assert light.bitrate_bps < heavy.bitrate_bps


def test_red_never_exceeds_the_configured_distance() -> None:
    assert settle(AudioNetworkAdaptor(OPUS, 1), 0.2).red_distance == 1
    assert settle(AudioNetworkAdaptor(OPUS, 0), 0.2).red_distance == 0


def test_protection_comes_at_once_and_goes_slowly() -> None:
    adaptor = AudioNetworkAdaptor(OPUS, 2)
    settle(adaptor, 0.0)
    assert adaptor.update(report(0.10)).red_distance == 2  # one lossy report is enough
    # one clean report after it is not: a lossy link has clean spells
    assert adaptor.update(report(0.0)).red_distance >= 1
    assert settle(adaptor, 0.0, reports=20).red_distance == 0


def test_hovering_at_a_threshold_does_not_flap() -> None:
    adaptor = AudioNetworkAdaptor(OPUS, 2)
    settle(adaptor, 0.05)
    distances = {adaptor.update(report(lost)).red_distance for lost in [0.03, 0.05] * 10}
    assert distances == {2}


def test_a_congested_link_gets_fewer_bytes() -> None:
    adaptor = AudioNetworkAdaptor(OPUS, 2)
    for _ in range(4):
        decision = adaptor.update(report(0.15, jitter_ms=90.0))
    assert decision.dtx and decision.congested and decision.red_distance == 1
    assert decision.bitrate_bps < OPUS.bitrate_bps
    assert adaptor.update(report(0.15, rtt_ms=600.0)).dtx
    assert not adaptor.update(report(0.15)).congested


def test_without_adaptation_nothing_follows_the_link() -> None:
    adaptor = AudioNetworkAdaptor(OPUS, 2, adaptive=False)
    first = adaptor.decision
    assert first.red_distance == 2 and first.inband_fec
    assert settle(adaptor, 0.3) is first and settle(adaptor, 0.0) is first
    assert 0 < adaptor.snapshot()["loss_pct"] < 30 and adaptor.reports == 16


def test_an_unchanged_decision_is_the_same_object() -> None:
    adaptor = AudioNetworkAdaptor(OPUS, 2)
    first = adaptor.update(report(0.0))
    assert adaptor.update(report(0.0)) is first


def test_a_room_codes_for_the_listener_that_needs_most() -> None:
    clean = settle(AudioNetworkAdaptor(OPUS, 2), 0.0)
    lossy = settle(AudioNetworkAdaptor(OPUS, 2), 0.1)
    target = merged([clean, lossy])
    assert target is not None
    assert target.inband_fec and target.expected_loss_pct == 10
    assert target.bitrate_bps == lossy.bitrate_bps and not target.dtx
    assert merged([]) is None
    assert merged([clean]) == clean.coding


def test_snapshot_says_what_the_decision_was_made_from() -> None:
    adaptor = AudioNetworkAdaptor(OPUS, 2)
    assert adaptor.snapshot()["loss_pct"] is None and adaptor.snapshot()["reports"] == 0
    adaptor.update(LinkReport(fraction_lost=0.05, jitter_ms=12.34, rtt_ms=81.25, packets_lost=7))
    snap = adaptor.snapshot()
    assert snap["loss_pct"] == 5.0 and snap["jitter_ms"] == 12.3 and snap["rtt_ms"] == 81.2
    assert snap["packets_lost"] == 7 and snap["red_distance"] == 2 and snap["inband_fec"]
