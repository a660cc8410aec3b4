"""`send_time: best` through the real broker and either runner: a nudge due outside the person's usual hour
waits for it, one due in it goes at once."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from pathlib import Path

import orjson
import pytest
from kafka import KafkaProducer

from schemas.settings import Settings
from streams.timers import utc_now
from tests.integration.conftest import RUNNERS, WorkerProcess, read_topic
from tests.integration.test_profiles import profile_when
from tests.integration.test_worker import event, known, send, triggers_of, wait_until_processed

pytestmark = [pytest.mark.integration, pytest.mark.parametrize("runner", RUNNERS, indirect=True)]

RULES = """\
policy: {caps: {}, quiet_hours: {}, default_timezone: UTC}
triggers:
  - name: browse_nudge
    entry: {event: Product Viewed}
    key: product_id
    channel: email
    template_id: browse_abandonment
    send_time: best
    send_window: 24h
"""


def opened_at_hour(person: str, hour_start: datetime, days_back: int) -> bytes:
    """An email open `days_back` days before `hour_start`, ten minutes into that hour (UTC)."""
    moment = hour_start - timedelta(days=days_back) + timedelta(minutes=10)
    return orjson.dumps(
        {
            "type": "track",
            "event": "Email Opened",
            "userId": person,
            "messageId": str(uuid.uuid4()),
            "timestamp": moment.isoformat(),
            "properties": {},
        }
    )


def test_a_nudge_waits_for_the_persons_usual_hour_and_goes_at_once_in_it(
    settings: Settings, producer: KafkaProducer, tmp_path: Path
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    settings = settings.model_copy(update={"rules_file": rules})
    worker = WorkerProcess(settings, tmp_path / "worker.log").start()
    try:
        now = utc_now()
        this_hour = now.replace(minute=0, second=0, microsecond=0)
        later_hour = this_hour + timedelta(hours=6)
        known(producer, settings, "now-reader", "evening-reader")
        for days_back in (1, 2, 3):
            send(producer, settings, "now-reader", opened_at_hour("now-reader", this_hour, days_back))
            send(producer, settings, "evening-reader", opened_at_hour("evening-reader", later_hour, days_back))
        wait_until_processed(worker, "evening-reader")
        viewed = utc_now()
        send(producer, settings, "now-reader", event("Product Viewed", "now-reader", viewed, product_id="sku-1"))
        send(
            producer, settings, "evening-reader", event("Product Viewed", "evening-reader", viewed, product_id="sku-1")
        )

        # The one whose opens fall in this hour gets it now; the other's waits for the start of their hour.
        document = profile_when(
            settings, "evening-reader", lambda doc: any(p["rule"] == "browse_nudge" for p in doc["pending"])
        )
        [pending] = [p for p in document["pending"] if p["rule"] == "browse_nudge"]
        assert pending["deferred"] is True
        assert datetime.fromisoformat(pending["fire_at"]) == later_hour
        messages = read_topic(settings.kafka_bootstrap, settings.triggers_topic, until=lambda _: False, timeout=10)
        assert [(t.person_id, t.rule) for t in triggers_of(messages)] == [("now-reader", "browse_nudge")]
        assert worker.alive(), worker.log()
    finally:
        worker.stop()
