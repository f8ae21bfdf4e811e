"""Typed application keys."""

from __future__ import annotations

from aiohttp import web

from media_server.audio.budget import EncodeBudget
from media_server.config import Settings
from media_server.rooms.registry import RoomRegistry
from media_server.rooms.tokens import TokenSigner
from media_server.runtime.collector import CollectionScheduler
from media_server.runtime.heap import HeapTrimmer
from media_server.sessions.registry import SessionRegistry
from signaling.quotas import ClientQuotas
from synthesis import Engine, SynthesisService

SETTINGS_KEY = web.AppKey("settings", Settings)
ENGINE_KEY = web.AppKey("engine", Engine)
REGISTRY_KEY = web.AppKey("registry", SessionRegistry)
SYNTHESIS_KEY = web.AppKey("synthesis", SynthesisService)
ROOMS_KEY = web.AppKey("rooms", RoomRegistry)
SIGNER_KEY = web.AppKey("token_signer", TokenSigner)
ENCODE_BUDGET_KEY = web.AppKey("encode_budget", EncodeBudget)
HEAP_TRIMMER_KEY = web.AppKey("heap_trimmer", HeapTrimmer)
COLLECTOR_KEY = web.AppKey("collector", CollectionScheduler)
QUOTAS_KEY = web.AppKey("client_quotas", ClientQuotas)
