#!/usr/bin/env bash
# Install the CosyVoice 2 engine's runtime into the environment of PYTHON (default: python3).
#
#   bash scripts/install-cosyvoice.sh /path/to/venv/bin/python
#
# Needs only PyPI. Run it after installing the project itself (pip install -e .).
#  1. the `cosyvoice` extra from pyproject.toml (torch pinned to the CPU-cached 2.13.0,
#     transformers 4.51.3, ...), installed as plain requirements so the project itself is
#     left as it was installed;
#  2. the pieces pip must take with --no-deps:
#     - xinference: only for its vendored CosyVoice 2 runtime (xinference/thirdparty/cosyvoice
#       and matcha); xinference itself is never imported and its own deps are not wanted;
#     - openai-whisper: declares triton (hundreds of MB) but CosyVoice only needs its
#       log-mel spectrogram;
#     - torchaudio: no CPU build on PyPI; the pure-Python parts CosyVoice uses (kaldi fbank,
#       Resample) work on torch 2.13 once the compiled extensions, linked against CUDA
#       torch, are deleted.
#  3. an import check of the runtime (synthesis/cosyvoice_runtime.py, through the shims of
#     synthesis/cosyvoice_import.py).
set -euo pipefail

PYTHON="${1:-python3}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
XINFERENCE_VERSION="4.1.0"
WHISPER_VERSION="20250625"
TORCHAUDIO_VERSION="2.11.0"

step() { printf '\n==> %s\n' "$*"; }

"$PYTHON" -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ needed"'

step "cosyvoice extra from pyproject.toml"
requirements="$(mktemp)"
trap 'rm -f "$requirements"' EXIT
"$PYTHON" - "$ROOT/pyproject.toml" >"$requirements" <<'PY'
import sys
import tomllib

with open(sys.argv[1], "rb") as f:
    extras = tomllib.load(f)["project"]["optional-dependencies"]
print("\n".join(extras["cosyvoice"]))
PY
"$PYTHON" -m pip install -r "$requirements"

step "no-deps pieces: xinference (vendored runtime), openai-whisper, torchaudio"
"$PYTHON" -m pip install --no-deps \
    "xinference==$XINFERENCE_VERSION" \
    "openai-whisper==$WHISPER_VERSION" \
    "torchaudio==$TORCHAUDIO_VERSION"

step "removing torchaudio's compiled extensions (built for CUDA torch $TORCHAUDIO_VERSION)"
torchaudio_dir="$("$PYTHON" -c '
import importlib.util, os
print(os.path.dirname(importlib.util.find_spec("torchaudio").origin))')"
rm -f "$torchaudio_dir"/lib/*.so "$torchaudio_dir"/*.so

step "import check"
PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" "$PYTHON" -m synthesis.cosyvoice_runtime
