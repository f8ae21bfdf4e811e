"""Opus encoding through opuslib, with bitrate, complexity, FEC, loss and DTX under our control."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import glob
import os
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from media_server.audio.frames import FRAME_MS, SAMPLE_RATE_HZ

MAX_PACKET_BYTES: Final = 1275
INPUT_RATES_HZ: Final = (8_000, 12_000, 16_000, 24_000, 48_000)
"""Sample rates libopus accepts as encoder input (RTP always carries 48 kHz time)."""
WIDEBAND_RATE_HZ: Final = 16_000
WIDEBAND_MAX_COMPLEXITY: Final = 1
"""At this complexity and below, libopus codes speech as SILK wideband (audio up to
8 kHz) whatever rate it is given: hybrid and fullband coding need complexity 2+.
Measured with libopus 1.6.1 at 32 kbps on the Piper voice: every packet at
complexity 0 and 1 is SILK WB; at 2 and above they are hybrid SWB/FB. An encoder fed
16 kHz then codes the same band as one fed 48 kHz for less CPU a frame (measured:
see docs/performance.md), and the resampler makes a third of the samples
(:class:`~media_server.audio.encoder.StreamEncoder`)."""


@dataclass(frozen=True, slots=True)
class OpusSettings:
    """Encoder settings for every outgoing stream."""

    bitrate_bps: int = 32_000
    complexity: int = 10
    """The best complexity; under load the server steps down to ``min_complexity``."""
    min_complexity: int = 1
    encode_budget_pct: int = 50
    """CPU the Opus encoders may use, in percent of one core, before complexity steps down."""
    inband_fec: bool = True
    expected_loss_pct: int = 10
    """In-band FEC is only produced when libopus is told to expect loss."""
    dtx: bool = False

    def __post_init__(self) -> None:
        if not 6_000 <= self.bitrate_bps <= 510_000:
            raise ValueError("opus bitrate_bps must be within 6000..510000")
        if not 0 <= self.complexity <= 10:
            raise ValueError("opus complexity must be within 0..10")
        if not 0 <= self.min_complexity <= self.complexity:
            raise ValueError("opus min_complexity must be within 0..complexity")
        if not 1 <= self.encode_budget_pct <= 10_000:
            raise ValueError("opus encode_budget_pct must be within 1..10000")
        if not 0 <= self.expected_loss_pct <= 100:
            raise ValueError("opus expected_loss_pct must be within 0..100")


@dataclass(frozen=True, slots=True)
class CodingTarget:
    """What a listener's link asks of the encoder (``media_server.link``), from the next
    frame it encodes on: the stream stays continuous, only the coding changes."""

    bitrate_bps: int
    inband_fec: bool
    expected_loss_pct: int
    dtx: bool


def bundled_libopus() -> str | None:
    """The libopus that PyAV's wheel ships (``av.libs``), if there is one."""
    import av

    candidates = sorted(
        glob.glob(os.path.join(os.path.dirname(av.__file__), os.pardir, "av.libs", "libopus*"))
    )
    return os.path.abspath(candidates[0]) if candidates else None


@functools.cache
def _load_opuslib() -> tuple[ModuleType, ModuleType, ModuleType]:
    """Import opuslib, pointing it at the libopus that PyAV's wheel ships.

    opuslib resolves the library with ``ctypes.util.find_library('opus')`` at import
    time. PyAV's copy is preferred to a system one: it is what every install has
    (no system libopus exists on a fresh machine), and it is newer and cheaper per
    frame at every complexity than an older system one (measured: see
    docs/performance.md).
    Only without a bundled copy is the system's used.
    Cached: ``find_library`` runs ``ldconfig`` and a compiler in subprocesses, which
    cost the event loop time on every new session (measured: see docs/performance.md).
    """
    original = ctypes.util.find_library
    bundled = bundled_libopus()
    if bundled is not None:

        def find_library(name: str) -> str | None:
            return bundled if name == "opus" else original(name)

        ctypes.util.find_library = find_library
    try:
        import opuslib
        import opuslib.api.ctl as ctl
        import opuslib.api.encoder as encoder_api
    finally:
        ctypes.util.find_library = original
    return opuslib, ctl, encoder_api


