"""The worker against the real broker: cart triggers, cancellation, dead letters, restart."""

from __future__ import annotations

import signal
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka import KafkaAdminClient, KafkaProducer

from schemas.settings import Settings
from schemas.triggers import Trigger
from streams.timers import utc_now
from tests.integration.conftest import RUNNERS, WorkerProcess, read_topic

pytestmark = [pytest.mark.integration, pytest.mark.parametrize("runner", RUNNERS, indirect=True)]


def event(event_name: str, person: str, moment: datetime, **properties: Any) -> bytes:
    return orjson.dumps(
        {
            "type": "track",
            "event": event_name,
            "userId": person,
            "messageId": str(uuid.uuid4()),
            "timestamp": moment.isoformat(),
            "properties": properties,
        }
    )


def send(producer: KafkaProducer, settings: Settings, person: str, value: bytes) -> None:
    producer.send(settings.events_topic, key=person.encode(), value=value).get(timeout=30)


def identify(person: str, moment: datetime, **traits: Any) -> bytes:
    """A login that tells the worker who the person is and where to reach them."""
    traits = {"email": f"{person}@example.com", "phone": "+15551230000", **traits}
    return orjson.dumps(
        {
            "type": "identify",
            "userId": person,
            "messageId": str(uuid.uuid4()),
            "timestamp": moment.isoformat(),
            "traits": traits,
        }
    )


def known(producer: KafkaProducer, settings: Settings, *people: str) -> None:
    for person in people:
        send(producer, settings, person, identify(person, utc_now()))


def with_rules(settings: Settings, tmp_path: Path, delay: str, grace: str = "1s") -> Settings:
    """Settings whose rules hold only the cart reminder, with a short delay and no caps or quiet hours."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        f"timers:\n  grace: {grace}\n"
        "triggers:\n"
        "  - name: cart_abandonment\n"
        "    entry: {event: Product Added}\n"
        "    key: cart_id\n"
        f"    delay: {delay}\n"
        "    restart_on_repeat: true\n"
        "    exit: [{event: Order Completed, match: true}]\n"
        "    channel: email\n"
        "    template_id: cart_abandonment\n"
        "    context: cart\n"
        "policy: {caps: {}, quiet_hours: {}}\n"
    )
    return settings.model_copy(update={"rules_file": rules})


def triggers_of(messages: list[Any]) -> list[Trigger]:
    return [Trigger.model_validate_json(message.value) for message in messages]


def wait_until_processed(worker: WorkerProcess, person: str, timeout: float = 90) -> None:
    """Block until the worker has stored state for `person` (its record in the persons changelog)."""
    settings = worker.settings
    changelog = f"{settings.app_id}-persons-changelog"
    found = read_topic(
        settings.kafka_bootstrap,
        changelog,
        until=lambda messages: not worker.alive() or any(message.key == person.encode() for message in messages),
        timeout=timeout,
    )
    assert any(message.key == person.encode() for message in found), f"worker did not process {person}:\n{worker.log()}"


# The assignor each runner's consumer group uses: aiokafka's range assignor, or Faust's own.
GROUP_PROTOCOL = {"batched": "range", "faust": "faust"}


def group_protocol(settings: Settings, timeout: float = 60) -> str | None:
    """The assignment protocol of the workers' consumer group once it is stable."""
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap.split(","), client_id="runner-test")
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            description: dict[str, Any] = admin.describe_groups([settings.app_id])[settings.app_id]
            if description.get("group_state") == "Stable":
                return str(description.get("protocol_data"))
            time.sleep(0.5)
    finally:
        admin.close()
    return None


def test_the_worker_is_hosted_by_the_runner_its_settings_name(settings: Settings, producer: KafkaProducer) -> None:
    worker = WorkerProcess(settings, settings.data_dir / "worker.log").start()
    try:
        send(producer, settings, "warmup", event("Product Viewed", "warmup", utc_now(), product_id="sku-0"))
        wait_until_processed(worker, "warmup")
        assert group_protocol(settings) == GROUP_PROTOCOL[settings.runner], worker.log()
    finally:
        worker.stop()


@pytest.fixture
def cart_settings(settings: Settings, tmp_path: Path) -> Settings:
    return with_rules(settings, tmp_path, delay="4s")


