"""The long-running processes refuse development defaults outside demo mode, as an operator would meet it:
the command exits non-zero at once, before it touches Kafka, and says what to set."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request

import pytest

from schemas.settings import Settings
from tests.integration.conftest import REPO, TEST_HASH_SECRET, free_port, settings_environment

pytestmark = pytest.mark.integration

NO_SECRET = "set NUDGEFLOW_HASH_SECRET (the HMAC key of hashed contacts and erased people)"
DEV_KEY = "remove dev-write-key from NUDGEFLOW_COLLECTOR_WRITE_KEYS: it works only in demo mode"
UNSIGNED = "NUDGEFLOW_ALLOW_UNSIGNED_WEBHOOKS=true is for the local demo (NUDGEFLOW_DEMO=true) only"


def bare_environment(**values: str) -> dict[str, str]:
    """This machine's environment without any nudgeflow setting, plus `values`; Kafka where nobody listens,
    so a process that got past its check would hang on the broker instead of exiting."""
    kept = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("NUDGEFLOW_") and key not in {"KAFKA_BOOTSTRAP", "CLICKHOUSE_URL"}
    }
    return {**kept, "NUDGEFLOW_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}", **values}


def nudgeflow(environment: dict[str, str], *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", *arguments],
        env=environment,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.mark.parametrize("secret", [None, "", "  "], ids=["unset", "empty", "blank"])
@pytest.mark.parametrize("component", ["worker", "sink", "collector"])
def test_a_process_without_the_hash_secret_refuses_to_start(component: str, secret: str | None) -> None:
    started = time.monotonic()
    # An env file line "NUDGEFLOW_HASH_SECRET=" sets an empty secret: no key at all, so refused too.
    values = {} if secret is None else {"NUDGEFLOW_HASH_SECRET": secret}
    result = nudgeflow(bare_environment(**values), component)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == f"nudgeflow {component} will not start: {NO_SECRET}"
    assert time.monotonic() - started < 20  # refused before waiting for the broker


def test_the_collector_refuses_the_development_write_key_outside_demo_mode() -> None:
    environment = bare_environment(
        NUDGEFLOW_HASH_SECRET=TEST_HASH_SECRET, NUDGEFLOW_COLLECTOR_WRITE_KEYS='{"dev-write-key": "web"}'
    )
    result = nudgeflow(environment, "collector")
    assert result.returncode == 2
    assert result.stderr.strip() == f"nudgeflow collector will not start: {DEV_KEY}"


def test_the_collector_refuses_unsigned_webhooks_outside_demo_mode() -> None:
    environment = bare_environment(NUDGEFLOW_HASH_SECRET=TEST_HASH_SECRET, NUDGEFLOW_ALLOW_UNSIGNED_WEBHOOKS="true")
    result = nudgeflow(environment, "collector")
    assert result.returncode == 2
    assert result.stderr.strip() == f"nudgeflow collector will not start: {UNSIGNED}"


def test_every_problem_is_named_at_once() -> None:
    environment = bare_environment(
        NUDGEFLOW_COLLECTOR_WRITE_KEYS='{"dev-write-key": "web"}', NUDGEFLOW_ALLOW_UNSIGNED_WEBHOOKS="true"
    )
    result = nudgeflow(environment, "collector")
    assert result.returncode == 2
    assert result.stderr.strip() == f"nudgeflow collector will not start: {NO_SECRET}; {DEV_KEY}; {UNSIGNED}"


def test_in_demo_mode_the_collector_starts_with_the_development_key(settings: Settings) -> None:
    port = free_port()
    environment = {
        **settings_environment(settings),
        "NUDGEFLOW_DEMO": "true",
        "NUDGEFLOW_COLLECTOR_PORT": str(port),
        "NUDGEFLOW_COLLECTOR_WRITE_KEYS": '{"dev-write-key": "web"}',
    }
    del environment["NUDGEFLOW_HASH_SECRET"]
    process = subprocess.Popen(
        [sys.executable, "-m", "streams.cli", "collector"],
        env=environment,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and process.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/openapi.json", timeout=5) as response:
                    assert response.status == 200
                    return
            except OSError:
                time.sleep(0.3)
        stderr = process.stderr.read().decode() if process.poll() is not None and process.stderr else ""
        raise AssertionError(f"the demo collector never answered: {stderr}")
    finally:
        process.terminate()
        process.wait(timeout=30)
