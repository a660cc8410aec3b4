"""Email double opt-in, the whole loop through the real broker: an opt-in written to the events topic leaves the
person not opted in and puts a confirmation message on the triggers topic; the link the sender signs into it,
posted to the collector, opts the person in with the click's evidence; a tampered link changes nothing."""

from __future__ import annotations

import uuid
from pathlib import Path

import orjson
import pytest
import requests
from kafka import KafkaProducer

from schemas.consent import CONFIRMATION_TEMPLATE, ConsentChange
from schemas.settings import SenderSettings, Settings
from schemas.triggers import Trigger
from sinks.sender.messages import confirm_url
from streams.timers import utc_now
from tests.integration.collector.test_collector import CollectorThread
from tests.integration.collector.test_confirm import tampered
from tests.integration.conftest import RUNNERS, WorkerProcess, read_topic
from tests.integration.test_profiles import profile_when
from tests.integration.test_worker import send

pytestmark = [pytest.mark.integration, pytest.mark.parametrize("runner", RUNNERS, indirect=True)]


def subscribe(person: str, email: str) -> bytes:
    """A sign-up form's opt-in, as a producer writing Kafka directly sends it."""
    return orjson.dumps(
        {
            "type": "identify",
            "userId": person,
            "messageId": str(uuid.uuid4()),
            "timestamp": utc_now().isoformat(),
            "traits": {"email": email, "email_consent": "opted_in"},
            "context": {"consentSource": "form", "ip": "198.51.100.4"},
        }
    )


def test_an_opt_in_waits_for_the_click_on_its_link(settings: Settings, producer: KafkaProducer, tmp_path: Path) -> None:
    settings = settings.model_copy(update={"email_double_opt_in": True})
    worker = WorkerProcess(settings, tmp_path / "worker.log").start()
    try:
        send(producer, settings, "ada", subscribe("ada", "ada@example.com"))
        sent = read_topic(settings.kafka_bootstrap, settings.triggers_topic, lambda m: len(m) >= 1, timeout=90)
        (confirmation,) = [Trigger.model_validate_json(m.value) for m in sent]
        assert (confirmation.rule, confirmation.address) == (CONFIRMATION_TEMPLATE, "ada@example.com")
        waiting = profile_when(settings, "ada", lambda d: d["profile"]["email"] == "ada@example.com")
        assert "email" not in waiting["profile"]["consent"]

        with CollectorThread(settings) as collector:
            signing = settings.model_copy(update={"sender": SenderSettings(public_url=collector.url)})
            link = confirm_url(signing, confirmation, utc_now())
            assert link is not None
            base, token = link.rsplit("/", 1)
            refused = requests.post(f"{base}/{tampered(token)}", timeout=30)
            assert refused.status_code == 403, refused.text
            clicked = requests.post(link, headers={"User-Agent": "Mozilla/5.0 (loop)"}, timeout=30)
            assert clicked.status_code == 200, clicked.text

        opted_in = profile_when(settings, "ada", lambda d: d["profile"]["consent"].get("email") == "opted_in")
        assert opted_in["profile"]["consent"] == {"email": "opted_in"}
        records = read_topic(settings.kafka_bootstrap, settings.consents_topic, lambda m: len(m) >= 1, timeout=30)
        (change,) = [ConsentChange.model_validate_json(m.value) for m in records]
        assert (change.state, change.previous, change.source) == ("opted_in", None, "confirmation_link")
        assert (change.ip, change.user_agent) == ("127.0.0.1", "Mozilla/5.0 (loop)")
        assert change.trigger_id == confirmation.trigger_id
    finally:
        worker.stop()
