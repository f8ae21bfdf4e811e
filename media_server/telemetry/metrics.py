"""ServerMetrics: every counter and histogram the server exposes on ``GET /metrics``.

One instance per server, on its own registry (never prometheus_client's global one), so
two servers in one process (tests, benchmarks) keep separate figures. Call sites observe
the attributes; names, units, buckets and labels live here only.
Prometheus conventions: base units in names (``_seconds``, ``_bytes``), counters end in
``_total``, and no label names a session, room, listener or identity (cardinality).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    Info,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.registry import Collector

NAMESPACE: Final = "vms"

LATENCY_BUCKETS_S: Final = (
    0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0,
)  # fmt: skip
"""Time to first audio: the 100–400 ms region an operator watches is finely cut."""
RTF_BUCKETS: Final = (0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 5.0)
"""Real-time factor (compute seconds per audio second); above 1 an engine cannot keep up."""
LATENESS_BUCKETS_S: Final = (
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.04, 0.06, 0.1, 0.2, 0.5,
)  # fmt: skip
"""A frame sent a few ms late is harmless; tens of ms eat the listener's jitter buffer."""
LOSS_BUCKETS: Final = (0.0, 0.005, 0.01, 0.02, 0.04, 0.07, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0)
"""Fraction lost per RTCP report; the steps match the link adaptor's thresholds."""
JITTER_BUCKETS_S: Final = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.2, 0.5)
RTT_BUCKETS_S: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.6, 1.0, 2.0)
BITRATE_BUCKETS_BPS: Final = (8_000, 12_000, 16_000, 20_000, 24_000, 32_000, 40_000, 48_000, 64_000)
PLAYED_BUCKETS_S: Final = (0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 60.0)
LOOP_LAG_BUCKETS_S: Final = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0)


class SpeechKind(StrEnum):
    """Where an utterance is spoken: the one label utterance metrics carry."""

    SESSION = "session"
    ROOM = "room"
    SOCKET = "socket"
    """``/tts/ws``: unpaced, no RTP."""


