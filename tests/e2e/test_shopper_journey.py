"""A shopper's whole journey through the HTTP APIs, every process started as an operator starts it:
the collector takes the tracker's calls, the worker builds the profile and fires the cart reminder,
the sink puts it all in ClickHouse, and an erasure request removes the person everywhere."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from schemas.settings import Settings
from streams.timers import utc_now
from tests.integration.conftest import API_AUTH, REPO, RUNNERS, free_port, read_topic, settings_environment
from tests.integration.test_worker import with_rules

pytestmark = [pytest.mark.integration, pytest.mark.parametrize("runner", RUNNERS, indirect=True)]

AUTH = "Basic " + base64.b64encode(b"e2e-key:").decode()


def call(method: str, url: str, body: Any = None, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    data = orjson.dumps(body) if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status, body = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, body = error.code, error.read()
    except OSError:
        return 0, None  # not listening yet
    try:
        return status, json.loads(body or b"null")
    except ValueError:
        return status, body.decode(errors="replace")


def eventually(check: Callable[[], Any], what: str, within: float = 60) -> Any:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def pipeline(settings: Settings, tmp_path: Path) -> Iterator[tuple[Settings, dict[str, int]]]:
    configured = with_rules(settings, tmp_path, delay="3s")  # the cart reminder alone, 3 s after the last add
    ports = {"collector": free_port(), "sink": free_port()}
    environment = {
        **settings_environment(configured),
        "NUDGEFLOW_COLLECTOR_PORT": str(ports["collector"]),
        "NUDGEFLOW_COLLECTOR_WRITE_KEYS": '{"e2e-key": "web"}',
        "NUDGEFLOW_SINK_WEB_PORT": str(ports["sink"]),
        "NUDGEFLOW_SINK_BATCH_SECONDS": "0.3",
        "NUDGEFLOW_CLICKHOUSE_DATABASE": "e2e",
    }
    processes = []
    for command in ("collector", "worker", "sink"):
        log = (tmp_path / f"{command}.log").open("wb")
        processes.append(
            subprocess.Popen(
                [sys.executable, "-m", "streams.cli", command], env=environment, cwd=REPO, stdout=log,
                stderr=subprocess.STDOUT,
            )
        )  # fmt: skip
    try:
        yield configured, ports
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def test_a_shopper_abandons_a_cart_gets_one_reminder_and_is_then_forgotten(
    pipeline: tuple[Settings, dict[str, int]],
) -> None:
    settings, ports = pipeline
    collector = f"http://127.0.0.1:{ports['collector']}"
    worker = f"http://127.0.0.1:{settings.worker_web_port}"
    sink = f"http://127.0.0.1:{ports['sink']}"
    eventually(lambda: call("GET", f"{collector}/openapi.json")[0] == 200, "the collector")
    eventually(lambda: call("GET", f"{sink}/metrics")[0] == 200, "the sink")

    now = utc_now().isoformat()
    anonymous_view = {"type": "track", "event": "Product Viewed", "anonymousId": "a-zoe", "timestamp": now,
                      "properties": {"product_id": "sku-1", "name": "Trail shoes", "price": 119.0}}  # fmt: skip
    assert call("POST", f"{collector}/v1/track", anonymous_view, {"Authorization": AUTH})[0] == 200
    login = {"userId": "zoe", "anonymousId": "a-zoe", "timestamp": now, "context": {"consentSource": "form"},
             "traits": {"email": "Zoe@Example.com", "phone": "(415) 555-0100", "name": "Zoe",
                        "email_consent": "opted_in"}}  # fmt: skip
    form = {"Authorization": AUTH, "User-Agent": "ZoeShop/1.0"}
    assert call("POST", f"{collector}/v1/identify", login, form) == (200, {"success": True})
    batch = {"batch": [
        {"type": "track", "event": "Product Added", "userId": "zoe", "timestamp": now,
         "properties": {"product_id": "sku-1", "name": "Trail shoes", "price": 119.0, "cart_id": "cz"}},
        {"type": "track", "event": "Product Added", "userId": "zoe", "timestamp": now,
         "properties": {"product_id": "sku-2", "price": "free"}},
    ]}  # fmt: skip
    status, answer = call("POST", f"{collector}/v1/batch", batch, {"Authorization": AUTH})
    assert status == 200 and answer["accepted"] == 1
    assert answer["rejected"][0]["index"] == 1 and "price" in answer["rejected"][0]["reason"]

    def profile() -> Any:
        status, document = call("GET", f"{worker}/profiles/zoe", headers=API_AUTH)
        return document if status == 200 and document["profile"]["event_count"] >= 3 else None

    document = eventually(profile, "zoe's profile with her anonymous view merged in")
    assert call("GET", f"{worker}/profiles/zoe")[0] == 401  # personal data only with the API token
    assert document["profile"]["phone"] == "+14155550100"  # cleaned at the door
    assert document["profile"]["recently_viewed"] == ["sku-1"]
    assert document["carts"]["cz"]["value"] == 119.0

    triggers = read_topic(settings.kafka_bootstrap, settings.triggers_topic, lambda found: len(found) >= 1)
    reminder = orjson.loads(triggers[0].value)
    assert (reminder["personId"], reminder["rule"]) == ("zoe", "cart_abandonment")
    assert reminder["address"] == "Zoe@example.com"  # the domain is lower-cased at the door, not the mailbox

    def exported() -> Any:
        status, document = call("GET", f"{sink}/api/people/zoe/export", headers=API_AUTH)
        tables = document.get("tables", {}) if status == 200 else {}
        return document if tables.get("triggers") and tables.get("consent_changes") else None

    export = eventually(exported, "zoe's rows in ClickHouse")
    assert [row["trigger_id"] for row in export["tables"]["triggers"]] == [reminder["triggerId"]]
    assert "zoe@example.com" not in json.dumps(export).lower()  # contacts are stored hashed
    # Proof of her consent: the form she opted in through, from where, with which browser.
    (consent,) = export["tables"]["consent_changes"]
    assert (consent["channel"], consent["state"], consent["source"]) == ("email", "opted_in", "form")
    assert (consent["ip"], consent["user_agent"]) == ("127.0.0.1", "ZoeShop/1.0")

    erase = subprocess.run(
        [sys.executable, "-m", "streams.cli", "erase", "zoe"], env=settings_environment(settings), cwd=REPO,
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert erase.returncode == 0, erase.stderr
    eventually(lambda: call("GET", f"{worker}/profiles/zoe", headers=API_AUTH)[0] == 404, "the worker to forget zoe")
    eventually(
        lambda: call("GET", f"{sink}/api/people/zoe/export", headers=API_AUTH)[1].get("rows") == 0,
        "ClickHouse to forget zoe",
    )
