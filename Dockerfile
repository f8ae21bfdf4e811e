FROM python:3.11-slim

WORKDIR /app
COPY pyproject.toml README.md ./
COPY signaling ./signaling
COPY media_server ./media_server
COPY synthesis ./synthesis
COPY web_client ./web_client
RUN pip install --no-cache-dir .

# WebRTC media uses ephemeral UDP ports: run with `--network host`, or publish a
# range and set VMS_ICE_HOST_ADDRESSES to the address clients can reach.
# Listening beyond loopback needs an operator token: run with -e VMS_API_TOKEN=...
# (or -e VMS_ALLOW_ANONYMOUS=1 behind something that authenticates clients).
ENV VMS_HOST=0.0.0.0 VMS_PORT=8080
EXPOSE 8080
CMD ["voice-media-server"]
