"""Start-up on a fresh namespace: worker, collector and sink started at once, each creating the topics it
needs, and a person erased right away. A runner must never run without its identity and privacy
partitions (it waits until every source topic is in the metadata), so the erasure is always carried out."""

from __future__ import annotations

import base64
import time
import uuid
from pathlib import Path

import orjson
import pytest
import requests

from schemas.privacy import person_hash
from schemas.settings import Settings
from tests.integration.conftest import TEST_HASH_SECRET, free_port, read_topic
from tests.integration.hostile import Service, collector_service, pipeline_environment, sink_service, wait_for_http
from tests.integration.test_profiles import get

pytestmark = pytest.mark.integration

ROUNDS = 3
WRITE_KEY = "startup-write-key"


def fresh(settings: Settings, round_number: int) -> Settings:
    """The test's settings on a namespace nobody has created a topic of yet."""
    namespace = f"{settings.namespace}s{round_number}"
    return settings.model_copy(
        update={
            "namespace": namespace,
            "clickhouse_database": namespace,
            "worker_web_port": free_port(),
            "sink_web_port": free_port(),
            "collector_write_keys": {WRITE_KEY: "web"},
        }
    )


@pytest.mark.parametrize("round_number", range(ROUNDS))
def test_worker_collector_and_sink_started_at_once_carry_out_an_erasure_right_away(
    settings: Settings, tmp_path: Path, round_number: int
) -> None:
    configured = fresh(settings, round_number)
    environment = pipeline_environment(configured)
    port = free_port()
    services = [
        Service("worker", ["worker"], environment, tmp_path / "worker.log"),
        sink_service(configured, environment, tmp_path / "sink.log"),
        collector_service(configured, environment, tmp_path / "collector.log", port),
    ]
    for service in services:
        service.start()  # all at once: nobody waits for anybody's topics
    try:
        collector = f"http://127.0.0.1:{port}"
        wait_for_http(f"{collector}/openapi.json", services[2])
        auth = {"Authorization": "Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode()}
        person = f"fresh-{uuid.uuid4().hex[:8]}"
        identify = {"userId": person, "messageId": str(uuid.uuid4()), "traits": {"email": f"{person}@example.com"}}
        answered = requests.post(f"{collector}/v1/identify", json=identify, headers=auth, timeout=30)
        assert answered.status_code == 200, answered.text
        erased = Service("erase", ["erase", person], environment, tmp_path / "erase.log").start()
        assert erased.process is not None and erased.process.wait(timeout=120) == 0, erased.log_tail()

        hashed = person_hash(person, TEST_HASH_SECRET.encode())
        audits = read_topic(
            configured.kafka_bootstrap,
            configured.audit_topic,
            lambda messages: {orjson.loads(m.value)["component"] for m in messages} >= {"worker", "sink"},
            timeout=120,
        )
        records = [orjson.loads(message.value) for message in audits]
        assert {(r["component"], r["personHash"]) for r in records} >= {("worker", hashed), ("sink", hashed)}
        deadline = time.monotonic() + 30
        while get(configured, f"/profiles/{person}")[0] != 404:
            assert time.monotonic() < deadline, "the erased person can still be read back"
            time.sleep(0.5)
        assert all(service.alive() for service in services), [s.log_tail() for s in services if not s.alive()]
    finally:
        for service in services:
            service.stop()
