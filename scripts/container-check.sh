#!/usr/bin/env bash
# Build the CPU image (Dockerfile) and check the container serves, as CI does (.ci/run).
#
#   bash scripts/container-check.sh
#
# Builds with podman, runs the image on the host network with an operator token, waits for
# /healthz, runs the image's HEALTHCHECK, checks it does not run as root, then checks it from
# outside with tests/container_probe.py (POST /tts streams speech; one real aiortc WHEP session
# hears speech; /metrics parses and counted them) and stops it with SIGTERM while it speaks to
# that session: /readyz must turn 503, the sentence must finish, and the container exit 0.
# Prints a summary (image size, build time, time to healthy, first bytes, stop time); exits
# non-zero on any failure. The container is always removed.
#
# Needs root and podman. ../shared/tools/container-base.sh (beside the repository), where it
# exists, installs podman and builds python:3.11-slim locally (no container registry needed);
# without it and without podman the check is skipped (exit 0). PYTHON: the interpreter for the
# probe (default .venv/bin/python, which has the project and aiortc).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
PYTHON="${PYTHON:-$REPO/.venv/bin/python}"
IMAGE="voice-media-server:ci"
HEALTHY_TIMEOUT_S=90  # the engine loads before /healthz answers
STOP_TIMEOUT_S=30     # podman stop's wait before SIGKILL; the server needs far less

skip() { echo "container check skipped: $*"; exit 0; }
fail() { echo "container check FAILED: $*" >&2; exit 1; }

if [[ -f "$REPO/../shared/tools/container-base.sh" ]]; then
  [[ $(id -u) == 0 ]] || skip "not root (container-base.sh installs podman with apt)"
  # shellcheck source=/dev/null
  source "$REPO/../shared/tools/container-base.sh"
else
  command -v podman >/dev/null || skip "podman is not installed (and no container-base.sh)"
  [[ $(id -u) == 0 ]] || skip "not root"
fi
: "${VMS_BUILD_ARGS:=}"
[[ -x $PYTHON ]] || fail "no Python at $PYTHON for the probe (set PYTHON)"

name="vms-check-$$"
workdir="$(mktemp -d)"
cleanup() {
  podman rm -f -t 0 "$name" >/dev/null 2>&1 || true
  rm -rf "$workdir"
}
trap cleanup EXIT

echo "==> podman build ($IMAGE)"
build_started=$(date +%s.%N)
# --format docker: the OCI format has no HEALTHCHECK (podman would drop it with a warning).
# shellcheck disable=SC2086  # VMS_BUILD_ARGS is a list of arguments
podman build --pull=never --format docker $VMS_BUILD_ARGS -t "$IMAGE" . >"$workdir/build.log" 2>&1 \
  || { tail -40 "$workdir/build.log" >&2; fail "podman build"; }
build_s=$(python3 -c "print(f'{$(date +%s.%N) - $build_started:.1f}')")
image_mb=$(podman image inspect --format '{{.Size}}' "$IMAGE" | python3 -c 'print(round(int(input()) / 1e6))')
[[ $(podman image inspect --format '{{.Config.User}}' "$IMAGE") != "" ]] || fail "the image sets no USER"

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("", 0)); print(s.getsockname()[1])')
token=$(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')
ice_address=$(cd "$REPO" && "$PYTHON" -m tests.container_probe --print-ice-address)
base_url="http://127.0.0.1:$port"

echo "==> podman run $name (port $port, ICE host address $ice_address)"
# --health-interval=disable: no timer for the HEALTHCHECK (podman would want systemd for it);
# the check below runs it once instead.
run_started=$(date +%s.%N)
podman run -d --init --name "$name" --network host --health-interval=disable \
  -e VMS_PORT="$port" -e VMS_API_TOKEN="$token" -e VMS_ICE_HOST_ADDRESSES="$ice_address" \
  "$IMAGE" >/dev/null 2>"$workdir/run.log" || { cat "$workdir/run.log" >&2; fail "podman run"; }

healthy=""
deadline=$((SECONDS + HEALTHY_TIMEOUT_S))
while ((SECONDS < deadline)); do
  if [[ $(podman inspect --format '{{.State.Running}}' "$name") != true ]]; then
    podman logs "$name" >&2 || true
    fail "the container exited before /healthz answered"
  fi
  if python3 -c "import urllib.request; urllib.request.urlopen('$base_url/healthz', timeout=2)" 2>/dev/null; then
    healthy=$(python3 -c "print(f'{$(date +%s.%N) - $run_started:.1f}')")
    break
  fi
  sleep 0.5
done
[[ -n $healthy ]] || { podman logs "$name" >&2 || true; fail "/healthz did not answer within ${HEALTHY_TIMEOUT_S}s"; }
echo "healthy after ${healthy}s"

# (Without systemd podman logs that it cannot set up timers; a run by hand still works.)
if podman healthcheck run "$name" >"$workdir/health.log" 2>&1; then
  health="passed"
elif ! grep -q "unhealthy" "$workdir/health.log" && grep -qi "not supported\|systemd" "$workdir/health.log"; then
  health="skipped"
  echo "HEALTHCHECK not run here: $(cat "$workdir/health.log")"
else
  cat "$workdir/health.log" >&2
  fail "the image's HEALTHCHECK failed on a server whose /healthz answers"
fi

uid=$(podman exec "$name" id -u)
[[ $uid != 0 ]] || fail "the server runs as root"

echo "==> probe: POST /tts, one WHEP session, then podman stop (SIGTERM) mid-speech"
"$PYTHON" -m tests.container_probe --base-url "$base_url" --token "$token" \
  --stop-cmd "podman stop -t $STOP_TIMEOUT_S $name" --result "$workdir/probe.json" \
  || { podman logs --tail 60 "$name" >&2 || true; fail "the probe (see above)"; }

status=$(podman inspect --format '{{.State.Status}} {{.State.ExitCode}}' "$name")
[[ $status == "exited 0" ]] || { podman logs --tail 60 "$name" >&2 || true; fail "after SIGTERM: $status, wanted exited 0"; }
if podman logs "$name" 2>&1 | grep -q "Traceback"; then
  podman logs "$name" >&2 || true
  fail "the server logged a traceback"
fi

python3 - "$workdir/probe.json" <<PY
import json, sys
probe = json.load(open(sys.argv[1]))
rows = [
    ("image size", "${image_mb} MB"),
    ("build", "${build_s} s"),
    ("run -> /healthz answers", "${healthy} s"),
    ("HEALTHCHECK", "${health}"),
    ("user id in the container", "${uid}"),
    ("POST /tts first byte", f"{probe['tts_first_byte_ms']} ms"),
    ("WHEP say -> first speech frame", f"{probe['whep_first_audio_ms']} ms"),
    ("podman stop (SIGTERM, mid-speech) -> exit 0", f"{probe['stop_s']} s"),
]
print("container check passed:")
for label, value in rows:
    print(f"  {label:<46} {value}")
PY
