"""A process whose Kafka settings the SASL_SSL listener refuses exits at start with one line naming the cause.

The worker, the sink and the collector all go through the same check (streams/broker/check.py, check_broker); each
is started here as an operator starts it, with a wrong password, a CA file that did not sign the broker's
certificate, or a plaintext client."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from streams.cli.base import REFUSED
from tests.integration.conftest import REPO
from tests.integration.security.conftest import USER, SecureBroker, secure_environment, secure_settings

# A bound on "at start, not a hang", well above the check's few seconds; no speed claim.
START_BOUND_SECONDS = 30.0

CASES: dict[str, tuple[dict[str, str], str]] = {
    "wrong password": (
        {"NUDGEFLOW_SECURITY__KAFKA_PASSWORD": "not-the-password"},
        rf"Kafka at 127\.0\.0\.1:\d+ refused the SASL credentials of user {USER} \(SCRAM-SHA-512\): "
        r"Authentication failed .*invalid credentials",
    ),
    "untrusted certificate": (
        {},  # the other CA's file, set in the test
        r"Kafka at 127\.0\.0\.1:\d+: the server's TLS certificate is not trusted by "
        r"NUDGEFLOW_SECURITY__KAFKA_CA_FILE \(.*other-ca\.pem\): self-signed certificate in certificate chain",
    ),
    "plaintext client": (
        {"NUDGEFLOW_SECURITY__KAFKA_PROTOCOL": "PLAINTEXT"},
        r"Kafka at 127\.0\.0\.1:\d+: the listener does not speak PLAINTEXT; it answers with TLS "
        r"\(set NUDGEFLOW_SECURITY__KAFKA_PROTOCOL to SSL or SASL_SSL",
    ),
}


@pytest.mark.parametrize("command", ["worker", "sink", "collector"])
@pytest.mark.parametrize("case", list(CASES))
def test_a_refused_setting_stops_the_process_at_start_naming_the_cause(
    secure_broker: SecureBroker, tmp_path: Path, case: str, command: str
) -> None:
    variables, message = CASES[case]
    if case == "untrusted certificate":
        variables = {"NUDGEFLOW_SECURITY__KAFKA_CA_FILE": str(secure_broker.other_ca_file)}
    settings = secure_settings(secure_broker, tmp_path)
    started = time.monotonic()
    try:
        result = subprocess.run(
            [sys.executable, "-m", "streams.cli", command],
            env=secure_environment(settings, **variables),
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=3 * START_BOUND_SECONDS,
        )
    except subprocess.TimeoutExpired as hung:
        raise AssertionError(f"{command} hung with a {case} instead of refusing it:\n{hung.stderr!r}") from None
    elapsed = time.monotonic() - started
    last_line = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else ""
    assert result.returncode == REFUSED, f"{command} exited {result.returncode}:\n{result.stderr}"
    assert re.fullmatch(f"nudgeflow: {message}.*", last_line), last_line
    assert "Traceback" not in result.stderr, result.stderr
    assert elapsed < START_BOUND_SECONDS, f"{command} took {elapsed:.1f}s to refuse a {case}"
