from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from media_server.config import Settings
from signaling.app import create_app
from synthesis import Engine
from synthesis.piper import PiperEngine
from tests.whep_client import make_offer

LOOPBACK = ("127.0.0.1",)


@pytest.fixture(scope="session")
def piper_engine() -> Iterator[Engine]:
    """The real embedded voice, loaded once for the whole run."""
    engine = PiperEngine()
    yield engine
    engine.close()


def loopback_settings(**overrides: object) -> Settings:
    return Settings(ice_host_addresses=LOOPBACK).with_overrides(**overrides)


@pytest.fixture
def settings() -> Settings:
    return loopback_settings()


@pytest.fixture
async def client(settings: Settings, piper_engine: Engine) -> AsyncIterator[TestClient]:
    app = create_app(settings, engine=piper_engine)
    async with TestClient(TestServer(app, host="127.0.0.1")) as test_client:
        yield test_client


@pytest.fixture
async def offer() -> str:
    """An offer with end-of-candidates (aiortc ignores anything trickled after it)."""
    return await make_offer()


@pytest.fixture
async def trickled_offer() -> str:
    """A browser-style offer: its ICE agent waits for trickled candidates."""
    return await make_offer(end_of_candidates=False)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session
