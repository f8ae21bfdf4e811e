"""Reading ``GET /metrics`` as a test sees it: every sample by name and labels."""

from __future__ import annotations

from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families


class Samples(dict[str, float]):
    """Samples keyed ``name{label=value,...}`` (labels sorted); a missing one reads 0."""

    def __missing__(self, key: str) -> float:
        return 0.0


async def scrape(client: TestClient) -> Samples:
    resp = await client.get("/metrics")
    assert resp.status == 200, await resp.text()
    samples = Samples()
    for family in text_string_to_metric_families(await resp.text()):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}"] = sample.value
    return samples
