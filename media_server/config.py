"""Server settings: a frozen dataclass read from the environment (CLI flags override)."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from media_server.audio.opus import OpusSettings
from media_server.link.adaptor import MAX_RED_DISTANCE

API_TOKEN = re.compile(r"[A-Za-z0-9._~-]{16,256}")
"""What an operator token may be: long, and safe in a header or a WebSocket subprotocol."""

LOG_FORMATS = ("text", "json")
"""``log_format``: lines for a terminal, or one JSON object per line for a log shipper."""

BARGE_IN_MODES = ("off", "cancel", "pause")
"""``barge_in``: what a caller's voice does to a room's speech (docs/protocol.md, Barge-in)."""
MAX_BARGE_IN_MIN_SPEECH_MS = 5000

MAX_DEFAULT_ENCODE_WORKERS = 4
"""Encode threads when ``encode_workers`` is not set and more CPUs are available."""
MAX_DEFAULT_SYNTHESIS_WORKERS = 4
"""Synthesis slots when ``synthesis_workers`` is not set and more CPUs are available."""


class ConfigError(ValueError):
    """A setting has a value the server cannot use."""


@dataclass(frozen=True, slots=True)
class IceServer:
    urls: tuple[str, ...]
    username: str | None = None
    credential: str | None = None


@dataclass(frozen=True, slots=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8080
    engine: str = "piper"
    log_format: str = "text"
    """``text`` or ``json`` (one object per line on stderr; see docs/operations.md (Logs))."""
    ice_servers: tuple[IceServer, ...] = ()
    """STUN/TURN servers for the server's peer connections; none by default."""
    ice_host_addresses: tuple[str, ...] = ()
    """Offer only these host addresses as ICE candidates (default: every non-loopback one)."""
    max_sessions: int = 100
    max_text_chars: int = 2000
    max_queued_utterances: int = 16
    say_rate_per_s: float = 5.0
    say_burst: int = 10
    idle_timeout_s: float = 300.0
    connect_timeout_s: float = 30.0
    disconnect_grace_s: float = 10.0
    synthesis_workers: int | None = None
    """Requests the engine runs at once (None: :attr:`synthesis_slots`). A session's or
    room's next one waits for a slot (``speech.queued``); ``POST /tts`` and ``/tts/ws``
    get 503 / ``engine_busy``."""
    synthesis_queue_timeout_s: float = 10.0
    """A live request waiting this long for a synthesis slot gets ``engine_busy``."""
    loop_nice: int = -10
    """Niceness the event loop thread asks for at start, so neighbours on the machine
    cannot delay a frame or a first chunk (the first chunks of an utterance and Opus
    encoding run 5 above it, later chunks 5 above those). Raising priority needs root or
    ``CAP_SYS_NICE``; without it a line is logged and priorities stay as they are.
    0 leaves them alone."""
    encode_workers: int | None = None
    """Threads that resample and Opus-encode speech; None: one per CPU this process
    may run on (its affinity), at most :data:`MAX_DEFAULT_ENCODE_WORKERS`."""
    heap_trim_idle_s: float = 2.0
    """Once no session or room has been open this long, freed heap memory goes back to
    the OS (glibc ``malloc_trim``, :mod:`media_server.runtime.heap`); 0 turns it off."""
    gc_full_interval_s: float = 300.0
    """CPython's full garbage collections (which hold the event loop for tens of ms with
    many sessions) run once nobody listens, and while someone always does at most
    this often (:mod:`media_server.runtime.collector`); 0 leaves CPython's own schedule."""
    synthesis_chunk_timeout_s: float = 30.0
    """An engine silent this long has hung: that request fails with ``timeout``."""
    token_secret: str | None = field(default=None, repr=False)
    """HMAC secret for room join tokens (at least 16 bytes); rooms are off without it."""
    api_token: str | None = field(default=None, repr=False)
    """The operator token (``Authorization: Bearer``): when set, 1:1 WHEP, ``/tts``,
    ``/tts/ws``, ``POST /voices`` and the detail of ``/stats`` need it."""
    allow_anonymous: bool = False
    """Serve clients without a token on a non-loopback address (off: refuse to start)."""
    cors_origins: tuple[str, ...] = ()
    """Origins that may call the API from a browser page (``*``: any); the bundled
    page is same-origin and needs none. WebSocket upgrades from other origins are refused."""
    max_pending_sessions_per_client: int = 8
    """Sessions (1:1 or room listener) one client address may have that are not yet
    connected; 0: unbounded. The bounds below are per address too and are not
    applied to requests carrying the operator token."""
    max_syntheses_per_client: int = 2
    """``POST /tts`` requests and ``/tts/ws`` utterances synthesising at once."""
    max_sockets_per_client: int = 8
    """Open WebSockets (``/tts/ws``, room bots)."""
    client_upload_bytes_per_s: int = 4 * 1024 * 1024
    """Request bodies and WebSocket messages, sustained (bursts of 4 s worth)."""
    max_rooms: int = 100
    max_room_participants: int = 50
    max_callers_per_room: int = 4
    """Members of a room whose microphone the server takes (``caller`` tokens); each
    costs a decode, a resample and a VAD. 0: no callers."""
    vad_threshold: float = 0.5
    """The VAD score (0..1) a 16 ms window needs to count as speech; while the caller
    speaks, windows down to 0.15 below it still count (hysteresis)."""
    vad_min_speech_ms: int = 150
    """Speech this long, unbroken, starts a caller's ``speaking`` (shorter: a click)."""
    vad_min_silence_ms: int = 400
    """Silence this long ends it (shorter: a pause between words)."""
    direct_rtp: bool = True
    """Write RTP from the pacer's tick (:mod:`media_server.rtc.rtp_writer`) instead of
    through aiortc's per-track sender task; off only to compare the two."""
    red_max_distance: int = 2
    """Earlier frames a RED packet may repeat for a client that offers RED (0: never
    answer RED); how many it does repeat follows the link (``audio_adaptation``)."""
    audio_adaptation: bool = True
    """Follow each listener's RTCP reports: FEC, expected loss, bitrate, DTX and RED
    distance (``media_server.link``). Off: the ``VMS_OPUS_*`` settings and RED at
    ``red_max_distance``, whatever the link does."""
    max_remote_candidates: int = 32
    """ICE candidates a client may send per session (offer and trickle; browsers send
    under 20): aioice's work per candidate grows with those it has."""
    http_synthesis_slots: int | None = None
    """Synthesis slots ``POST /tts`` and ``/tts/ws`` may hold at once (more get ``503``
    ``engine_busy``); the rest of ``synthesis_workers`` is kept for live sessions and
    rooms. None: ``synthesis_workers`` - 1, at least 1."""
    http_write_timeout_s: float = 10.0
    """A ``/tts`` or ``/tts/ws`` client that takes no audio for this long (64 KiB, or
    one message) is cut off and its synthesis stopped."""
    drain_timeout_s: float = 8.0
    """On SIGTERM, speech already queued may play this long before sessions are closed
    (new work gets ``503`` ``draining``). With about 1 s of closing after it, 8 s fits
    the 10 s a container runtime waits before SIGKILL; raise both together."""
    debug_timings: bool = False
    """``speech.started`` carries ``timings``: when the utterance's text arrived and
    each stage reached its first output, in ms of this machine's ``time.monotonic()``
    (for benchmarks on the same machine; off by default, it exposes server internals)."""
    barge_in: str = "pause"
    """A room's speech when a caller speaks over it: ``off``, ``cancel`` (once the caller
    has spoken ``barge_in_min_speech_ms``) or ``pause`` (at once; then cancel, or resume
    after a shorter burst). A bot may change it for its room."""
    barge_in_min_speech_ms: int = 400
    """How long a caller must speak for barge-in to cancel the room's speech."""
    opus: OpusSettings = field(default_factory=OpusSettings)

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise ConfigError(f"port must be 1..65535, got {self.port}")
        for name in (
            "max_sessions",
            "max_text_chars",
            "max_queued_utterances",
            "say_burst",
            "max_rooms",
            "max_room_participants",
            "max_remote_candidates",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1")
        for name in (
            "max_pending_sessions_per_client",
            "max_callers_per_room",
            "max_syntheses_per_client",
            "max_sockets_per_client",
            "client_upload_bytes_per_s",
        ):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be 0 (unbounded) or positive")
        if self.api_token is not None and not API_TOKEN.fullmatch(self.api_token):
            raise ConfigError(
                "api_token must be 16-256 characters of letters, digits and . _ ~ -"
                " (it travels in HTTP headers and WebSocket subprotocols)"
            )
        if self.heap_trim_idle_s < 0:
            raise ConfigError("heap_trim_idle_s must be 0 (off) or positive")
        if self.gc_full_interval_s < 0:
            raise ConfigError("gc_full_interval_s must be 0 (off) or positive")
        if self.encode_workers is not None and self.encode_workers < 1:
            raise ConfigError("encode_workers must be at least 1")
        if self.synthesis_workers is not None and self.synthesis_workers < 1:
            raise ConfigError("synthesis_workers must be at least 1")
        if self.http_synthesis_slots is not None and not (
            1 <= self.http_synthesis_slots <= self.synthesis_slots
        ):
            raise ConfigError("http_synthesis_slots must be 1..synthesis_workers (or unset)")
        if self.token_secret is not None and len(self.token_secret.encode()) < 16:
            raise ConfigError("token_secret must be at least 16 bytes")
        if not 0 <= self.red_max_distance <= MAX_RED_DISTANCE:
            raise ConfigError(f"red_max_distance must be 0..{MAX_RED_DISTANCE}")
        if self.log_format not in LOG_FORMATS:
            raise ConfigError(f"log_format must be one of {', '.join(LOG_FORMATS)}")
        if not 0 <= self.drain_timeout_s < float("inf"):  # also refuses NaN
            raise ConfigError("drain_timeout_s must be 0 (no drain) or positive, and finite")
        if not 0 < self.vad_threshold < 1:  # also refuses NaN
            raise ConfigError("vad_threshold must be between 0 and 1 (exclusive)")
        for name in ("vad_min_speech_ms", "vad_min_silence_ms"):
            if not 1 <= getattr(self, name) <= 10_000:
                raise ConfigError(f"{name} must be 1..10000")
        if self.barge_in not in BARGE_IN_MODES:
            raise ConfigError(f"barge_in must be one of {', '.join(BARGE_IN_MODES)}")
        if not 0 <= self.barge_in_min_speech_ms <= MAX_BARGE_IN_MIN_SPEECH_MS:
            raise ConfigError(f"barge_in_min_speech_ms must be 0..{MAX_BARGE_IN_MIN_SPEECH_MS}")
        if not -20 <= self.loop_nice <= 19:
            raise ConfigError("loop_nice must be -20..19")
        for name in (
            "say_rate_per_s",
            "synthesis_queue_timeout_s",
            "idle_timeout_s",
            "connect_timeout_s",
            "synthesis_chunk_timeout_s",
            "http_write_timeout_s",
        ):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive")

    @property
    def encode_thread_count(self) -> int:
        """:attr:`encode_workers`, or one per CPU this process may use (at most 4).

        On one core, a second encode thread only contends with the event loop and
        the first for the GIL: with the server pinned to one core, one thread held
        more speaking sessions than two (``bench.capacity``; measured: see
        docs/performance.md).
        """
        if self.encode_workers is not None:
            return self.encode_workers
        return max(1, min(MAX_DEFAULT_ENCODE_WORKERS, len(os.sched_getaffinity(0))))

    @property
    def synthesis_slots(self) -> int:
        """:attr:`synthesis_workers`, or one per CPU this process may use (at most 4).

        A CPU engine gains nothing from running more requests than it has cores: they
        share the cores, every first chunk comes later, and the utterances already
        playing run dry (``bench.latency --load``: on one core, 4 slots against 1 gave
        hundreds of underruns and a slower p95; see docs/performance.md). Requests
        beyond it wait in a fair queue instead. A GPU engine may want more.
        """
        if self.synthesis_workers is not None:
            return self.synthesis_workers
        return max(1, min(MAX_DEFAULT_SYNTHESIS_WORKERS, len(os.sched_getaffinity(0))))

    def with_overrides(self, **overrides: Any) -> Settings:
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})


