"""The CI runner's verdict on a Locust run (``loadtest.ci``); Locust itself is run by
``.ci/run``, not here (it monkey-patches the process with gevent)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loadtest import ci
from media_server.config import settings_from_env


def entry(kind: str, name: str, requests: int = 10, failures: int = 0) -> ci.Entry:
    return ci.Entry(kind, name, requests, failures, 200.0, 180.0, 400.0, 500.0)


def every_entry() -> list[ci.Entry]:
    return [entry(kind, name) for kind, name in ci.EXPECTED_ENTRIES]


def test_a_clean_run_passes() -> None:
    assert ci.problems(0, [*every_entry(), entry("", "Aggregated", 50)]) == []


def test_a_failure_anywhere_fails_the_run_even_under_locusts_one_percent() -> None:
    entries = [*every_entry(), entry("POST", "/tts (whole stream)", 1000, 1)]
    assert ci.problems(0, entries) == ["POST /tts (whole stream): 1 of 1000 failed"]


def test_the_total_row_is_not_counted_twice() -> None:
    assert ci.problems(0, [*every_entry(), entry("", "Aggregated", 50, 3)]) == []


def test_locusts_exit_code_fails_the_run() -> None:
    assert ci.problems(1, every_entry()) == ["locust exited 1"]


def test_an_entry_without_requests_was_not_tested() -> None:
    entries = [e for e in every_entry() if e.name != "/tts/ws first audio"]
    assert ci.problems(0, entries) == ["TTFA /tts/ws first audio: no requests"]


def test_only_the_chosen_users_entries_are_required() -> None:
    http_only = [e for e in every_entry() if not e.name.startswith("/tts/ws")]
    assert ci.problems(0, http_only, ["HttpTtsUser"]) == []
    assert "WS /tts/ws connect: no requests" in ci.problems(0, http_only)


def test_the_locustfiles_summary_is_read(tmp_path: Path) -> None:
    path = tmp_path / "summary.json"
    rows = [
        {"type": "TTFA", "name": "/tts first audio", "requests": 3, "failures": 0,
         "average_ms": 250.5, "p50_ms": 240, "p95_ms": 300, "max_ms": 310.2},
        {"type": None, "name": "Aggregated", "requests": 3, "failures": 0,
         "average_ms": 0, "p50_ms": None, "p95_ms": None, "max_ms": None},
    ]  # fmt: skip
    path.write_text(json.dumps(rows))
    first, total = ci.read_summary(path)
    assert first == ci.Entry("TTFA", "/tts first audio", 3, 0, 250.5, 240.0, 300.0, 310.2)
    assert (total.kind, total.p95_ms) == ("", 0.0)
    assert "TTFA   /tts first audio" in ci.summary([first])


@pytest.mark.parametrize(
    ("run_time", "seconds"), [("20s", 20), ("2m", 120), ("1h30m", 5400), ("45", 45)]
)
def test_locust_run_times(run_time: str, seconds: float) -> None:
    assert ci.seconds(run_time) == seconds


def test_a_bad_run_time_is_refused() -> None:
    with pytest.raises(ValueError, match="not a Locust run time"):
        ci.seconds("20 sec")


def test_the_lifted_limits_are_the_servers_settings() -> None:
    """Unknown ``VMS_*`` names are ignored by the server, so read them back."""
    settings = settings_from_env(ci.lifted_limits(6))
    assert settings.max_syntheses_per_client == 0
    assert settings.max_sockets_per_client == 0
    assert settings.client_upload_bytes_per_s == 0
    assert settings.synthesis_slots == settings.http_synthesis_slots == 6
