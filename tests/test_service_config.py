"""Server configuration: precedence (flags > environment > file > defaults) and clear errors."""

from __future__ import annotations

import pytest

from guardedge.runtime.service.config import ConfigError, ServerConfig, load_config


def test_defaults_are_safe_for_a_first_run():
    config = load_config({}, env={})
    assert config == ServerConfig()
    assert config.host == "127.0.0.1" and config.metrics_host == "127.0.0.1"  # loopback unless asked
    assert config.max_message_bytes >= 32 * 1024 * 1024
    assert not config.auth_enabled and not config.tls_enabled


def test_flags_beat_environment_beat_file_beat_defaults(tmp_path):
    file = tmp_path / "guardedge.toml"
    file.write_text('port = 1111\nmax_batch_size = 3\nmax_queue_size = 9\nmodels = ["demo", "/models/other"]\nlog_format = "text"\n')
    env = {"GUARDEDGE_PORT": "2222", "GUARDEDGE_MAX_BATCH_SIZE": "5", "GUARDEDGE_MODELS": "demo"}
    config = load_config({"port": 3333, "max_queue_delay_ms": None}, env=env, file=file)
    assert config.port == 3333  # flag
    assert config.max_batch_size == 5  # environment over file
    assert config.models == ("demo",)  # environment list, comma-separated
    assert config.max_queue_size == 9 and config.log_format == "text"  # file
    assert config.max_queue_delay_ms == 0.0  # default; a flag left unset (None) does not count


@pytest.mark.parametrize(
    "flags,env,fragment",
    [
        ({"port": 70000}, {}, "port: 70000 is not a TCP port"),
        ({}, {"GUARDEDGE_PORT": "abc"}, "GUARDEDGE_PORT='abc': port must be an int"),
        ({}, {"GUARDEDGE_MAX_QUEUE_DELAY_MS": "soon"}, "max_queue_delay_ms must be a float"),
        ({"max_batch_size": 0}, {}, "max_batch_size: must be at least 1"),
        ({"max_image_bytes": 64 * 1024 * 1024}, {}, "exceeds max_message_bytes"),
        ({"log_format": "xml"}, {}, "log_format"),
        ({"threshold": 1.5}, {}, "threshold: 1.5 is above 1"),
        ({"metrics_port": -2}, {}, "metrics_port"),
        ({"grace_seconds": -1.0}, {}, "must not be negative"),
        ({}, {"GUARDEDGE_PREFIX_CACHE": "-1"}, "prefix_cache must not be negative"),
    ],
)
def test_invalid_settings_name_the_setting_and_the_fix(flags, env, fragment):
    with pytest.raises(ConfigError) as caught:
        load_config(flags, env=env)
    assert fragment in str(caught.value)


def test_prefix_cache_reaches_the_engine_options():
    from guardedge.runtime.service.slots import engine_options

    assert engine_options(load_config({}, env={})).prefix_cache == 4
    assert engine_options(load_config({"prefix_cache": 0}, env={})).prefix_cache == 0


def test_config_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config({}, env={}, file=tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("port = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config({}, env={}, file=bad)
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("prot = 1\n")
    with pytest.raises(ConfigError, match=r"unknown settings \['prot'\]"):
        load_config({}, env={}, file=unknown)
    several = tmp_path / "several.toml"
    several.write_text("port = 99999\nmax_batch_size = 0\n")
    with pytest.raises(ConfigError) as caught:
        load_config({}, env={}, file=several)
    assert "port" in str(caught.value) and "max_batch_size" in str(caught.value)  # all problems at once


def test_two_models_with_the_same_served_name_are_refused(tmp_path):
    (tmp_path / "a" / "guard").mkdir(parents=True)
    (tmp_path / "b" / "guard").mkdir(parents=True)
    with pytest.raises(ConfigError, match=r"several models would be served as \['guard'\]"):
        load_config({"models": (str(tmp_path / "a" / "guard"), str(tmp_path / "b" / "guard"))}, env={})


def test_every_problem_is_reported_at_once(tmp_path):
    env = {"GUARDEDGE_PORT": "x", "GUARDEDGE_MAX_BATCH_SIZE": "y"}
    flags = {"token_file": str(tmp_path / "missing"), "tls_key": str(tmp_path / "key.pem"), "threads": -1}
    with pytest.raises(ConfigError) as caught:
        load_config(flags, env=env)
    lines = str(caught.value).splitlines()
    assert lines[0] == "invalid configuration:"
    for fragment in ("GUARDEDGE_PORT='x': port must be an int", "GUARDEDGE_MAX_BATCH_SIZE='y': max_batch_size must be an int",
                     "token_file", "tls_cert and tls_key go together", "key.pem does not exist", "threads: -1 is negative"):
        assert sum(fragment in line for line in lines[1:]) == 1, (fragment, lines)
    assert len(lines) == 7


def test_threads_setting():
    assert load_config({}, env={}).threads == 0
    assert load_config({}, env={"GUARDEDGE_THREADS": "3"}).threads == 3
    assert load_config({"threads": 1}, env={"GUARDEDGE_THREADS": "3"}).threads == 1
