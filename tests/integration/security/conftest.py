"""A broker of its own with a SASL_SSL listener: a CA and a server certificate made with openssl for the
test, SCRAM users created when its storage is formatted (deploy/kafka/kafka.sh, secure_listener)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from schemas.settings import SecuritySettings, Settings
from tests.integration.conftest import Broker, free_port, isolated_settings

USER = "nudgeflow"
PASSWORD = "scram-password-not-for-logs"
KEYSTORE_PASSWORD = "keystore-password"


@dataclass(frozen=True)
class SecureBroker:
    broker: Broker
    secure_bootstrap: str
    ca_file: Path
    other_ca_file: Path  # a CA the broker's certificate was not signed by


def openssl(*arguments: str, cwd: Path) -> None:
    subprocess.run(["openssl", *arguments], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_ca(directory: Path, name: str) -> None:
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={name}",
            "-keyout", f"{name}.key", "-out", f"{name}.pem", cwd=directory)  # fmt: skip


def make_certificates(directory: Path) -> None:
    make_ca(directory, "ca")
    make_ca(directory, "other-ca")
    (directory / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-keyout", "broker.key",
            "-out", "broker.csr", cwd=directory)  # fmt: skip
    openssl("x509", "-req", "-in", "broker.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-days", "2", "-extfile", "san.ext", "-out", "broker.pem", cwd=directory)  # fmt: skip
    openssl("pkcs12", "-export", "-in", "broker.pem", "-inkey", "broker.key", "-certfile", "ca.pem",
            "-out", "broker.p12", "-passout", f"pass:{KEYSTORE_PASSWORD}", cwd=directory)  # fmt: skip


@pytest.fixture(scope="session")
def secure_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureBroker]:
    certificates = tmp_path_factory.mktemp("certificates")
    make_certificates(certificates)
    port, secure_port = free_port(), free_port()
    environment = {
        **os.environ,
        "KAFKA_PORT": str(port),
        "KAFKA_CONTROLLER_PORT": str(free_port()),
        "KAFKA_DATA_DIR": str(tmp_path_factory.mktemp("secure-kafka")),
        "KAFKA_SASL_SSL_PORT": str(secure_port),
        "KAFKA_SSL_KEYSTORE": str(certificates / "broker.p12"),
        "KAFKA_SSL_KEYSTORE_PASSWORD": KEYSTORE_PASSWORD,
        "KAFKA_SCRAM_USERS": f"{USER}:{PASSWORD}",
    }
    broker = Broker(f"127.0.0.1:{port}", environment)
    result = broker.kafka("start")
    assert result.returncode == 0, f"the secure test broker did not start:\n{result.stderr}"
    try:
        yield SecureBroker(broker, f"127.0.0.1:{secure_port}", certificates / "ca.pem", certificates / "other-ca.pem")
    finally:
        broker.kafka("stop")


def secure_settings(broker: SecureBroker, tmp_path: Path, **security: object) -> Settings:
    """Settings of a pipeline of its own whose every client speaks SASL_SSL with SCRAM to the secure listener."""
    values: dict[str, object] = {
        "kafka_protocol": "SASL_SSL",
        "kafka_sasl_mechanism": "SCRAM-SHA-512",
        "kafka_username": USER,
        "kafka_password": PASSWORD,
        "kafka_ca_file": broker.ca_file,
        "kafka_timeout_seconds": 20.0,
    }
    values.update(security)
    return isolated_settings(
        broker.secure_bootstrap,
        tmp_path,
        "s",
        partitions=2,
        sink_web_port=free_port(),
        collector_port=free_port(),
        security=SecuritySettings.model_validate(values),
    )


def secure_environment(settings: Settings, **variables: str) -> dict[str, str]:
    """The environment of a `nudgeflow` process with these settings' Kafka security, as an operator sets it;
    `variables` override or add NUDGEFLOW_* variables."""
    from tests.integration.hostile import pipeline_environment

    security = settings.security
    password = security.kafka_password.get_secret_value() if security.kafka_password else ""
    values = {
        "NUDGEFLOW_SECURITY__KAFKA_PROTOCOL": security.kafka_protocol,
        "NUDGEFLOW_SECURITY__KAFKA_SASL_MECHANISM": security.kafka_sasl_mechanism,
        "NUDGEFLOW_SECURITY__KAFKA_USERNAME": security.kafka_username or "",
        "NUDGEFLOW_SECURITY__KAFKA_PASSWORD": password,
        "NUDGEFLOW_SECURITY__KAFKA_CA_FILE": str(security.kafka_ca_file or ""),
        "NUDGEFLOW_SECURITY__KAFKA_TIMEOUT_SECONDS": str(security.kafka_timeout_seconds),
        "NUDGEFLOW_COLLECTOR_PORT": str(settings.collector_port),
    }
    environment = pipeline_environment(settings, **{**values, **variables})
    return {name: value for name, value in environment.items() if value != ""}
