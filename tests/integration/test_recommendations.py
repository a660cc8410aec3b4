"""Recommendations read from the recommendations topic on the real broker, under both runners: an abandoned
cart's nudge carries the products recommended for its items less what the person bought, and hostile records
are dead-lettered with their reason while the runner keeps the product's last good record and goes on."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from kafka import KafkaProducer

from schemas.recommendations import Recommendation
from schemas.settings import Settings
from schemas.triggers import DeadLetter
from sinks.predictions.publish import publish_recommendations
from streams.timers import utc_now
from tests.integration.conftest import RUNNERS, WorkerProcess, read_topic
from tests.integration.test_worker import event, known, send, triggers_of, wait_until_processed, with_rules

pytestmark = [pytest.mark.integration, pytest.mark.parametrize("runner", RUNNERS, indirect=True)]


def hostile(product: str, **changes: object) -> bytes:
    document = {"productId": product, "modelVersion": "test", "computedAt": utc_now().isoformat(), **changes}
    return orjson.dumps(document)


def test_an_abandoned_cart_carries_what_is_recommended_for_it_less_what_was_bought_and_bad_records_are_dead_letters(
    settings: Settings, producer: KafkaProducer, tmp_path: Path
) -> None:
    settings = with_rules(settings, tmp_path, delay="4s")
    worker = WorkerProcess(settings, tmp_path / "worker.log").start()
    try:
        send(producer, settings, "warmup", event("Product Viewed", "warmup", utc_now(), product_id="sku-0"))
        wait_until_processed(worker, "warmup")
        good = Recommendation(
            product_id="sku-1", model_version="test", computed_at=utc_now(), recommended=["sku-2", "sku-3", "sku-4"]
        )
        assert publish_recommendations(settings, [good], []) == 1  # as `nudgeflow models train` does
        # After it, in its partition (the same key): what the worker must refuse, keeping the record before.
        topic = settings.recommendations_topic
        for value in (
            b"{not json",
            hostile("sku-1", recommended=[f"sku-{n}" for n in range(100, 111)]),  # eleven: over TOP_K
            hostile("sku-1", recommended=["x" * 300]),  # an id over limits.id_length
        ):
            producer.send(topic, key=b"sku-1", value=value).get(30)
        letters = read_topic(
            settings.kafka_bootstrap,
            settings.dead_letter_topic,
            lambda m: sum(orjson.loads(x.value)["topic"] == topic for x in m) >= 3 or not worker.alive(),
        )
        reasons = [DeadLetter.model_validate_json(x.value).reason for x in letters]
        assert len(reasons) == 3, worker.log()
        assert reasons[0].startswith("not JSON") and reasons[1].startswith("invalid recommendation")
        assert reasons[2].startswith("over a limit: recommended[0]")

        known(producer, settings, "ada")
        now = utc_now()
        bought = {"order_id": "o-1", "revenue": 5.0, "products": [{"product_id": "sku-3"}]}
        send(producer, settings, "ada", event("Order Completed", "ada", now, **bought))
        product = {"product_id": "sku-1", "name": "Trail shoes", "price": 119.0, "cart_id": "cart-a"}
        send(producer, settings, "ada", event("Product Added", "ada", now, **product))
        messages = read_topic(
            settings.kafka_bootstrap, settings.triggers_topic, lambda m: len(m) >= 1 or not worker.alive()
        )
        [reminder] = triggers_of(messages)
        assert (reminder.person_id, reminder.rule) == ("ada", "cart_abandonment"), worker.log()
        assert reminder.context["recommended"] == ["sku-2", "sku-4"]  # sku-3 was bought
        assert worker.alive()
    finally:
        worker.stop()
