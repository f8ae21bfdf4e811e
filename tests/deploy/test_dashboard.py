"""The Grafana dashboard and the alert rules ask only for series the server exposes."""

from __future__ import annotations

import json
import re
from typing import Any, Final

import pytest
import yaml
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from tests.deploy.conftest import DEPLOY, OPERATOR_TOKEN, series_names

DASHBOARD: Final = DEPLOY / "grafana" / "dashboards" / "voice-media-server.json"
ALERTS: Final = DEPLOY / "prometheus" / "alerts.yml"
SERIES: Final = re.compile(r"\b(?:vms|process)_[a-z_]+")
ROWS: Final = ["Latency", "Pacing", "Network", "Load", "Traffic", "Callers"]
NOT_ON_DASHBOARD: Final = {"vms_build_info"}
"""Families the dashboard leaves out on purpose (the version is a label, not a figure)."""


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())  # type: ignore[no-any-return]


def dashboard_queries() -> list[str]:
    d = dashboard()
    exprs = [t["expr"] for p in d["panels"] for t in p.get("targets", [])]
    variables = [v["definition"] for v in d["templating"]["list"] if v["type"] == "query"]
    return exprs + variables


def alert_exprs() -> list[str]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule["expr"] for group in groups for rule in group["rules"]]


def test_the_dashboard_has_its_rows_and_a_datasource_variable() -> None:
    d = dashboard()
    assert d["schemaVersion"] >= 39
    assert [p["title"] for p in d["panels"] if p["type"] == "row"] == ROWS
    (variable,) = [v for v in d["templating"]["list"] if v["type"] == "datasource"]
    assert variable["query"] == "prometheus"
    source = {"type": "prometheus", "uid": "${" + variable["name"] + "}"}
    for panel in d["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"] == source, panel["title"]
            assert panel["targets"], panel["title"]
            assert all(t["datasource"] == source for t in panel["targets"]), panel["title"]
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids))


def test_no_two_panels_overlap() -> None:
    cells: dict[tuple[int, int], str] = {}
    for panel in dashboard()["panels"]:
        g = panel["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24, panel["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]


@pytest.mark.parametrize(
    ("what", "queries"), [("dashboard", dashboard_queries()), ("alerts", alert_exprs())]
)
async def test_every_series_asked_for_is_exposed(
    exposed: set[str], what: str, queries: list[str]
) -> None:
    asked = {name for query in queries for name in SERIES.findall(query)}
    assert len(asked) > 5
    missing = sorted(asked - exposed)
    assert not missing, f"{what} asks for series /metrics does not have: {missing}"


async def test_every_vms_family_is_on_the_dashboard(operator_client: TestClient) -> None:
    resp = await operator_client.get(
        "/metrics", headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"}
    )
    families = {
        family.name
        for family in text_string_to_metric_families(await resp.text())
        if family.name.startswith("vms_") and not family.name.endswith("_created")
    }
    shown = {name for query in dashboard_queries() for name in SERIES.findall(query)}
    absent = sorted(
        family
        for family in families - NOT_ON_DASHBOARD
        if not any(family + suffix in shown for suffix in ("", "_total", "_bucket", "_sum"))
    )
    assert not absent, f"families the dashboard does not show: {absent}"


def test_series_names_expands_each_family_type() -> None:
    text = (
        "# HELP a_seconds x\n# TYPE a_seconds histogram\n"
        "# HELP b x\n# TYPE b counter\n"
        "# HELP c x\n# TYPE c gauge\nc 1.0\n"
    )
    names = series_names(text)
    assert {"a_seconds_bucket", "a_seconds_count", "b_total", "c"} <= names
    assert "b" not in names and "a_seconds" not in names
