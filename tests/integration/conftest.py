"""Real parts for integration tests: one Kafka broker per test session, chDB in this process."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka import KafkaConsumer, KafkaProducer

from schemas.settings import Settings
from streams.broker.topics import ensure_topics

REPO = Path(__file__).resolve().parents[2]
# The test pipelines run closed, as a shop's would: a hash secret and an API token of their own.
TEST_HASH_SECRET = "test-hash-secret"
TEST_API_TOKEN = "test-api-token"
API_AUTH = {"Authorization": f"Bearer {TEST_API_TOKEN}"}
KAFKA_SCRIPT = REPO / "deploy" / "kafka" / "kafka.sh"
# What hosts `nudgeflow worker`. A module whose tests hold for both runners marks itself
# `pytest.mark.parametrize("runner", RUNNERS, indirect=True)`; every other test gets the settings' default,
# which NUDGEFLOW_TEST_RUNNER=batched changes to run the rest of the suite's worker processes batched.
RUNNERS = ["batched", "faust"]
DEFAULT_RUNNER = os.environ.get("NUDGEFLOW_TEST_RUNNER", Settings.model_fields["runner"].default)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass(frozen=True)
class Broker:
    bootstrap: str
    environment: dict[str, str]

    def kafka(self, action: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", str(KAFKA_SCRIPT), action], env=self.environment, capture_output=True, text=True, timeout=180
        )


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    port = free_port()
    environment = {
        **os.environ,
        "KAFKA_PORT": str(port),
        "KAFKA_CONTROLLER_PORT": str(free_port()),
        "KAFKA_DATA_DIR": str(tmp_path_factory.mktemp("kafka")),
    }
    started = Broker(f"127.0.0.1:{port}", environment)
    result = started.kafka("start")
    assert result.returncode == 0, f"the test broker did not start:\n{result.stderr}"
    try:
        yield started
    finally:
        started.kafka("stop")


@pytest.fixture
def runner(request: pytest.FixtureRequest) -> str:
    """The runner the test's worker processes use (`settings.runner`)."""
    chosen: str = getattr(request, "param", DEFAULT_RUNNER)
    return chosen


def isolated_settings(bootstrap: str, tmp_path: Path, prefix: str, **changes: Any) -> Settings:
    """Settings of a pipeline of its own (topics, consumer groups, database and local state apart from other
    tests'), with the short timers and batches the tests wait on; `changes` adds or overrides fields."""
    namespace = f"{prefix}{uuid.uuid4().hex[:10]}"
    fields: dict[str, Any] = {
        "kafka_bootstrap": bootstrap,
        "namespace": namespace,
        "partitions": 4,
        "data_dir": tmp_path,
        "worker_web_port": free_port(),
        "clickhouse_database": namespace,
        "timer_interval_seconds": 0.2,
        "idle_after_seconds": 1.0,
        "sink_batch_seconds": 0.3,
        "hash_secret": TEST_HASH_SECRET,
        "api_tokens": [TEST_API_TOKEN],
    }
    return Settings(**{**fields, **changes})


@pytest.fixture
def settings(broker: Broker, tmp_path: Path, runner: str) -> Settings:
    """Settings of a pipeline of its own on the test broker."""
    isolated = isolated_settings(broker.bootstrap, tmp_path, "t", runner=runner)
    ensure_topics(isolated)  # as `nudgeflow worker` does, before anything is produced
    return isolated


def settings_environment(settings: Settings) -> dict[str, str]:
    values = {
        "NUDGEFLOW_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "NUDGEFLOW_NAMESPACE": settings.namespace,
        "NUDGEFLOW_PARTITIONS": str(settings.partitions),
        "NUDGEFLOW_REPLICATION_FACTOR": str(settings.replication_factor),
        "NUDGEFLOW_MIN_INSYNC_REPLICAS": str(settings.min_insync_replicas),
        "NUDGEFLOW_DATA_DIR": str(settings.data_dir),
        "NUDGEFLOW_WORKER_WEB_PORT": str(settings.worker_web_port),
        "NUDGEFLOW_TIMER_INTERVAL_SECONDS": str(settings.timer_interval_seconds),
        "NUDGEFLOW_IDLE_AFTER_SECONDS": str(settings.idle_after_seconds),
        "NUDGEFLOW_LOG_LEVEL": "warning",
        "NUDGEFLOW_HASH_SECRET": TEST_HASH_SECRET,
        "NUDGEFLOW_API_TOKENS": orjson.dumps([TEST_API_TOKEN]).decode(),
        "NUDGEFLOW_RUNNER": settings.runner,
        "NUDGEFLOW_FAUST_STANDBY_REPLICAS": str(settings.faust_standby_replicas),
    }
    if settings.rules_file is not None:
        values["NUDGEFLOW_RULES_FILE"] = str(settings.rules_file)
    if settings.email_double_opt_in:
        values["NUDGEFLOW_EMAIL_DOUBLE_OPT_IN"] = "true"
    return {**os.environ, **values}


class WorkerProcess:
    """`nudgeflow worker` in a child process, as an operator runs it."""

    def __init__(self, settings: Settings, log_path: Path) -> None:
        self.settings = settings
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "streams.cli", "worker"],
                env=settings_environment(self.settings),
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO,
            )
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(sig)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture
def start_worker(settings: Settings, tmp_path: Path) -> Iterator[Callable[[], WorkerProcess]]:
    workers: list[WorkerProcess] = []

    def start() -> WorkerProcess:
        worker = WorkerProcess(settings, tmp_path / f"worker-{len(workers)}.log").start()
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.stop(signal.SIGKILL if not worker.alive() else signal.SIGTERM)


@pytest.fixture
def producer(broker: Broker) -> Iterator[KafkaProducer]:
    client = KafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=0)
    yield client
    client.close()


def read_topic(bootstrap: str, topic: str, until: Callable[[list[Any]], bool], timeout: float = 60.0) -> list[Any]:
    """Every message of `topic` from the beginning, read until `until(messages)` holds or time runs out."""
    consumer = KafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False, group_id=None
    )
    messages: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=200).values():
                messages.extend(records)
            if until(messages):
                break
    finally:
        consumer.close()
    return messages
