"""Profiles, identity and segments through the real broker and the worker's HTTP API."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka import KafkaProducer

from schemas.settings import Settings
from streams.rules.timers import utc_now
from tests.integration.conftest import WorkerProcess, read_topic
from tests.integration.test_worker import event, identify, send, wait_until_processed

pytestmark = pytest.mark.integration


def get(settings: Settings, path: str) -> tuple[int, Any]:
    url = f"http://127.0.0.1:{settings.worker_web_port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        body = error.read()
        try:
            return error.code, json.loads(body)
        except ValueError:  # the worker's web server answers in plain text while it is still starting
            return error.code, {"text": body.decode(errors="replace")}


def profile_when(settings: Settings, person: str, ready: Any, timeout: float = 60) -> dict[str, Any]:
    """Poll GET /profiles/{person} until `ready(document)` holds."""
    deadline = time.monotonic() + timeout
    document: dict[str, Any] = {}
    while time.monotonic() < deadline:
        try:
            status, document = get(settings, f"/profiles/{person}")
        except OSError:
            status = 0
        if status == 200 and ready(document):
            return document
        time.sleep(0.5)
    raise AssertionError(f"profile of {person} never became ready; last: {document}")


def anonymous(name: str, anonymous_id: str, moment: Any, **properties: Any) -> bytes:
    return orjson.dumps(
        {"type": "track", "event": name, "anonymousId": anonymous_id, "messageId": str(uuid.uuid4()),
         "timestamp": moment.isoformat(), "properties": properties}
    )  # fmt: skip


def test_profile_segments_and_identity_over_http(settings: Settings, producer: KafkaProducer, tmp_path: Path) -> None:
    worker = WorkerProcess(settings, tmp_path / "worker.log").start()
    try:
        now = utc_now()
        # A visitor browses anonymously, then logs in.
        send(producer, settings, "anon-7", anonymous("Product Viewed", "anon-7", now, product_id="sku-1", price=5.0))
        send(producer, settings, "anon-7", anonymous("Product Viewed", "anon-7", now, product_id="sku-2", price=7.0))
        wait_until_processed(worker, "anon-7")
        login = orjson.loads(identify("ada", now + timedelta(seconds=1), name="Ada"))
        send(producer, settings, "ada", orjson.dumps({**login, "anonymousId": "anon-7"}))
        send(
            producer,
            settings,
            "ada",
            event("Order Completed", "ada", now + timedelta(seconds=2), order_id="o1", revenue=25),
        )
        # Events still carrying only the anonymous id follow the person.
        send(
            producer,
            settings,
            "anon-7",
            anonymous("Product Viewed", "anon-7", now + timedelta(seconds=3), product_id="sku-3"),
        )

        document = profile_when(settings, "ada", lambda d: d["profile"]["event_count"] == 5)
        profile = document["profile"]
        assert profile["name"] == "Ada" and profile["email"] == "ada@example.com"
        assert profile["order_count"] == 1 and profile["revenue"] == 25
        assert profile["recently_viewed"] == ["sku-3", "sku-2", "sku-1"]
        assert "anon-7" in profile["anonymous_ids"]
        assert document["facts"]["views_7d"] == 3
        assert set(document["segments"]) == {"active_30d"}  # ordered, so not on the priority list

        status, redirect = get(settings, "/profiles/anon-7")
        assert (status, redirect["merged_into"]) == (404, "ada")
        merges = read_topic(
            settings.kafka_bootstrap, settings.identity_topic, lambda m: any(b'"merge"' in x.value for x in m)
        )
        assert any(orjson.loads(m.value)["kind"] == "merge" for m in merges)

        send(producer, settings, "bo", identify("bo", now))
        send(producer, settings, "bo", event("Product Viewed", "bo", now, product_id="sku-9"))
        profile_when(settings, "bo", lambda d: "priority" in d["segments"])
        status, page = get(settings, "/segments/priority/members?limit=10")
        assert status == 200 and page["members"] == ["bo"]
        changes = read_topic(settings.kafka_bootstrap, settings.segments_topic, lambda m: len(m) >= 4, timeout=20)
        assert {(orjson.loads(m.value)["personId"], orjson.loads(m.value)["segment"]) for m in changes} >= {
            ("bo", "priority"), ("ada", "active_30d"),
        }  # fmt: skip
        assert get(settings, "/segments/nope/members")[0] == 404
        assert get(settings, "/profiles/nobody")[0] == 404
    finally:
        worker.stop()


def test_profile_recovered_exactly_after_a_restart(settings: Settings, producer: KafkaProducer, tmp_path: Path) -> None:
    first = WorkerProcess(settings, tmp_path / "worker-1.log").start()
    now = utc_now()
    try:
        send(producer, settings, "cy", identify("cy", now))
        for number in range(20):
            send(producer, settings, "cy", event("Product Viewed", "cy", now, product_id=f"sku-{number}"))
        profile_when(settings, "cy", lambda d: d["profile"]["event_count"] == 21)
    finally:
        first.stop()
    # A fresh data directory: the state can only come back from the changelog topic.
    moved = settings.model_copy(update={"data_dir": tmp_path / "elsewhere"})
    second = WorkerProcess(moved, tmp_path / "worker-2.log").start()
    try:
        for number in range(5):
            send(producer, settings, "cy", event("Product Viewed", "cy", now, product_id=f"sku-{number}"))
        document = profile_when(moved, "cy", lambda d: d["profile"]["event_count"] >= 26)
        time.sleep(2)
        document = profile_when(moved, "cy", lambda d: True)
        assert document["profile"]["event_count"] == 26  # every event counted once: not more, not fewer
        assert document["facts"]["views_7d"] == 25
    finally:
        second.stop()
