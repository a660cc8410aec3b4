"""The security settings and the options every Kafka and ClickHouse client is built with (schemas/connections)."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from pydantic import ValidationError

from schemas.connections import aiokafka_options, clickhouse_options, faust_broker_options, kafka_python_options
from schemas.settings import Settings


def configured(monkeypatch: pytest.MonkeyPatch, **variables: str) -> Settings:
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    return Settings()


def test_plaintext_by_default_is_just_the_brokers() -> None:
    settings = Settings(kafka_bootstrap="a:9092, b:9093")
    assert aiokafka_options(settings) == {"bootstrap_servers": ["a:9092", "b:9093"], "security_protocol": "PLAINTEXT"}
    assert kafka_python_options(settings)["security_protocol"] == "PLAINTEXT"
    assert "broker_credentials" not in faust_broker_options(settings)


def test_the_local_broker_moved_to_another_port_is_the_one_clients_use(monkeypatch: pytest.MonkeyPatch) -> None:
    # `NUDGEFLOW_KAFKA_PORT=19000 nudgeflow run` starts the broker there; its children must connect there too.
    assert configured(monkeypatch, NUDGEFLOW_KAFKA_PORT="19000").kafka_bootstrap == "127.0.0.1:19000"
    assert configured(monkeypatch, NUDGEFLOW_KAFKA_BOOTSTRAP="kafka:9092").kafka_bootstrap == "kafka:9092"


def test_sasl_ssl_from_the_environment_with_the_password_in_a_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    secret = tmp_path / "kafka-password"
    secret.write_text("s3cret-from-file\n")  # the newline an editor leaves is not part of the password
    settings = configured(
        monkeypatch,
        NUDGEFLOW_SECURITY__KAFKA_PROTOCOL="SASL_SSL",
        NUDGEFLOW_SECURITY__KAFKA_SASL_MECHANISM="SCRAM-SHA-512",
        NUDGEFLOW_SECURITY__KAFKA_USERNAME="nudgeflow",
        NUDGEFLOW_SECURITY__KAFKA_PASSWORD_FILE=str(secret),
    )
    options = aiokafka_options(settings)
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (options["sasl_plain_username"], options["sasl_plain_password"]) == ("nudgeflow", "s3cret-from-file")
    context = options["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED
    assert kafka_python_options(settings)["sasl_plain_password"] == "s3cret-from-file"
    credentials = faust_broker_options(settings)["broker_credentials"]
    assert (credentials.protocol.value, credentials.mechanism.value) == ("SASL_SSL", "SCRAM-SHA-512")
    assert credentials.password == "s3cret-from-file"
    # The secret is a SecretStr: not in the settings' repr, nor in a dump of them.
    assert "s3cret-from-file" not in repr(settings)
    assert "s3cret-from-file" not in settings.model_dump_json()


def test_hostname_checking_can_be_turned_off_only_explicitly(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = configured(
        monkeypatch, NUDGEFLOW_SECURITY__KAFKA_PROTOCOL="SSL", NUDGEFLOW_SECURITY__KAFKA_CHECK_HOSTNAME="false"
    )
    assert aiokafka_options(settings)["ssl_context"].check_hostname is False
    assert "sasl_mechanism" not in aiokafka_options(settings)


def test_a_secret_set_twice_or_missing_is_refused_with_the_variable_to_fix(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    secret = tmp_path / "password"
    secret.write_text("x")
    with pytest.raises(ValidationError, match="NUDGEFLOW_SECURITY__KAFKA_PASSWORD or NUDGEFLOW_SECURITY__KAFKA_PASS"):
        configured(
            monkeypatch,
            NUDGEFLOW_SECURITY__KAFKA_PASSWORD="y",
            NUDGEFLOW_SECURITY__KAFKA_PASSWORD_FILE=str(secret),
        )
    monkeypatch.delenv("NUDGEFLOW_SECURITY__KAFKA_PASSWORD")
    monkeypatch.delenv("NUDGEFLOW_SECURITY__KAFKA_PASSWORD_FILE")
    with pytest.raises(ValidationError, match="needs NUDGEFLOW_SECURITY__KAFKA_USERNAME"):
        configured(monkeypatch, NUDGEFLOW_SECURITY__KAFKA_PROTOCOL="SASL_SSL")
    monkeypatch.delenv("NUDGEFLOW_SECURITY__KAFKA_PROTOCOL")
    with pytest.raises(ValidationError, match="cannot be read"):
        configured(monkeypatch, NUDGEFLOW_SECURITY__CLICKHOUSE_PASSWORD_FILE=str(tmp_path / "absent"))


def test_clickhouse_over_https_with_user_password_and_ca(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    secret = tmp_path / "clickhouse-password"
    secret.write_text("ch-secret")
    settings = configured(
        monkeypatch,
        NUDGEFLOW_CLICKHOUSE_URL="https://abc.clickhouse.cloud:8443",
        NUDGEFLOW_SECURITY__CLICKHOUSE_USER="default",
        NUDGEFLOW_SECURITY__CLICKHOUSE_PASSWORD_FILE=str(secret),
        NUDGEFLOW_SECURITY__CLICKHOUSE_CA_FILE=str(tmp_path / "ca.pem"),
    )
    assert clickhouse_options(settings) == {
        "dsn": "https://abc.clickhouse.cloud:8443",
        "interface": "https",
        "username": "default",
        "password": "ch-secret",
        "verify": True,
        "ca_cert": str(tmp_path / "ca.pem"),
    }
    assert "ch-secret" not in repr(settings)
