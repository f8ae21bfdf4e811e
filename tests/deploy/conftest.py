"""What the deploy tests share: where deploy/ is, and the series a real server exposes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Final

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from signaling.app import create_app
from synthesis import Engine
from tests.conftest import loopback_settings

DEPLOY: Final = Path(__file__).resolve().parents[2] / "deploy"
OPERATOR_TOKEN: Final = "deploy-test-operator-token"

SUFFIXES: Final = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("_sum", "_count", "_created", ""),
    "gauge": ("",),
    "info": ("_info",),
    "unknown": ("",),
}
"""The series names a family of each type puts in the text format."""


def series_names(exposition: str) -> set[str]:
    """Every series name the families in ``exposition`` can have, samples or not."""
    names: set[str] = set()
    for family in text_string_to_metric_families(exposition):
        names.update(family.name + suffix for suffix in SUFFIXES[family.type])
        names.update(sample.name for sample in family.samples)
    return names


@pytest.fixture
async def operator_client(piper_engine: Engine) -> AsyncIterator[TestClient]:
    app = create_app(loopback_settings(api_token=OPERATOR_TOKEN), engine=piper_engine)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        yield client


@pytest.fixture
async def exposed(operator_client: TestClient) -> set[str]:
    """The series names a real server's ``GET /metrics`` exposes."""
    resp = await operator_client.get(
        "/metrics", headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"}
    )
    assert resp.status == 200, await resp.text()
    return series_names(await resp.text())