ENV_PREFIX = "VMS_"


def _parse_ice_servers(raw: str) -> tuple[IceServer, ...]:
    """``VMS_ICE_SERVERS``: comma-separated URLs, or a JSON list of RTCIceServer objects."""
    raw = raw.strip()
    if not raw:
        return ()
    if raw.startswith("["):
        try:
            items = json.loads(raw)
            return tuple(
                IceServer(
                    urls=tuple([item["urls"]] if isinstance(item["urls"], str) else item["urls"]),
                    username=item.get("username"),
                    credential=item.get("credential"),
                )
                for item in items
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(
                f"VMS_ICE_SERVERS is not a valid JSON list of servers: {exc}"
            ) from exc
    return (IceServer(urls=tuple(u.strip() for u in raw.split(",") if u.strip())),)


def _parse_bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError("use 1/0, true/false, yes/no or on/off")


def settings_from_env(environ: Mapping[str, str] | None = None) -> Settings:
    """Read ``VMS_*`` variables (e.g. ``VMS_PORT=9000``); unknown ones are ignored."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for f in fields(Settings):
        key = ENV_PREFIX + f.name.upper()
        if key not in env or f.name == "opus":
            continue
        raw = env[key]
        try:
            if f.name == "ice_servers":
                values[f.name] = _parse_ice_servers(raw)
            elif f.name in ("ice_host_addresses", "cors_origins"):
                values[f.name] = tuple(a.strip() for a in raw.split(",") if a.strip())
            elif f.type in ("int", "int | None"):
                values[f.name] = int(raw)
            elif f.type in ("str | None",):
                values[f.name] = raw or None
            elif f.type in ("float",):
                values[f.name] = float(raw)
            elif f.type in ("bool",):
                values[f.name] = _parse_bool(raw)
            else:
                values[f.name] = raw
        except ValueError as exc:
            raise ConfigError(f"{key}={raw!r}: {exc}") from exc
    opus: dict[str, Any] = {}
    for f in fields(OpusSettings):
        key = f"{ENV_PREFIX}OPUS_{f.name.upper()}"
        if key in env:
            raw = env[key]
            try:
                opus[f.name] = _parse_bool(raw) if f.type == "bool" else int(raw)
            except ValueError as exc:
                raise ConfigError(f"{key}={raw!r}: {exc}") from exc
    if opus:
        values["opus"] = OpusSettings(**opus)
    return Settings(**values)