def test_abandoned_cart_fires_once_and_a_completed_cart_never(cart_settings: Settings, producer: KafkaProducer) -> None:
    settings = cart_settings
    worker = WorkerProcess(settings, settings.data_dir / "worker.log").start()
    try:
        now = utc_now()
        send(producer, settings, "warmup", event("Product Viewed", "warmup", now, product_id="sku-0"))
        wait_until_processed(worker, "warmup")
        known(producer, settings, "abandoner", "buyer")
        now = utc_now()
        product = {"product_id": "sku-1", "name": "Trail shoes", "price": 119.0, "cart_id": "cart-a"}
        send(producer, settings, "abandoner", event("Product Added", "abandoner", now, **product))
        send(producer, settings, "buyer", event("Product Added", "buyer", now, **{**product, "cart_id": "cart-b"}))
        send(
            producer,
            settings,
            "buyer",
            event(
                "Order Completed", "buyer", now + timedelta(seconds=1), order_id="o-1", cart_id="cart-b", revenue=119
            ),
        )
        # Long enough for both deadlines (4s + 1s grace) to pass by a wide margin.
        messages = read_topic(settings.kafka_bootstrap, settings.triggers_topic, until=lambda _: False, timeout=15)
        triggers = triggers_of(messages)
        assert [(trigger.person_id, trigger.rule) for trigger in triggers] == [("abandoner", "cart_abandonment")]
        [trigger] = triggers
        assert trigger.context["cart_id"] == "cart-a"
        assert trigger.context["items"][0]["name"] == "Trail shoes"
        assert trigger.due_at == datetime.fromisoformat(now.isoformat()) + timedelta(seconds=4)
        assert worker.alive()
    finally:
        worker.stop()


def test_malformed_messages_go_to_the_dead_letter_topic_and_the_worker_keeps_going(
    cart_settings: Settings, producer: KafkaProducer
) -> None:
    settings = cart_settings
    worker = WorkerProcess(settings, settings.data_dir / "worker.log").start()
    try:
        send(producer, settings, "someone", b"{this is not json")
        send(producer, settings, "someone", orjson.dumps({"type": "track", "event": "Product Added", "userId": "x"}))
        send(
            producer,
            settings,
            "someone",
            event("Product Added", "someone", utc_now(), product_id="sku-1", price="a lot"),
        )
        known(producer, settings, "after")
        send(producer, settings, "after", event("Product Added", "after", utc_now(), product_id="sku-2"))
        letters = read_topic(
            settings.kafka_bootstrap, settings.dead_letter_topic, until=lambda messages: len(messages) >= 3, timeout=90
        )
        reasons = [orjson.loads(message.value)["reason"] for message in letters]
        assert len(reasons) == 3
        assert reasons[0].startswith("not JSON")
        assert "timestamp: Field required" in reasons[1]
        assert "price" in reasons[2]
        assert orjson.loads(letters[0].value)["value"] == "{this is not json"
        # The valid event after the bad ones is processed: its cart reminder comes out.
        triggers = read_topic(settings.kafka_bootstrap, settings.triggers_topic, until=lambda m: len(m) >= 1)
        assert [trigger.person_id for trigger in triggers_of(triggers)] == ["after"]
        assert worker.alive()
    finally:
        worker.stop()


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGKILL], ids=["graceful", "killed"])
def test_worker_restarted_mid_run_still_fires_the_pending_cart_once(
    settings: Settings, tmp_path: Path, producer: KafkaProducer, stop_signal: int
) -> None:
    settings = with_rules(settings, tmp_path, delay="12s")
    first = WorkerProcess(settings, tmp_path / "worker-1.log").start()
    try:
        known(producer, settings, "pending")
        now = utc_now()
        send(producer, settings, "pending", event("Product Added", "pending", now, product_id="sku-1", cart_id="c"))
        wait_until_processed(first, "pending")
    finally:
        first.stop(stop_signal)
    second = WorkerProcess(settings, tmp_path / "worker-2.log").start()
    try:
        messages = read_topic(settings.kafka_bootstrap, settings.triggers_topic, until=lambda m: len(m) >= 1)
        # Keep reading a while: a second copy would show up now if state or offsets were lost.
        time.sleep(4)
        messages = read_topic(settings.kafka_bootstrap, settings.triggers_topic, until=lambda _: False, timeout=3)
        triggers = triggers_of(messages)
        assert len({trigger.trigger_id for trigger in triggers}) == 1
        assert [trigger.person_id for trigger in triggers] == ["pending"]
    finally:
        second.stop()