class ServerMetrics:
    """The instruments, registered on :attr:`registry`; :meth:`exposition` renders them."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        ns = NAMESPACE
        # -- time to first audio, one histogram per boundary --------------------------
        self.text_to_first_rtp = Histogram(
            "text_to_first_rtp_seconds",
            "From a say/text message received to the utterance's first speech RTP packet "
            "sent (1:1 sessions and rooms).",
            ["kind"], namespace=ns, registry=r, buckets=LATENCY_BUCKETS_S,
        )  # fmt: skip
        self.tts_first_byte = Histogram(
            "tts_request_to_first_byte_seconds",
            "From a /tts request (or /tts/ws utterance message) received to its first audio "
            "byte written.",
            ["api", "format"], namespace=ns, registry=r, buckets=LATENCY_BUCKETS_S,
        )  # fmt: skip
        self.engine_first_chunk = Histogram(
            "engine_first_chunk_seconds",
            "From the engine starting a request (slot held) to its first audio chunk.",
            ["engine", "mode"], namespace=ns, registry=r, buckets=LATENCY_BUCKETS_S,
        )  # fmt: skip
        self.engine_rtf = Histogram(
            "engine_real_time_factor",
            "Engine compute seconds per second of audio produced, per finished request.",
            ["engine", "mode"], namespace=ns, registry=r, buckets=RTF_BUCKETS,
        )  # fmt: skip
        # -- pacing ---------------------------------------------------------------
        self.frame_lateness = Histogram(
            "frame_send_lateness_seconds",
            "How long after its deadline the pacer took each 20 ms frame.",
            namespace=ns, registry=r, buckets=LATENESS_BUCKETS_S,
        )  # fmt: skip
        self.underruns = Counter(
            "pacer_underruns", "Silent ticks inside an utterance (its audio was not ready).",
            namespace=ns, registry=r,
        )  # fmt: skip
        self.skipped_ticks = Counter(
            "pacer_skipped_ticks", "Ticks skipped after a stall (beyond the catch-up cap).",
            namespace=ns, registry=r,
        )  # fmt: skip
        self.catch_up_frames = Counter(
            "pacer_catch_up_frames", "Overdue frames sent back to back after a stall.",
            namespace=ns, registry=r,
        )  # fmt: skip
        # -- network, from RTCP receiver reports ------------------------------------
        self.fraction_lost = Histogram(
            "rtcp_fraction_lost", "Fraction of packets lost, per receiver report.",
            namespace=ns, registry=r, buckets=LOSS_BUCKETS,
        )  # fmt: skip
        self.jitter = Histogram(
            "rtcp_jitter_seconds", "Interarrival jitter, per receiver report.",
            namespace=ns, registry=r, buckets=JITTER_BUCKETS_S,
        )  # fmt: skip
        self.rtt = Histogram(
            "rtcp_round_trip_time_seconds", "Round-trip time, per receiver report.",
            namespace=ns, registry=r, buckets=RTT_BUCKETS_S,
        )  # fmt: skip
        self.link_decisions = Counter(
            "link_decisions",
            "Coding decisions the link adaptor made (RED distance, in-band FEC, congestion).",
            ["red_distance", "fec", "congested"], namespace=ns, registry=r,
        )  # fmt: skip
        self.target_bitrate = Histogram(
            "link_target_bitrate_bits_per_second", "Opus bitrate the link adaptor chose.",
            namespace=ns, registry=r, buckets=BITRATE_BUCKETS_BPS,
        )  # fmt: skip
        self.ice_restarts = Counter(
            "ice_restarts", "ICE restarts (a client's network path changed).",
            namespace=ns, registry=r,
        )  # fmt: skip
        # -- load -------------------------------------------------------------------
        self.loop_lag = Histogram(
            "event_loop_lag_seconds", "How late the event loop ran a timer, sampled.",
            namespace=ns, registry=r, buckets=LOOP_LAG_BUCKETS_S,
        )  # fmt: skip
        self.refusals = Counter(
            "refusals", "Requests refused for capacity, limits or shutdown, by error code.",
            ["reason"], namespace=ns, registry=r,
        )  # fmt: skip
        self.sessions_started = Counter(
            "sessions_started", "1:1 sessions negotiated.", namespace=ns, registry=r
        )
        self.sessions_closed = Counter(
            "sessions_closed", "1:1 sessions ended.", namespace=ns, registry=r
        )
        # -- traffic ----------------------------------------------------------------
        self.tts_requests = Counter(
            "tts_requests", "/tts and /tts/ws requests, by format and HTTP status.",
            ["api", "format", "status"], namespace=ns, registry=r,
        )  # fmt: skip
        self.utterances_started = Counter(
            "utterances_started", "Utterances whose first audio went out.",
            ["kind"], namespace=ns, registry=r,
        )  # fmt: skip
        self.utterances_done = Counter(
            "utterances_done", "Utterances played to their end.",
            ["kind"], namespace=ns, registry=r,
        )  # fmt: skip
        self.utterances_cancelled = Counter(
            "utterances_cancelled", "Utterances cancelled (interrupted) before their end.",
            ["kind"], namespace=ns, registry=r,
        )  # fmt: skip
        self.cancelled_played = Histogram(
            "cancelled_played_seconds", "How much of a cancelled utterance had been played.",
            ["kind"], namespace=ns, registry=r, buckets=PLAYED_BUCKETS_S,
        )  # fmt: skip
        # -- callers (rooms that listen) ---------------------------------------------
        self.barge_ins = Counter(
            "barge_ins", "Callers talking over a room's speech, by how it ended "
            "(cancelled: the room's speech; resumed: a short burst).",
            ["outcome"], namespace=ns, registry=r,
        )  # fmt: skip
        self.caller_audio_dropped = Counter(
            "caller_audio_dropped_frames", "20 ms caller frames a slow listening bot lost.",
            namespace=ns, registry=r,
        )  # fmt: skip
        self.build = Info("build", "Server version and engine.", namespace=ns, registry=r)
        ProcessCollector(registry=r)  # process_resident_memory_bytes, CPU seconds, open fds

    def exposition(self, *more: Collector) -> tuple[bytes, str]:
        """The text format (this registry, then ``more``) and its content type, for
        ``GET /metrics``. Blocking (the process collector reads ``/proc``): run it off
        the event loop."""
        body = generate_latest(self.registry) + b"".join(generate_latest(c) for c in more)
        return body, CONTENT_TYPE_LATEST
