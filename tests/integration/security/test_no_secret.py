"""No secret of the settings shows anywhere a process writes: its log (at debug level), `nudgeflow settings`,
the /metrics pages of the worker, the sink and the collector, or the refusal of settings that do not validate.

The Kafka password is the SCRAM user's real one (the processes connect with it over SASL_SSL), the ClickHouse
password one of the test's own; each given as a variable, then as a file (the *_FILE variables)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from streams.cli.base import REFUSED
from tests.integration.conftest import REPO
from tests.integration.hostile import Service, collector_service, sink_service, wait_for_http
from tests.integration.security.conftest import PASSWORD, SecureBroker, secure_environment, secure_settings

CLICKHOUSE_PASSWORD = "clickhouse-password-not-for-logs"


def with_secrets(environment: dict[str, str], tmp_path: Path, given_as: str) -> dict[str, str]:
    environment = {**environment, "NUDGEFLOW_LOG_LEVEL": "debug"}
    if given_as == "variable":
        return {**environment, "NUDGEFLOW_SECURITY__CLICKHOUSE_PASSWORD": CLICKHOUSE_PASSWORD}
    (tmp_path / "kafka-password").write_text(PASSWORD + "\n")
    (tmp_path / "clickhouse-password").write_text(CLICKHOUSE_PASSWORD + "\n")
    del environment["NUDGEFLOW_SECURITY__KAFKA_PASSWORD"]
    return {
        **environment,
        "NUDGEFLOW_SECURITY__KAFKA_PASSWORD_FILE": str(tmp_path / "kafka-password"),
        "NUDGEFLOW_SECURITY__CLICKHOUSE_PASSWORD_FILE": str(tmp_path / "clickhouse-password"),
    }


def nudgeflow(environment: dict[str, str], *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", *arguments],
        env=environment,
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )


def assert_no_secret(where: str, text: str) -> None:
    for secret in (PASSWORD, CLICKHOUSE_PASSWORD):
        assert secret not in text, f"a secret is in {where}"


@pytest.mark.parametrize("given_as", ["variable", "file"])
def test_no_secret_in_logs_settings_or_metrics(secure_broker: SecureBroker, tmp_path: Path, given_as: str) -> None:
    settings = secure_settings(secure_broker, tmp_path)
    environment = with_secrets(secure_environment(settings), tmp_path, given_as)
    services = [
        Service("worker", ["worker"], environment, tmp_path / "worker.log"),
        sink_service(settings, environment, tmp_path / "sink.log"),
        collector_service(settings, environment, tmp_path / "collector.log", settings.collector_port),
    ]
    metrics_urls = [
        f"http://127.0.0.1:{settings.worker_web_port}/metrics",
        f"http://127.0.0.1:{settings.sink_web_port}/metrics",
        f"http://127.0.0.1:{settings.collector_port}/metrics",
    ]
    try:
        for service in services:
            service.start()
        for service, url in zip(services, metrics_urls, strict=True):
            wait_for_http(url, service)
            page = requests.get(url, timeout=10).text
            assert "nudgeflow" in page, f"{service.name}'s /metrics is not the page it should be"
            assert_no_secret(f"the {service.name}'s /metrics", page)
    finally:
        for service in services:
            service.stop()
    for service in services:
        log = service.log_path.read_text(errors="replace")
        assert "DEBUG" in log, f"the {service.name} did not log at debug level"
        assert_no_secret(f"the {service.name}'s log", log)

    shown = nudgeflow(environment, "settings")
    assert shown.returncode == 0, shown.stderr
    assert "NUDGEFLOW_SECURITY__KAFKA_PASSWORD" in shown.stdout
    assert_no_secret("`nudgeflow settings`", shown.stdout + shown.stderr)


# Short, so that a validation error's shortened echo of the values given would still hold one whole.
SHORT_SECRET = "s3cr3t-k"


@pytest.mark.parametrize(
    ("variables", "named"),
    [
        ({"KAFKA_PROTOCOL": "SASL_SSL", "KAFKA_PASSWORD": SHORT_SECRET}, "NUDGEFLOW_SECURITY__KAFKA_USERNAME"),
        ({"CLICKHOUSE_PASSWORD_FILE": "{file}", "CLICKHOUSE_PASSWORD": SHORT_SECRET}, "not both"),
    ],
    ids=["SASL without a user", "a password and its file"],
)
def test_settings_that_do_not_validate_are_refused_without_their_secrets(
    tmp_path: Path, variables: dict[str, str], named: str
) -> None:
    (tmp_path / "password").write_text(SHORT_SECRET)
    environment = {name: value for name, value in os.environ.items() if not name.startswith("NUDGEFLOW_")}
    for name, value in variables.items():
        environment[f"NUDGEFLOW_SECURITY__{name}"] = value.replace("{file}", str(tmp_path / "password"))
    refused = nudgeflow(environment, "settings")
    assert refused.returncode == REFUSED, refused.stderr
    assert refused.stderr.startswith("nudgeflow: invalid settings: security: "), refused.stderr
    assert named in refused.stderr, refused.stderr
    assert "Traceback" not in refused.stderr, refused.stderr
    assert SHORT_SECRET not in refused.stdout + refused.stderr, refused.stderr