def libopus_version() -> str:
    """The version string of the libopus in use, e.g. ``libopus 1.6.1``."""
    _load_opuslib()
    from opuslib.api import libopus

    libopus.opus_get_version_string.restype = ctypes.c_char_p
    return str(libopus.opus_get_version_string().decode())


class OpusEncoder:
    """A mono 20 ms Opus encoder. Not thread-safe: one owner at a time.

    ``input_rate_hz`` is the rate of the PCM it is given (48 kHz unless told
    otherwise); its packets are 20 ms whatever that rate is.
    """

    def __init__(self, settings: OpusSettings, input_rate_hz: int = SAMPLE_RATE_HZ) -> None:
        if input_rate_hz not in INPUT_RATES_HZ:
            raise ValueError(f"Opus encodes {INPUT_RATES_HZ} Hz input, not {input_rate_hz}")
        opuslib, ctl, encoder_api = _load_opuslib()
        self.settings = settings
        self.input_rate_hz = input_rate_hz
        self.frame_samples = input_rate_hz * FRAME_MS // 1000
        self._encoder: Any = opuslib.Encoder(input_rate_hz, 1, opuslib.APPLICATION_VOIP)
        state = self._encoder.encoder_state
        encoder_api.encoder_ctl(state, ctl.set_bitrate, settings.bitrate_bps)
        encoder_api.encoder_ctl(state, ctl.set_complexity, settings.complexity)
        # opuslib 3.0.1's ``inband_fec`` property setter is broken: use the ctl directly.
        encoder_api.encoder_ctl(state, ctl.set_inband_fec, int(settings.inband_fec))
        encoder_api.encoder_ctl(state, ctl.set_packet_loss_perc, settings.expected_loss_pct)
        encoder_api.encoder_ctl(state, ctl.set_dtx, int(settings.dtx))
        self._ctl = ctl
        self._api = encoder_api
        self.complexity = settings.complexity
        self.target = CodingTarget(
            settings.bitrate_bps, settings.inband_fec, settings.expected_loss_pct, settings.dtx
        )

    def apply(self, target: CodingTarget) -> None:
        """Code the next frames as ``target`` says (only the ctls that change are set)."""
        current = self.target
        if target == current:
            return
        state, set_ctl, ctl = self._encoder.encoder_state, self._api.encoder_ctl, self._ctl
        if target.bitrate_bps != current.bitrate_bps:
            set_ctl(state, ctl.set_bitrate, target.bitrate_bps)
        if target.inband_fec != current.inband_fec:
            set_ctl(state, ctl.set_inband_fec, int(target.inband_fec))
        if target.expected_loss_pct != current.expected_loss_pct:
            set_ctl(state, ctl.set_packet_loss_perc, target.expected_loss_pct)
        if target.dtx != current.dtx:
            set_ctl(state, ctl.set_dtx, int(target.dtx))
        self.target = target

    def set_complexity(self, complexity: int) -> None:
        """Change the complexity from the next frame on (the stream stays continuous)."""
        if complexity != self.complexity:
            self._api.encoder_ctl(self._encoder.encoder_state, self._ctl.set_complexity, complexity)
            self.complexity = complexity

    def get(self, request: Any) -> int:
        """Read an encoder ctl back (e.g. ``ctl.get_inband_fec``), for checks and stats."""
        return int(self._api.encoder_ctl(self._encoder.encoder_state, request))

    @property
    def ctl(self) -> ModuleType:
        return self._ctl

    def encode(self, frame: npt.NDArray[np.int16]) -> bytes:
        """Encode exactly one 20 ms frame (960 mono samples at 48 kHz)."""
        if frame.shape != (self.frame_samples,):
            raise ValueError(
                f"a 20 ms frame at {self.input_rate_hz} Hz is {self.frame_samples} samples,"
                f" got {frame.shape}"
            )
        return bytes(self._encoder.encode(frame.tobytes(), self.frame_samples))


def encode_silence(settings: OpusSettings) -> bytes:
    """An Opus packet of 20 ms digital silence, sent while a stream is idle."""
    encoder = OpusEncoder(settings)
    zeros = np.zeros(encoder.frame_samples, dtype=np.int16)
    packet = b""
    for _ in range(5):  # the first packets of a fresh encoder carry start-up state
        packet = encoder.encode(zeros)
    return packet
