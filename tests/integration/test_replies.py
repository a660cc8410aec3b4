"""SMS replies understood, on the real broker under both runners: a reply read as negative enters
`replied_negatively_recently` and pauses the promotion that would have gone to its sender, a positive one
does not; a reply event with a bogus label or a body over the limit is dead-lettered and changes nothing.

The replies come in as Twilio sends them: signed posts to the collector's inbound webhook naming only the
sender's number. The hostile ones are produced to the events topic directly, as a producer past the
collector could: the collector labels every reply itself and refuses an over-long body before Kafka.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaProducer
from pydantic import SecretStr

from schemas.privacy import contact_person_id
from schemas.segments import SegmentChange
from schemas.settings import Settings
from schemas.triggers import DeadLetter, Suppression
from sinks.predictions.publish import publish_scores
from streams.timers import utc_now
from tests.integration.collector.test_collector import CollectorThread
from tests.integration.conftest import RUNNERS, TEST_HASH_SECRET, WorkerProcess, read_topic
from tests.integration.test_contacts import TWILIO_TOKEN, post_inbound
from tests.integration.test_profiles import profile_when
from tests.integration.test_scores import score
from tests.integration.test_worker import event, identify, send, triggers_of, wait_until_processed

pytestmark = [pytest.mark.integration, pytest.mark.parametrize("runner", RUNNERS, indirect=True)]

SEGMENT = "replied_negatively_recently"
PROMOTION = "high_value_win_back"  # default rules: fires on entering high_value_at_risk, paused for SEGMENT
# Each person's number and the reply they send from it.
REPLIES = {
    "ada": ("+15551230001", "Please stop texting me, not interested"),
    "lin": ("+15551230002", "别再发了"),
    "bo": ("+15551230003", "Thanks, love it!"),
}


def test_a_negative_reply_pauses_the_promotion_and_bad_reply_events_are_dead_lettered(
    settings: Settings, producer: KafkaProducer, tmp_path: Path
) -> None:
    settings = settings.model_copy(update={"twilio_auth_token": SecretStr(TWILIO_TOKEN)})
    worker = WorkerProcess(settings, tmp_path / "worker.log").start()
    try:
        for person, (phone, _) in REPLIES.items():
            send(producer, settings, person, identify(person, utc_now(), phone=phone))
        for phone, _ in REPLIES.values():
            # The number's contact knows its person: a reply naming only the number reaches them.
            wait_until_processed(worker, contact_person_id("phone", phone, TEST_HASH_SECRET.encode()))

        with CollectorThread(settings) as collector:
            for phone, body in REPLIES.values():
                answered = post_inbound(collector, body, phone)
                assert answered.status_code == 200, answered.text

        for person in ("ada", "lin"):
            document = profile_when(settings, person, lambda d: SEGMENT in d["segments"])
            assert document["facts"]["last_reply_sentiment"] == "negative"
            assert document["facts"]["days_since_negative_reply"] < 1
        document = profile_when(settings, "bo", lambda d: d["facts"]["last_reply_sentiment"] == "positive")
        assert SEGMENT not in document["segments"] and document["facts"]["days_since_negative_reply"] is None
        changes = read_topic(
            settings.kafka_bootstrap,
            settings.segments_topic,
            lambda m: {"ada", "lin"} <= {c.person_id for c in map(_change, m) if c.segment == SEGMENT},
        )
        entered = [(c.person_id, c.change) for c in map(_change, changes) if c.segment == SEGMENT]
        assert sorted(entered) == [("ada", "enter"), ("lin", "enter")]

        # Straight to the events topic, each for bo and saying negative: applied, either would pause bo.
        moment = utc_now()
        bogus = event("SMS Replied", "bo", moment, body="Stop", sentiment="furious", sentimentScore=-0.9)
        too_long = "x" * (settings.limits.string_length + 1)
        over = event("SMS Replied", "bo", moment, body=too_long, sentiment="negative", sentimentScore=-0.9)
        send(producer, settings, "bo", bogus)
        send(producer, settings, "bo", over)
        letters = read_topic(settings.kafka_bootstrap, settings.dead_letter_topic, lambda m: len(m) >= 2)
        reasons = [DeadLetter.model_validate_json(m.value).reason for m in letters]
        assert len(reasons) == 2, reasons
        assert "sentiment: Input should be 'positive', 'neutral' or 'negative'" in reasons[0]
        limit = settings.limits.string_length
        assert reasons[1] == f"over a limit: properties.body: {limit + 1} characters; at most {limit}"
        assert worker.alive(), worker.log()

        # The same scores for all three: the promotion is due to each, and goes only to bo.
        publish_scores(settings, [score(person, churn=0.8) for person in REPLIES])
        suppressed = read_topic(
            settings.kafka_bootstrap,
            settings.suppressed_topic,
            lambda m: len([s for s in map(_suppression, m) if s.trigger.rule == PROMOTION]) >= 2,
        )
        sent = read_topic(
            settings.kafka_bootstrap,
            settings.triggers_topic,
            lambda m: any(t.rule == PROMOTION for t in triggers_of(m)),
        )
        paused = sorted(
            (s.trigger.person_id, s.reason.value, s.detail) for s in map(_suppression, suppressed)
            if s.trigger.rule == PROMOTION
        )  # fmt: skip
        assert paused == [
            (person, "paused", f"{PROMOTION} paused while in segment {SEGMENT}") for person in ("ada", "lin")
        ]
        assert [t.person_id for t in triggers_of(sent) if t.rule == PROMOTION] == ["bo"]
        document = profile_when(settings, "bo", lambda d: "high_value_at_risk" in d["segments"])
        assert document["facts"]["last_reply_sentiment"] == "positive" and SEGMENT not in document["segments"]
        assert worker.alive(), worker.log()
    finally:
        worker.stop()


def _change(message: Any) -> SegmentChange:
    return SegmentChange.model_validate_json(message.value)


def _suppression(message: Any) -> Suppression:
    return Suppression.model_validate_json(message.value)
