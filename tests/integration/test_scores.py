"""Scores joined from the scores topic on the real broker, under both runners: a segment entered and its rule
fired, a malformed record dead-lettered while the next applies, a tombstone clearing the facts."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from kafka import KafkaProducer

from schemas.scores import Score
from schemas.settings import Settings
from schemas.triggers import DeadLetter
from sinks.predictions.publish import publish_scores
from streams.timers import utc_now
from tests.integration.conftest import RUNNERS, WorkerProcess, read_topic
from tests.integration.test_profiles import profile_when
from tests.integration.test_worker import identify, send, triggers_of, wait_until_processed

pytestmark = [pytest.mark.integration, pytest.mark.parametrize("runner", RUNNERS, indirect=True)]


def score(person: str, churn: float, clv: float = 450.0) -> Score:
    return Score(
        person_id=person, model_version="test", scored_at=utc_now(), horizon_days=90, p_alive=round(1 - churn, 6),
        churn_risk=churn, expected_orders=2.0, predicted_clv=clv, purchase_propensity=0.3,
    )  # fmt: skip


def test_scores_enter_a_segment_fire_the_win_back_and_a_tombstone_clears_them(
    settings: Settings, producer: KafkaProducer, tmp_path: Path
) -> None:
    worker = WorkerProcess(settings, tmp_path / "worker.log").start()
    try:
        send(producer, settings, "ada", identify("ada", utc_now()))
        wait_until_processed(worker, "ada")
        publish_scores(settings, [score("ada", churn=0.8)])  # as `nudgeflow models train` does
        document = profile_when(settings, "ada", lambda d: "high_value_at_risk" in d["segments"])
        assert (document["facts"]["churn_risk"], document["facts"]["predicted_clv"]) == (0.8, 450.0)
        messages = read_topic(
            settings.kafka_bootstrap,
            settings.triggers_topic,
            lambda m: any(t.rule == "high_value_win_back" for t in triggers_of(m)),
        )
        [win_back] = [t for t in triggers_of(messages) if t.rule == "high_value_win_back"]
        assert (win_back.person_id, win_back.channel.value) == ("ada", "email")

        producer.send(settings.scores_topic, key=b"ada", value=b'{"personId": "ada", "churnRisk": 2}').get(30)
        publish_scores(settings, [score("ada", churn=0.9)])
        letters = read_topic(
            settings.kafka_bootstrap,
            settings.dead_letter_topic,
            lambda m: any(orjson.loads(x.value)["topic"] == settings.scores_topic for x in m),
        )
        [letter] = [DeadLetter.model_validate_json(x.value) for x in letters]
        assert letter.topic == settings.scores_topic and letter.reason.startswith("invalid score")
        profile_when(settings, "ada", lambda d: d["facts"]["churn_risk"] == 0.9)

        producer.send(settings.scores_topic, key=b"ada", value=None).get(30)
        document = profile_when(settings, "ada", lambda d: d["facts"]["churn_risk"] is None)
        assert document["scores"] is None and document["facts"]["predicted_clv"] is None
        assert "high_value_at_risk" not in document["segments"]
    finally:
        worker.stop()
