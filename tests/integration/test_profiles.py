"""Profiles, identity and segments through the real broker and the worker's HTTP API."""

from __future__ import annotations

import contextlib
import json
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from kafka import KafkaProducer
from msgspec.structs import replace

from schemas.rules import load_rules
from schemas.settings import Settings
from streams.broker.outbox import partition_of
from streams.rules.person import PersonState
from streams.runners.batched import BatchedRunner
from streams.state import recovery
from streams.timers import utc_now
from streams.web.server import build_api
from tests.integration.conftest import API_AUTH, RUNNERS, TEST_API_TOKEN, WorkerProcess, read_topic
from tests.integration.test_worker import event, identify, send, wait_until_processed

pytestmark = pytest.mark.integration


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # a 3xx comes back as an HTTPError: `get` follows it itself, token and all


NO_REDIRECTS = urllib.request.build_opener(_NoRedirects)


def get(settings: Settings, path: str, token: str | None = TEST_API_TOKEN) -> tuple[int, Any]:
    """GET from the worker's API with a bearer token. A redirect to the worker that holds the person is
    followed here, sending the token again, because HTTP clients drop it on a redirect to another port."""
    url = f"http://127.0.0.1:{settings.worker_web_port}{path}"
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    for _ in range(3):
        try:
            with NO_REDIRECTS.open(urllib.request.Request(url, headers=headers), timeout=10) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            if error.code == 307:
                url = error.headers["Location"]
                continue
            body = error.read()
            try:
                return error.code, json.loads(body)
            except ValueError:  # the worker's web server answers in plain text while it is still starting
                return error.code, {"text": body.decode(errors="replace")}
    raise AssertionError(f"redirected more than twice asking for {path}")


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
        assert get(settings, "/profiles/ada", token=None)[0] == 401
        assert get(settings, "/profiles/ada", token="wrong")[0] == 401
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
        assert get(settings, "/segments/priority/members", token=None)[0] == 401
        assert get(settings, "/segments/priority/members", token="wrong")[0] == 401
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


PERSON_ENDPOINTS = ["/profiles/ada", "/segments/active_30d/members"]
REFUSED_HEADERS: list[dict[str, str]] = [
    {},
    {"Authorization": "Bearer not-the-token"},
    {"Authorization": f"Bearer {TEST_API_TOKEN}x"},
    {"Authorization": f"Basic {TEST_API_TOKEN}"},
    {"Authorization": "Bearer "},
]


@asynccontextmanager
async def worker_api(
    settings: Settings, listen_host: str, held: set[int] | None = None
) -> AsyncIterator[TestClient[Any, Any]]:
    """The worker's API in this process, over a worker holding `held` partitions (default all) and a state
    for ada, as though it listened on `listen_host` (the test server itself is on loopback)."""
    configured = settings.model_copy(update={"worker_web_host": listen_host, "table_store": "memory"})
    worker = BatchedRunner(configured, load_rules(None))
    partitions = set(range(configured.partitions)) if held is None else held
    await recovery.assign(worker.store.persons, partitions, configured)
    worker.processor.owned = partitions
    key = b"ada"
    if partition_of(key, configured.partitions) in partitions:
        state = replace(PersonState.new("ada"), segments={"active_30d": utc_now()})
        worker.store.persons.put(partition_of(key, configured.partitions), key, state.to_json())
    async with TestClient(TestServer(build_api(worker))) as client:
        yield client


@pytest.mark.parametrize("listen_host", ["127.0.0.1", "192.0.2.10"], ids=["loopback", "other-interface"])
async def test_every_endpoint_wants_a_valid_bearer_token_and_metrics_only_off_loopback(
    settings: Settings, listen_host: str
) -> None:
    loopback = listen_host == "127.0.0.1"
    async with worker_api(settings, listen_host) as client:
        guarded = [*PERSON_ENDPOINTS, *([] if loopback else ["/metrics"])]
        for path in guarded:
            for headers in REFUSED_HEADERS:
                response = await client.get(path, headers=headers)
                assert response.status == 401, (path, headers)
                assert response.headers["WWW-Authenticate"].startswith("Bearer")
                assert "ada" not in await response.text()
            assert (await client.get(path, headers=API_AUTH)).status == 200, path
        profile = await client.get("/profiles/ada", headers=API_AUTH)
        assert (await profile.json())["profile"]["person_id"] == "ada"
        members = await client.get("/segments/active_30d/members", headers=API_AUTH)
        assert (await members.json())["members"] == ["ada"]
        # Prometheus on the same host scrapes a loopback worker without a token; elsewhere it sends one.
        assert (await client.get("/metrics")).status == (200 if loopback else 401)
        assert (await client.get("/health")).status == 200  # the probes' path, naming nobody


async def test_a_person_held_elsewhere_is_not_even_located_without_the_token(settings: Settings) -> None:
    ada = partition_of(b"ada", settings.partitions)
    async with worker_api(settings, "127.0.0.1", held=set(range(settings.partitions)) - {ada}) as client:
        for headers in REFUSED_HEADERS:
            response = await client.get("/profiles/ada", headers=headers, allow_redirects=False)
            assert response.status == 401 and "Location" not in response.headers
        # With the token the worker asks the group who holds ada: nobody in this test's group, so 503.
        response = await client.get("/profiles/ada", headers=API_AUTH, allow_redirects=False)
        assert response.status == 503 and response.headers["Retry-After"] == "1"


@pytest.mark.parametrize("runner", RUNNERS, indirect=True)
def test_a_worker_just_started_answers_a_profile_request_with_503_or_the_answer_never_500(
    settings: Settings, tmp_path: Path
) -> None:
    # Faust's table_route raised a TypeError (a 500) while its producer did not know the table's topic yet.
    worker = WorkerProcess(settings, tmp_path / "worker.log").start()
    try:
        seen: set[int] = set()
        deadline = time.monotonic() + 60
        while 404 not in seen and time.monotonic() < deadline:
            with contextlib.suppress(OSError):  # not listening yet
                seen.add(get(settings, "/profiles/nobody")[0])
            time.sleep(0.02)
        assert seen <= {503, 404}, seen
        assert 404 in seen
    finally:
        worker.stop()
