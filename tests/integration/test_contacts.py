"""Contacts belong to people: an opt-out that names only a phone number reaches the person who has it.

End to end through the real broker: the collector receives a signed Twilio inbound "STOP" that carries
only `From`; the worker's contact index hands it to the person with that number, whose next SMS is then
suppressed for consent instead of sent.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import orjson
import pytest
import requests
from kafka import KafkaProducer
from pydantic import SecretStr

from schemas.privacy import contact_person_id
from schemas.settings import Settings
from schemas.triggers import Suppression, Trigger
from streams.collector import twilio
from streams.timers import utc_now
from tests.integration.collector.test_collector import CollectorThread
from tests.integration.conftest import RUNNERS, TEST_HASH_SECRET, WorkerProcess, read_topic
from tests.integration.test_profiles import profile_when
from tests.integration.test_worker import event, send

pytestmark = [pytest.mark.integration, pytest.mark.parametrize("runner", RUNNERS, indirect=True)]

TWILIO_TOKEN = "twilio-test-token"


def sms_rules(settings: Settings, tmp_path: Path) -> Settings:
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "timers:\n  grace: 1s\n"
        "triggers:\n"
        "  - name: sms_cart\n"
        "    entry: {event: Product Added}\n"
        "    key: cart_id\n"
        "    delay: 3s\n"
        "    reentry: every_time\n"
        "    channel: sms\n"
        "    template_id: sms_cart\n"
        "    context: cart\n"
        "policy: {caps: {}, quiet_hours: {}}\n"
    )
    return settings.model_copy(update={"rules_file": rules, "twilio_auth_token": SecretStr(TWILIO_TOKEN)})


def identify(person: str, phone: str) -> bytes:
    return orjson.dumps(
        {
            "type": "identify",
            "userId": person,
            "messageId": str(uuid.uuid4()),
            "timestamp": utc_now().isoformat(),
            "traits": {"phone": phone, "sms_consent": "opted_in"},
        }
    )


def post_inbound(collector: CollectorThread, body: str, sender: str) -> requests.Response:
    url = f"{collector.url}/webhooks/twilio/inbound"
    form = {"MessageSid": f"SM{uuid.uuid4().hex}", "From": sender, "To": "+15550001111", "Body": body}
    signature = twilio.expected_signature(TWILIO_TOKEN, url, sorted(form.items()))
    return requests.post(url, data=form, headers={twilio.SIGNATURE_HEADER: signature}, timeout=30)


def test_a_stop_naming_only_the_number_suppresses_that_persons_next_sms(
    settings: Settings, producer: KafkaProducer, tmp_path: Path
) -> None:
    settings = sms_rules(settings, tmp_path)
    worker = WorkerProcess(settings, tmp_path / "worker.log").start()
    try:
        send(producer, settings, "zoe", identify("zoe", "+15551239999"))
        send(producer, settings, "max", identify("max", "+15557770000"))  # another number: unaffected
        profile_when(settings, "zoe", lambda d: d["profile"]["consent"].get("sms") == "opted_in")
        profile_when(settings, "max", lambda d: d["profile"]["consent"].get("sms") == "opted_in")

        with CollectorThread(settings) as collector:
            # The number as a phone writes it, not as the profile keeps it: the index matches either way.
            answered = post_inbound(collector, " Stop ", "+1 555 123 9999")
            assert answered.status_code == 200, answered.text

        opted_out = profile_when(settings, "zoe", lambda d: d["profile"]["consent"].get("sms") == "opted_out")
        assert opted_out["profile"]["phone"] == "+15551239999"
        contact = contact_person_id("phone", "+15551239999", TEST_HASH_SECRET.encode())
        # Nobody is keyed by the number itself, and the contact is no profile of its own to nudge.
        events = read_topic(settings.kafka_bootstrap, settings.events_topic, lambda _: False, timeout=3)
        assert all(message.key != b"+15551239999" for message in events)
        assert any(message.key == contact.encode() for message in events)

        for person in ("zoe", "max"):
            send(producer, settings, person, event("Product Added", person, utc_now(), product_id="p", cart_id="c"))
        suppressed = read_topic(settings.kafka_bootstrap, settings.suppressed_topic, lambda m: len(m) >= 1, timeout=60)
        sent = read_topic(settings.kafka_bootstrap, settings.triggers_topic, lambda m: len(m) >= 1, timeout=30)
        time.sleep(2)
        suppressions = [Suppression.model_validate_json(m.value) for m in suppressed]
        triggers = [Trigger.model_validate_json(m.value) for m in sent]
        assert [(s.trigger.person_id, s.reason.value) for s in suppressions] == [("zoe", "opted_out")]
        assert [t.person_id for t in triggers] == ["max"]
    finally:
        worker.stop()
