"""Erasure in the worker, and its metrics, through the real broker."""

from __future__ import annotations

import time
import urllib.request
import uuid
from pathlib import Path

import orjson
import pytest
from kafka import KafkaProducer

from schemas.encoding import to_plain
from schemas.privacy import ErasureRequest, person_hash
from schemas.settings import Settings
from streams.rules.person import PersonState
from streams.timers import utc_now
from tests.integration.conftest import RUNNERS, TEST_HASH_SECRET, WorkerProcess, read_topic
from tests.integration.test_profiles import get, profile_when
from tests.integration.test_worker import event, identify, send

pytestmark = [pytest.mark.integration, pytest.mark.parametrize("runner", RUNNERS, indirect=True)]
KEY = TEST_HASH_SECRET.encode()
# More than a profile lists (limits.anonymous_ids): every one of them must be erased, not the last 20.
ANONYMOUS_IDS = [f"anon-eve-{n}" for n in range(25)]


def test_erased_person_cannot_be_read_back_and_late_events_are_dropped(
    settings: Settings, producer: KafkaProducer, tmp_path: Path
) -> None:
    worker = WorkerProcess(settings, tmp_path / "worker.log").start()
    try:
        now = utc_now()
        login = orjson.loads(identify("eve", now, name="Eve"))
        for anonymous_id in ["anon-eve", *ANONYMOUS_IDS]:
            send(
                producer,
                settings,
                "eve",
                orjson.dumps({**login, "anonymousId": anonymous_id, "messageId": anonymous_id}),
            )
        send(producer, settings, "eve", event("Product Added", "eve", now, product_id="sku-1", cart_id="c"))
        send(producer, settings, "kim", identify("kim", now))
        merged = len(ANONYMOUS_IDS) + 1
        profile_when(settings, "eve", lambda d: d["profile"]["event_count"] == merged + 1)
        deadline = time.monotonic() + 60
        while any(get(settings, f"/profiles/{a}")[1].get("merged_into") != "eve" for a in ANONYMOUS_IDS):
            assert time.monotonic() < deadline, "not every anonymous id was handed over"
            time.sleep(0.5)

        request = ErasureRequest(request_id=str(uuid.uuid4()), person_id="eve", requested_at=utc_now())
        producer.send(settings.privacy_topic, key=b"eve", value=request.to_json()).get(timeout=30)
        # One record for the person and one for each anonymous id they had absorbed, however many.
        audits = read_topic(settings.kafka_bootstrap, settings.audit_topic, lambda m: len(m) >= merged + 1)
        records = [orjson.loads(message.value) for message in audits]
        expected = {person_hash(person, KEY) for person in ["eve", "anon-eve", *ANONYMOUS_IDS]}
        assert {r["personHash"] for r in records} == expected
        assert {r["requestId"] for r in records} == {request.request_id}
        assert all(b"eve" not in message.value.replace(person_hash("eve", KEY).encode(), b"") for message in audits)
        # The compacted profiles topic ends with a tombstone for the person.
        snapshots = read_topic(settings.kafka_bootstrap, settings.profiles_topic, lambda _: False, 5)
        assert [m.value for m in snapshots if m.key == b"eve"][-1] is None

        send(producer, settings, "eve", event("Product Viewed", "eve", utc_now(), product_id="sku-2"))
        # Identity messages from before the erasure, arriving late, bring nobody back either.
        link = {"kind": "link", "anonymous_id": "anon-eve", "person_id": "eve"}
        merge = {**link, "kind": "merge", "state": to_plain(PersonState.new("anon-eve"))}
        producer.send(settings.identity_topic, key=b"anon-eve", value=orjson.dumps(link)).get(timeout=30)
        producer.send(settings.identity_topic, key=b"eve", value=orjson.dumps(merge)).get(timeout=30)
        time.sleep(3)
        assert get(settings, "/profiles/eve")[0] == 404
        assert get(settings, "/profiles/anon-eve")[0] == 404
        assert all(get(settings, f"/profiles/{anonymous_id}")[0] == 404 for anonymous_id in ANONYMOUS_IDS)
        assert get(settings, "/profiles/kim")[0] == 200
        changelog = read_topic(settings.kafka_bootstrap, f"{settings.app_id}-persons-changelog", lambda _: False, 5)
        latest = {message.key: message.value for message in changelog}
        assert latest[b"eve"] is None  # a tombstone: compaction removes the person from the log
        # No cart reminder for an erased person, ever.
        triggers = read_topic(settings.kafka_bootstrap, settings.triggers_topic, lambda _: False, timeout=3)
        assert all(orjson.loads(m.value)["personId"] != "eve" for m in triggers)

        with urllib.request.urlopen(f"http://127.0.0.1:{settings.worker_web_port}/metrics", timeout=10) as response:
            exposition = response.read().decode()
        assert 'nudgeflow_events_total{event="Product Added",type="track"} 1.0' in exposition
        assert "nudgeflow_erased_events_dropped_total 1.0" in exposition
    finally:
        worker.stop()
