from __future__ import annotations

import pytest

from media_server.config import ConfigError, IceServer, Settings, settings_from_env


def test_defaults_have_no_ice_servers_and_listen_locally() -> None:
    settings = settings_from_env({})
    assert settings.ice_servers == ()
    assert (settings.host, settings.port) == ("127.0.0.1", 8080)


def test_environment_overrides() -> None:
    settings = settings_from_env(
        {
            "VMS_PORT": "9000",
            "VMS_MAX_SESSIONS": "3",
            "VMS_IDLE_TIMEOUT_S": "2.5",
            "VMS_ICE_SERVERS": "stun:stun.example.org:3478",
            "VMS_ICE_HOST_ADDRESSES": "127.0.0.1, 10.1.2.3",
            "VMS_OPUS_BITRATE_BPS": "24000",
            "VMS_OPUS_INBAND_FEC": "false",
            "VMS_DIRECT_RTP": "off",
        }
    )
    assert settings.direct_rtp is False
    assert settings.port == 9000 and settings.max_sessions == 3
    assert settings.idle_timeout_s == 2.5
    assert settings.ice_servers == (IceServer(urls=("stun:stun.example.org:3478",)),)
    assert settings.ice_host_addresses == ("127.0.0.1", "10.1.2.3")
    assert settings.opus.bitrate_bps == 24000 and settings.opus.inband_fec is False


def test_turn_servers_as_json() -> None:
    settings = settings_from_env(
        {"VMS_ICE_SERVERS": '[{"urls": "turn:t.example.org", "username": "u", "credential": "p"}]'}
    )
    assert settings.ice_servers == (IceServer(("turn:t.example.org",), "u", "p"),)


@pytest.mark.parametrize(
    "env",
    [
        {"VMS_PORT": "eighty"},
        {"VMS_PORT": "0"},
        {"VMS_MAX_SESSIONS": "0"},
        {"VMS_ICE_SERVERS": "[{"},
        {"VMS_DIRECT_RTP": "maybe"},
        {"VMS_OPUS_DTX": "maybe"},
    ],
)
def test_bad_values_are_config_errors(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError):
        settings_from_env(env)


def test_overrides_ignore_none() -> None:
    assert Settings().with_overrides(port=None, host="0.0.0.0").host == "0.0.0.0"


def test_encode_workers_follow_the_cpus_this_process_may_use(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("media_server.config.os.sched_getaffinity", lambda pid: {0})
    assert Settings().encode_thread_count == 1
    monkeypatch.setattr("media_server.config.os.sched_getaffinity", lambda pid: set(range(64)))
    assert Settings().encode_thread_count == 4
    assert settings_from_env({"VMS_ENCODE_WORKERS": "6"}).encode_thread_count == 6
    with pytest.raises(ConfigError, match="encode_workers"):
        Settings(encode_workers=0)
    with pytest.raises(ConfigError, match="VMS_ENCODE_WORKERS"):
        settings_from_env({"VMS_ENCODE_WORKERS": "two"})


def test_synthesis_slots_follow_the_cpus_and_queue_and_priority_settings_are_checked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("media_server.config.os.sched_getaffinity", lambda pid: {0})
    assert Settings().synthesis_slots == 1
    monkeypatch.setattr("media_server.config.os.sched_getaffinity", lambda pid: set(range(64)))
    assert Settings().synthesis_slots == 4
    env = {"VMS_SYNTHESIS_WORKERS": "6", "VMS_SYNTHESIS_QUEUE_TIMEOUT_S": "2.5"}
    settings = settings_from_env({**env, "VMS_LOOP_NICE": "0"})
    assert (settings.synthesis_slots, settings.synthesis_queue_timeout_s) == (6, 2.5)
    assert settings.loop_nice == 0 and Settings().loop_nice == -10
    for bad in (
        {"synthesis_workers": 0},
        {"synthesis_queue_timeout_s": 0.0},
        {"loop_nice": -21},
        {"http_synthesis_slots": 7, "synthesis_workers": 6},
    ):
        with pytest.raises(ConfigError):
            Settings(**bad)  # type: ignore[arg-type]


def test_red_and_adaptation_settings() -> None:
    assert Settings().red_max_distance == 2 and Settings().audio_adaptation
    settings = settings_from_env({"VMS_RED_MAX_DISTANCE": "0", "VMS_AUDIO_ADAPTATION": "off"})
    assert settings.red_max_distance == 0 and not settings.audio_adaptation
    with pytest.raises(ConfigError, match="red_max_distance"):
        settings_from_env({"VMS_RED_MAX_DISTANCE": "3"})
    with pytest.raises(ConfigError, match="VMS_AUDIO_ADAPTATION"):
        settings_from_env({"VMS_AUDIO_ADAPTATION": "maybe"})
