"""Pieces of the adversarial suite (test_adversarial.py): the sink and the collector as child processes,
the shapes of hostile input, signed webhooks, and reading back what the pipeline made of them."""

from __future__ import annotations

import base64
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import orjson
import requests
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from kafka import KafkaConsumer, TopicPartition

from schemas.settings import Settings
from tests.integration.conftest import REPO, settings_environment


class Service:
    """One `nudgeflow <command>` in a child process, as an operator starts it: its own log file, stopped
    with SIGTERM (SIGKILL only if it does not stop), asked whether it is still alive."""

    def __init__(self, name: str, arguments: list[str], environment: Mapping[str, str], log_path: Path) -> None:
        self.name = name
        self.arguments = arguments
        self.environment = dict(environment)
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Service:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "streams.cli", *self.arguments],
                env=self.environment,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO,
            )
        return self

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def returncode(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def stop(self, timeout: float = 60) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=30)

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return ""
        text = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        return "\n".join(line[:400] for line in text)


def pipeline_environment(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment every process of the test's pipeline shares: the test settings (settings_environment)
    plus what the sink and the collector need of their own."""
    values = {
        **settings_environment(settings),
        "NUDGEFLOW_CLICKHOUSE_DATABASE": settings.clickhouse_database,
        "NUDGEFLOW_SINK_WEB_PORT": str(settings.sink_web_port),
        "NUDGEFLOW_SINK_BATCH_SECONDS": str(settings.sink_batch_seconds),
        "NUDGEFLOW_COLLECTOR_WRITE_KEYS": orjson.dumps(settings.collector_write_keys).decode(),
    }
    if settings.sendgrid_public_key:
        values["NUDGEFLOW_SENDGRID_PUBLIC_KEY"] = settings.sendgrid_public_key
    if settings.twilio_auth_token is not None:
        values["NUDGEFLOW_TWILIO_AUTH_TOKEN"] = settings.twilio_auth_token.get_secret_value()
    return {**values, **extra}


def sink_service(settings: Settings, environment: Mapping[str, str], log_path: Path) -> Service:
    return Service("sink", ["sink"], environment, log_path)


def collector_service(settings: Settings, environment: Mapping[str, str], log_path: Path, port: int) -> Service:
    return Service("collector", ["collector", "--host", "127.0.0.1", "--port", str(port)], environment, log_path)


def wait_for_http(url: str, service: Service, timeout: float = 90, headers: Mapping[str, str] | None = None) -> None:
    """Until `url` answers 200 (the service is listening and ready), or fail with the service's log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and service.alive():
        try:
            if requests.get(url, headers=dict(headers or {}), timeout=5).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.3)
    raise AssertionError(f"{service.name} did not answer {url} (exit {service.returncode()}):\n{service.log_tail()}")


# --- shapes of hostile input ------------------------------------------------------------------------------


def nested_raw(levels: int, leaf: bytes = b"1") -> bytes:
    """`levels` nested objects as JSON text: orjson.dumps itself refuses past about 254 levels."""
    return b'{"a":' * levels + leaf + b"}" * levels


def nested_value(levels: int) -> Any:
    """The same nesting as a Python value, built iteratively."""
    value: Any = 1
    for _ in range(levels):
        value = {"a": value}
    return value


def generate_sendgrid_key() -> tuple[ec.EllipticCurvePrivateKey, str]:
    """A P-256 key pair made here: the private key to sign with, the public key as SendGrid shows it."""
    private_key = ec.generate_private_key(ec.SECP256R1())
    der = private_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private_key, base64.b64encode(der).decode()


def sendgrid_headers(private_key: ec.EllipticCurvePrivateKey, body: bytes, stamp: str | None = None) -> dict[str, str]:
    stamp = stamp or str(int(time.time()))
    signature = base64.b64encode(private_key.sign(stamp.encode() + body, ec.ECDSA(hashes.SHA256()))).decode()
    return {
        "Content-Type": "application/json",
        "X-Twilio-Email-Event-Webhook-Signature": signature,
        "X-Twilio-Email-Event-Webhook-Timestamp": stamp,
    }


# --- reading back ------------------------------------------------------------------------------------------


def read_all(bootstrap: str, topic: str, until: Callable[[list[Any]], bool], timeout: float) -> list[Any]:
    """Every message of `topic` from the beginning until `until(messages)` holds, the end is reached after
    it did not, or time runs out; large topics are read with big fetches."""
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
        max_partition_fetch_bytes=8 * 1024 * 1024,
        fetch_max_bytes=64 * 1024 * 1024,
    )
    messages: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=300, max_records=5000).values():
                messages.extend(records)
            if until(messages):
                break
    finally:
        consumer.close()
    return messages


def group_caught_up(bootstrap: str, group: str, topic: str) -> bool:
    """Whether consumer group `group` has committed every partition of `topic` up to its end (asked as a
    member-less client of the group: it joins nothing and commits nothing)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        partitions = [TopicPartition(topic, number) for number in consumer.partitions_for_topic(topic) or ()]
        ends = consumer.end_offsets(partitions)
        return all(end == 0 or (consumer.committed(tp) or 0) >= end for tp, end in ends.items())
    finally:
        consumer.close(autocommit=False)


def reason_prefix(reason: str) -> str:
    """A dead letter's reason up to its first colon, as the worker's metrics label it (at most 40 chars)."""
    head = reason.split(":", 1)[0].strip()
    return head if len(head) <= 40 else head[:37] + "..."
