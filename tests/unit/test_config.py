from __future__ import annotations

import pytest

from moderation.config import Settings, env_names, load_settings
from moderation.errors import ConfigError


def test_defaults_need_no_environment():
    s = load_settings({})
    assert s == Settings()
    assert s.uploads_topic == "uploads" and s.decisions_topic == "moderation.decisions"
    assert s.dlq_topic == "uploads.dlq" and s.pdq_match_distance == 31


def test_environment_is_coerced():
    s = load_settings(
        {
            "DEV_MODE": "true",
            "PDQ_MATCH_DISTANCE": "40",
            "REVIEW_THRESHOLD": "0.75",
            "KAFKA_BOOTSTRAP_SERVERS": "k1:9092,k2:9092",
        }
    )
    assert s.dev_mode is True and s.pdq_match_distance == 40 and s.review_threshold == 0.75
    assert s.kafka_bootstrap_servers == "k1:9092,k2:9092"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DEV_MODE": "maybe"}, "DEV_MODE"),
        ({"PDQ_MATCH_DISTANCE": "thirty"}, "PDQ_MATCH_DISTANCE"),
        ({"REVIEW_THRESHOLD": "1.5"}, "REVIEW_THRESHOLD"),
        ({"AUTO_REMOVE_PDQ_DISTANCE": "40"}, "AUTO_REMOVE_PDQ_DISTANCE"),
        ({"LOG_FORMAT": "xml"}, "LOG_FORMAT"),
        ({"MEDIA_MAX_BYTES": "-1"}, "MEDIA_MAX_BYTES"),
        ({"SLA_HOURS": "ncii=soon"}, "SLA_HOURS"),
        ({"DATABASE_URL": "foo"}, "DATABASE_URL is not a database URL: expected postgresql://"),
        ({"DATABASE_URL": "mysql://u@h/d"}, "DATABASE_URL names an unsupported database 'mysql'"),
        ({"KAFKA_BOOTSTRAP_SERVERS": "kafka"}, "KAFKA_BOOTSTRAP_SERVERS entry 'kafka' is not HOST:PORT"),
        ({"KAFKA_BOOTSTRAP_SERVERS": "k1:9092,k2:port"}, "KAFKA_BOOTSTRAP_SERVERS entry 'k2:port'"),
        ({"KAFKA_BOOTSTRAP_SERVERS": "k1:70000"}, "KAFKA_BOOTSTRAP_SERVERS"),
    ],
)
def test_bad_values_name_the_variable(env, message):
    with pytest.raises(ConfigError, match=message):
        load_settings(env)


def test_every_setting_is_documented():
    from pathlib import Path

    doc = (Path(__file__).parents[2] / "docs" / "configuration.md").read_text()
    missing = [name for name in env_names() if f"`{name}`" not in doc]
    assert not missing, f"undocumented settings: {missing}"


def test_secrets_can_come_from_mounted_files(tmp_path):
    from moderation.config import load_settings, secret_names

    assert {"SECRET_KEY", "NCMEC_PASSWORD", "STOPNCII_SUBSCRIPTION_KEY"} <= set(secret_names())
    secret = tmp_path / "key"
    secret.write_text("s3cret-value\n")
    settings = load_settings({"SECRET_KEY_FILE": str(secret)})
    assert settings.secret_key == "s3cret-value"
    assert "s3cret-value" not in repr(settings)


def test_a_secret_file_that_cannot_be_read_names_the_variable_not_the_value(tmp_path):
    import pytest

    from moderation.config import load_settings
    from moderation.errors import ConfigError

    with pytest.raises(ConfigError, match="NCMEC_PASSWORD_FILE=.*cannot read"):
        load_settings({"NCMEC_PASSWORD_FILE": str(tmp_path / "missing")})
    (tmp_path / "k").write_text("x")
    with pytest.raises(ConfigError, match="not both"):
        load_settings({"SECRET_KEY": "a", "SECRET_KEY_FILE": str(tmp_path / "k")})


def test_a_bad_database_url_stops_a_command_with_one_line_naming_it():
    import os
    import subprocess
    import sys
    from pathlib import Path

    binary = Path(sys.executable).with_name("moderation")
    env = {**os.environ, "DATABASE_URL": "foo"}
    for command in (["web"], ["db", "upgrade"], ["worker"]):
        done = subprocess.run([str(binary), *command], env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 2, (command, done.stderr)
        assert done.stderr.strip().splitlines() == [
            "moderation: DATABASE_URL is not a database URL: "
            "expected postgresql://USER@HOST:5432/DATABASE or sqlite:///path/to/file.db"
        ], (command, done.stderr)


def test_group_instance_id_and_database_timeouts():
    s = load_settings(
        {"KAFKA_GROUP_INSTANCE_ID": "moderation-worker-7d9f-x2k4q", "DATABASE_LOCK_TIMEOUT_MS": "0"}
    )
    assert s.kafka_group_instance_id == "moderation-worker-7d9f-x2k4q" and s.database_lock_timeout_ms == 0
    assert (s.database_statement_timeout_ms, s.database_tcp_user_timeout_ms) == (30_000, 20_000)
    for bad in ("has space", "..", "x" * 250, "pod/name"):
        with pytest.raises(ConfigError, match="KAFKA_GROUP_INSTANCE_ID"):
            load_settings({"KAFKA_GROUP_INSTANCE_ID": bad})


def test_database_timeouts_become_libpq_parameters_that_the_url_can_override():
    from moderation.storage.db import Timeouts

    timeouts = Timeouts(statement_ms=30_000, lock_ms=10_000, tcp_user_ms=20_000)
    assert timeouts.connect_args({}) == {
        "options": "-c statement_timeout=30000 -c lock_timeout=10000",
        "tcp_user_timeout": 20_000,
    }
    given = {"options": "-c statement_timeout=0", "tcp_user_timeout": "5000"}
    # the URL's options come last, so PostgreSQL applies them; its tcp_user_timeout stays
    assert timeouts.connect_args(given) == {
        "options": "-c statement_timeout=30000 -c lock_timeout=10000 -c statement_timeout=0"
    }
    assert timeouts.answer_s == 35.0 and Timeouts().answer_s is None and Timeouts().connect_args({}) == {}
