"""promtool (Debian's ``prometheus`` package) checks the config, the alerts and their unit
tests, and parses every dashboard query as PromQL."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.deploy.conftest import DEPLOY
from tests.deploy.test_dashboard import dashboard_queries

PROMETHEUS_DIR = DEPLOY / "prometheus"


@pytest.fixture
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool is not installed (apt-get install prometheus)")
    return path


def check(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=60, check=False)


def test_the_config_is_valid_once_the_token_file_exists(promtool: str, tmp_path: Path) -> None:
    conf = tmp_path / "prometheus"
    shutil.copytree(PROMETHEUS_DIR, conf, ignore=shutil.ignore_patterns("api_token"))
    missing = check(promtool, "check", "config", "prometheus.yml", cwd=conf)
    assert missing.returncode != 0 and "api_token" in missing.stdout + missing.stderr
    (conf / "api_token").write_text("an-operator-token-of-some-length\n")
    done = check(promtool, "check", "config", "prometheus.yml", cwd=conf)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_alert_rules_are_valid_and_fire_on_their_series(promtool: str) -> None:
    rules = check(promtool, "check", "rules", "alerts.yml", cwd=PROMETHEUS_DIR)
    assert rules.returncode == 0, rules.stdout + rules.stderr
    tested = check(promtool, "test", "rules", "alerts_test.yml", cwd=PROMETHEUS_DIR)
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_every_dashboard_query_is_promql(promtool: str, tmp_path: Path) -> None:
    """Grafana's variables become what they stand for; each query a recording rule."""
    rules = [
        {
            "record": f"dashboard:query{i}",
            "expr": q.replace("$__rate_interval", "1m").replace("$instance", ".*"),
        }
        for i, q in enumerate(dashboard_queries())
        if not q.startswith("label_values(")
    ]
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    checked = check(promtool, "check", "rules", str(path), cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"{len(rules)} rules found" in checked.stdout
