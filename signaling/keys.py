"""Typed application keys: the settings, the one media server, per-client quotas."""

from __future__ import annotations

from aiohttp import web

from media_server import MediaServer, Settings
from signaling.quotas import ClientQuotas

SETTINGS_KEY = web.AppKey("settings", Settings)
MEDIA_KEY = web.AppKey("media_server", MediaServer)
QUOTAS_KEY = web.AppKey("client_quotas", ClientQuotas)
TTS_FORMAT_KEY = web.RequestKey("tts_format", str)
"""A ``POST /tts`` request's audio format, once the route accepted it (a metrics label)."""
