"""How the vendored upstream CosyVoice 2 code is found and imported, offline, with few deps.

**Where the runtime comes from.** The upstream ``cosyvoice`` and ``matcha`` packages
as vendored in the PyPI wheel of ``xinference`` (``xinference/thirdparty``; a v2.0-era
snapshot: 16 kHz tensor prompts, fixed 25-token hop, no shared-hop mutation). The
directory is put on ``sys.path``; xinference itself is never imported.
``VMS_COSYVOICE_RUNTIME_DIR`` may name another directory holding ``cosyvoice/`` and
``matcha/`` of the same API (an upstream checkout at v2.0 with ``third_party/Matcha-TTS``).

**Shims.** Matcha's ``utils`` package eagerly imports lightning, hydra, rich, gdown
(and the training tools rootutils, wget, matplotlib); those that are not installed are
served by inert stub modules. ``modelscope`` (only used to download a missing model
directory) is stubbed to refuse when absent. ``wetext`` is stubbed (its real
normaliser downloads FSTs at construction) and ``ttsfrd`` is made unimportable: text is
never normalised upstream (we split it ourselves and tokenise it as given). Upstream's
``logging.basicConfig(level=DEBUG)`` at import is undone and its import-time print is
swallowed; ``load_wav`` uses soundfile (torchaudio >= 2.9 needs torchcodec to load).

Importing this module does not import torch (``runtime_available`` works without it).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import io
import logging
import os
import sys
import threading
import types
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Final

logger = logging.getLogger(__name__)

RUNTIME_DIR_ENV: Final = "VMS_COSYVOICE_RUNTIME_DIR"

_STUB_ROOTS: Final = ("lightning", "hydra", "rich", "gdown", "wget", "matplotlib", "rootutils")


class RuntimeUnavailable(RuntimeError):
    """The vendored CosyVoice code cannot be found or imported."""


class _StubModule(types.ModuleType):
    """An installed-nowhere module: every attribute is an inert class.

    ``rank_zero_only`` (lightning's decorator, applied at import time) is the identity.
    """

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        value: Any
        if name == "rank_zero_only":
            value = _identity
        else:
            value = type(name, (), {"__init__": _ignore_args, "__module__": self.__name__})
        setattr(self, name, value)
        return value


def _identity(fn: Any) -> Any:
    return fn


def _ignore_args(self: object, *args: object, **kwargs: object) -> None:
    return None


class _StubFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Serves :class:`_StubModule` for ``roots`` and their submodules."""

    def __init__(self, roots: Sequence[str]) -> None:
        self.roots = frozenset(roots)

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: types.ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname.partition(".")[0] not in self.roots:
            return None
        return importlib.machinery.ModuleSpec(fullname, self, is_package=True)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        module = _StubModule(spec.name)
        module.__path__ = []
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        return None


class _WetextNormalizer:
    """Stands in for ``wetext.Normalizer``: upstream text normalisation is never used."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        return None

    def normalize(self, text: str) -> str:
        return text


def _refuse_download(model_id: str, *args: object, **kwargs: object) -> str:
    raise RuntimeError(f"CosyVoice model directory {model_id!r} does not exist (no downloads)")


def _module(name: str, **attrs: object) -> types.ModuleType:
    module = types.ModuleType(name)
    for key, value in attrs.items():
        setattr(module, key, value)
    return module


def _installed(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


_UPSTREAM_WARNINGS: Final = (
    # (category, message regex, module regex): deprecations inside the vendored code
    (FutureWarning, r"`torch\.cuda\.amp\.autocast", r"cosyvoice\."),
    (DeprecationWarning, r"__array_wrap__ must accept context", r"cosyvoice\."),
    (FutureWarning, r"`LoRACompatibleLinear` is deprecated", r""),
)


def _silence_upstream_warnings() -> None:
    for category, message, module in _UPSTREAM_WARNINGS:
        warnings.filterwarnings("ignore", message, category, module)


_shim_lock = threading.Lock()
_shimmed_root: Path | None = None


def runtime_root() -> Path:
    """The directory holding the vendored ``cosyvoice`` and ``matcha`` packages."""
    override = os.environ.get(RUNTIME_DIR_ENV)
    if override:
        root = Path(override)
    else:
        spec = importlib.util.find_spec("xinference")  # locates, never imports, xinference
        if spec is None or not spec.submodule_search_locations:
            raise RuntimeUnavailable(
                "the CosyVoice runtime is not installed (xinference's vendored copy not found)"
            )
        root = Path(next(iter(spec.submodule_search_locations))) / "thirdparty"
    if not (root / "cosyvoice").is_dir() or not (root / "matcha").is_dir():
        raise RuntimeUnavailable(f"{root} does not contain the cosyvoice and matcha packages")
    return root


def runtime_available() -> bool:
    try:
        runtime_root()
    except RuntimeUnavailable:
        return False
    return True


def install_shims() -> Path:
    """Make ``import cosyvoice`` work offline with the minimal dependency set; idempotent."""
    global _shimmed_root
    with _shim_lock:
        if _shimmed_root is not None:
            return _shimmed_root
        root = runtime_root()
        missing = [name for name in _STUB_ROOTS if not _installed(name)]
        if missing:
            sys.meta_path.append(_StubFinder(missing))
        if not _installed("modelscope"):
            sys.modules.setdefault(
                "modelscope", _module("modelscope", snapshot_download=_refuse_download)
            )
        sys.modules.setdefault("wetext", _module("wetext", Normalizer=_WetextNormalizer))
        sys.modules.setdefault("ttsfrd", None)  # type: ignore[arg-type]  # None: ImportError
        _silence_upstream_warnings()
        if str(root) not in sys.path:
            sys.path.insert(0, str(root))
        _shimmed_root = root
        logger.debug("CosyVoice runtime from %s (stubbed: %s)", root, ", ".join(missing) or "-")
        return root


@contextlib.contextmanager
def quiet_import() -> Iterator[None]:
    """Undo upstream's import-time ``logging.basicConfig(DEBUG)`` and swallow its prints."""
    root_logger = logging.getLogger()
    handlers, level = list(root_logger.handlers), root_logger.level
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        for handler in root_logger.handlers[:]:
            if handler not in handlers:
                root_logger.removeHandler(handler)
        root_logger.setLevel(level)


def _load_wav_soundfile(wav: Any, target_sr: int) -> Any:
    """``cosyvoice.utils.file_utils.load_wav`` without torchaudio's I/O backends."""
    torch: Any = importlib.import_module("torch")
    soundfile: Any = importlib.import_module("soundfile")
    data, rate = soundfile.read(wav, dtype="float32", always_2d=True)
    speech = torch.from_numpy(data.mean(axis=1)).unsqueeze(0)
    if rate != target_sr:
        resample = importlib.import_module("torchaudio.transforms").Resample
        speech = resample(orig_freq=rate, new_freq=target_sr)(speech)
    return speech


def import_cosyvoice2() -> Any:
    """Import and return upstream's ``CosyVoice2`` class (shims installed first)."""
    root = install_shims()
    with quiet_import():
        try:
            cli = importlib.import_module("cosyvoice.cli.cosyvoice")
            file_utils = importlib.import_module("cosyvoice.utils.file_utils")
        except ImportError as exc:
            raise RuntimeUnavailable(
                f"cannot import the CosyVoice runtime from {root}: {exc}"
            ) from exc
    origin = Path(getattr(cli, "__file__", "") or "")
    if root not in origin.parents:
        logger.warning("cosyvoice was imported from %s, not %s", origin, root)
    setattr(file_utils, "load_wav", _load_wav_soundfile)  # noqa: B010 - a patched module
    return cli.CosyVoice2
