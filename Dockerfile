# voice-media-server, CPU image: the Piper engine with its embedded voice (no model download).
#
#   podman build --format docker -t voice-media-server .     (docker build -t ... . works too)
#   podman run -d --init --network host \
#       -e VMS_API_TOKEN="$(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')" \
#       voice-media-server
#
# --network host: WebRTC media does not go through the HTTP port. Each session's ICE agent binds
# its own ephemeral UDP ports and offers its host addresses as candidates; clients must reach
# those exact addresses and ports. On a bridge network the candidates are the container's
# private address and unpublished ports, so media never arrives. Without host networking,
# publish a fixed UDP range yourself and set VMS_ICE_HOST_ADDRESSES to the address clients
# reach (and bring a TURN server for clients behind NAT: VMS_ICE_SERVERS).
#
# The server listens on 0.0.0.0 here, and a non-loopback listener refuses to start without an
# operator token: pass VMS_API_TOKEN (clients send "Authorization: Bearer <token>"), or
# VMS_ALLOW_ANONYMOUS=1 when something in front authenticates clients.
#
# `--format docker` (podman/buildah): the OCI image format has no HEALTHCHECK and drops it.
FROM python:3.11-slim

# Bytecode is compiled at install (site-packages stays read-only to the server's user), so a
# start does not recompile every module.
ENV PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies first, from pyproject.toml alone: a code change then rebuilds only the layers
# below, not the ~200 MB of wheels (onnxruntime, av, numpy, the voice).
COPY pyproject.toml README.md ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
 && pip install --no-cache-dir -r /tmp/requirements.txt \
 && rm /tmp/requirements.txt

# Everything pyproject.toml packages ([tool.setuptools] packages.find).
COPY signaling ./signaling
COPY media_server ./media_server
COPY synthesis ./synthesis
COPY web_client ./web_client
COPY voice_bot ./voice_bot
RUN pip install --no-cache-dir --no-deps . \
 && rm -rf build ./*.egg-info

# The server needs no privilege: run it as an unprivileged user with a home of its own.
# Raising the event loop's priority (VMS_LOOP_NICE) needs CAP_SYS_NICE: `podman run --cap-add
# SYS_NICE` gives it to this user (podman makes added capabilities ambient); without it the
# server logs one line and runs at normal priority. VMS_LOOP_NICE=0 leaves priorities alone.
RUN useradd --uid 10001 --user-group --create-home --shell /usr/sbin/nologin vms
USER 10001:10001

ENV VMS_HOST=0.0.0.0 VMS_PORT=8080
EXPOSE 8080

# Liveness over loopback (slim images have no curl). /healthz answers once the engine has
# loaded, so the start period covers loading the voice; keep VMS_HOST at 0.0.0.0 (or a value
# that includes 127.0.0.1) or this check cannot connect.
HEALTHCHECK --interval=30s --timeout=5s --start-period=90s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('VMS_PORT', '8080'), timeout=4)"]

# SIGTERM stops the server cleanly: running requests get a few seconds to end, then the
# process exits 0, within the 10 s a runtime waits before SIGKILL (`podman stop -t` / `docker
# stop -t` raise that wait if a longer drain is configured).
STOPSIGNAL SIGTERM
CMD ["voice-media-server"]
