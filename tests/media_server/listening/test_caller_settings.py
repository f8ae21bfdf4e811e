"""The caller's settings and token: read from the environment, checked, minted."""

from __future__ import annotations

import pytest

from media_server.config import ConfigError, Settings, settings_from_env
from media_server.rooms.tokens import Role, TokenSigner
from signaling import token_cli

SECRET = "caller-settings-secret-0123"


def test_defaults_and_environment() -> None:
    default = Settings()
    assert (default.max_callers_per_room, default.vad_threshold) == (4, 0.5)
    assert (default.vad_min_speech_ms, default.vad_min_silence_ms) == (150, 400)
    read = settings_from_env(
        {
            "VMS_MAX_CALLERS_PER_ROOM": "0",
            "VMS_VAD_THRESHOLD": "0.7",
            "VMS_VAD_MIN_SPEECH_MS": "250",
            "VMS_VAD_MIN_SILENCE_MS": "600",
        }
    )
    assert (read.max_callers_per_room, read.vad_threshold) == (0, 0.7)
    assert (read.vad_min_speech_ms, read.vad_min_silence_ms) == (250, 600)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("VMS_MAX_CALLERS_PER_ROOM", "-1"),
        ("VMS_VAD_THRESHOLD", "0"),
        ("VMS_VAD_THRESHOLD", "1"),
        ("VMS_VAD_THRESHOLD", "nan"),
        ("VMS_VAD_MIN_SPEECH_MS", "0"),
        ("VMS_VAD_MIN_SILENCE_MS", "20000"),
        ("VMS_VAD_MIN_SILENCE_MS", "soon"),
    ],
)
def test_bad_values_are_refused(key: str, value: str) -> None:
    with pytest.raises(ConfigError):
        settings_from_env({key: value})


def test_the_token_tool_mints_caller_tokens(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("VMS_TOKEN_SECRET", SECRET)
    assert token_cli.main(["--room", "desk", "--role", "caller", "--identity", "ann"]) == 0
    token = capsys.readouterr().out.strip()
    claims = TokenSigner(SECRET.encode()).verify(token, "desk", {Role.CALLER})
    assert (claims.role, claims.identity) == (Role.CALLER, "ann")
